from __future__ import annotations


import pytest
import timm
import torch
from PIL import Image

from transferlab.backbones import create_backbone, list_backbones
from transferlab.errors import PretrainedWeightsUnavailable, TransferlabError
from transferlab.transforms import build_transforms
from transferlab.weights import load_packaged_lite, map_in_order


@pytest.mark.parametrize(
    "name",
    ["small_cnn", "efficientnet_lite0", "resnet18", "vgg16_bn", "efficientnet_b0", "mobilenet_v3_large", "timm/resnet18"],
)
def test_every_family_honours_the_backbone_contract(name):
    backbone = create_backbone(name, pretrained=False).eval()
    assert len(backbone.blocks) >= 4
    in_blocks = {id(p) for block in backbone.blocks for p in block.parameters()}
    assert in_blocks == {id(p) for p in backbone.parameters()}, "blocks cover every parameter exactly"
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, backbone.num_features)
    assert backbone.data_config.input_size in (128, 224)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(TransferlabError) as error:
        create_backbone("resnet19")
    message = str(error.value)
    assert "Unknown model 'resnet19'" in message
    for valid in ("resnet18", "efficientnet_lite0", "small_cnn", "vgg16_bn"):
        assert valid in message
    assert set(list_backbones()) >= {"resnet18", "resnet34", "resnet50", "efficientnet_lite1", "efficientnet_lite2"}


def test_packaged_efficientnet_lite0_weights_are_real_imagenet_weights():
    skimage_data = pytest.importorskip("skimage.data")
    model = timm.create_model("efficientnet_lite0", pretrained=False)  # keeps the 1000-class head
    load_packaged_lite("efficientnet_lite0", model)
    model.eval()
    transform = build_transforms(create_backbone("efficientnet_lite0", pretrained=False).data_config, train=False)
    with torch.no_grad():
        for photo, imagenet_class in (("chelsea", 285), ("coffee", 967)):
            image = Image.fromarray(getattr(skimage_data, photo)())
            assert model(transform(image)[None]).argmax().item() == imagenet_class, photo


def test_packaged_weights_load_into_the_backbone_exactly():
    pretrained = create_backbone("efficientnet_lite0", pretrained=True)
    random = create_backbone("efficientnet_lite0", pretrained=False)
    stem_p, stem_r = pretrained.features.conv_stem.weight, random.features.conv_stem.weight
    assert not torch.equal(stem_p, stem_r)
    bn = pretrained.features.bn1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)), "pretrained BN statistics"


def test_mapping_checks_every_shape():
    target = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(TransferlabError, match=r"does not fit '0.weight'"):
        map_in_order({"w": torch.zeros(3, 5), "b": torch.zeros(3)}, target, "test")
    with pytest.raises(TransferlabError, match="1 tensors in the file, 2 in the model"):
        map_in_order({"w": torch.zeros(3, 4)}, target, "test")


def test_torchvision_weights_offline_error_names_file_url_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens there: offline, at once
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        create_backbone("resnet18", pretrained=True, weights="IMAGENET1K_V1")
    message = str(error.value)
    assert "resnet18-f37072fd.pth" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert not list((tmp_path / "hub" / "checkpoints").glob("*.pth")), "no half file left behind"


def test_torchvision_weights_come_from_the_torch_home_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    cached = torchvision.models.resnet18()
    target = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    torch.save(cached.state_dict(), target)
    backbone = create_backbone("resnet18", pretrained=True, weights="IMAGENET1K_V1")
    assert torch.equal(backbone.features.conv1.weight, cached.conv1.weight)


def test_unknown_torchvision_weight_name_lists_the_choices():
    with pytest.raises(TransferlabError, match="IMAGENET1K_V1"):
        create_backbone("resnet18", pretrained=True, weights="IMAGENET9K")


def test_small_cnn_refuses_pretrained_weights():
    with pytest.raises(TransferlabError, match="no pretrained weights"):
        create_backbone("small_cnn", pretrained=True)


def test_timm_offline_error_names_the_hub_repo(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at call time: fails at once
    with pytest.raises(PretrainedWeightsUnavailable, match="timm/resnet18"):
        create_backbone("timm/resnet18", pretrained=True)
