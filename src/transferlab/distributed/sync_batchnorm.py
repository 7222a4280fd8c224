"""`trainer.sync_batchnorm=true`: BatchNorm statistics over the global batch of all processes.

Lightning converts with `torch.nn.SyncBatchNorm.convert_sync_batchnorm`, which turns timm's
`BatchNormAct2d` (BN, dropout and activation in one module) into a plain SyncBatchNorm and
drops the activation: efficientnet_lite0 becomes almost linear. Here:

* on CUDA, timm's converter (plain BN → SyncBatchNorm, BatchNormAct2d → SyncBatchNormAct);
* elsewhere (CPU, gloo), where torch's SyncBatchNorm cannot train (its statistics are CUDA
  kernels), each BatchNorm keeps its module and class family and computes its training
  statistics with two autograd all-reduces (sum and count, then squared deviations). The
  forward pass, the gradients and the running statistics are then those of one process
  that sees the whole batch, so a CPU DDP run reproduces a one-process run.

Layers in eval mode (frozen BN) normalise with their running statistics as before.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import nn

# Every BatchNorm layer, by torch's public classes (their private base, _BatchNorm, is not needed):
# timm's BatchNormAct2d and SplitBatchNorm2d subclass BatchNorm2d.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

log = logging.getLogger(__name__)


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every process's loss depends on
    the global statistics, so each share's gradient sums the contributions of all processes."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def global_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """`bn` in training mode over the batch of every process (this process holds `x`, its share).
    Statistics in float32 whatever the input (bf16 sums lose the mean; fp16 sums overflow), as
    torch's BatchNorm; the output in the input's dtype."""
    dtype, x = x.dtype, x.float()
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
    totals = _SumOverProcesses.apply(torch.cat([x.sum(dims), count]))
    n = totals[-1]
    mean = totals[:-1] / n
    centred = x - mean.view(shape)
    var = _SumOverProcesses.apply(centred.pow(2).sum(dims)) / n  # two passes: as stable as BN's own
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            bn.running_var.mul_(1 - factor).add_(var.detach() * n / (n - 1), alpha=factor)  # unbiased, as torch
    normalised = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        normalised = normalised * bn.weight.view(shape) + bn.bias.view(shape)
    return normalised.to(dtype)


def _all_reduce_forward(self: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    if not self.training or not (dist.is_available() and dist.is_initialized()):
        return type(self).__mro__[1].forward(self, x)  # the layer's own class
    y = global_batch_norm(self, x)
    if hasattr(self, "act"):  # timm's BatchNormAct2d: BN, then its dropout and activation
        y = self.act(self.drop(y))
    return y


def _all_reduce_class(cls: type) -> type:
    """`cls` with training statistics from all processes; a module-level name, so it pickles."""
    subclass = type(f"AllReduce{cls.__name__}", (cls,), {"forward": _all_reduce_forward, "__module__": __name__})
    globals()[subclass.__name__] = subclass
    return subclass


def _known_batchnorms() -> dict[type, type]:
    """The layers whose forward is BatchNorm (then, for timm's, dropout and activation) and nothing else:
    other BatchNorm subclasses (timm's SplitBatchNorm2d, ...) are left alone rather than rewritten."""
    from timm.layers import BatchNormAct2d

    classes = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, BatchNormAct2d)
    return {cls: _all_reduce_class(cls) for cls in classes}


ALL_REDUCE_CLASSES = _known_batchnorms()


class TimmAwareSyncBatchNorm(LayerSync):
    """A Lightning LayerSync plugin (`plugins=[...]` with `Trainer(sync_batchnorm=False)`)."""

    def __init__(self) -> None:
        self.replaced: list[tuple[str, nn.Module]] = []  # (path, original module) of timm's conversion
        self.reclassed: list[tuple[nn.Module, type]] = []  # (layer, its class) of the all-reduce path

    def apply(self, model: nn.Module) -> nn.Module:
        if model.trainer.strategy.root_device.type == "cuda":
            return self.convert(model)
        return self.convert_with_all_reduce(model)

    def convert(self, model: nn.Module) -> nn.Module:
        """timm's converter (torch's SyncBatchNorm: CUDA)."""
        from timm.layers import convert_sync_batchnorm

        self.replaced = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, BATCH_NORMS) and not isinstance(module, nn.SyncBatchNorm)
        ]
        log.info(
            "trainer.sync_batchnorm: %d BatchNorm layers synchronised across processes (timm's converter)",
            len(self.replaced),
        )
        return convert_sync_batchnorm(model)

    def convert_with_all_reduce(self, model: nn.Module) -> nn.Module:
        """Same modules, parameters and buffers; their training statistics come from all processes."""
        self.reclassed = [(m, type(m)) for m in model.modules() if type(m) in ALL_REDUCE_CLASSES]
        others = {
            type(m).__name__
            for m in model.modules()
            if isinstance(m, BATCH_NORMS) and type(m) not in ALL_REDUCE_CLASSES
        }
        if others:
            log.warning(
                "trainer.sync_batchnorm: %s keep per-process statistics (not a plain BatchNorm)", sorted(others)
            )
        for module, cls in self.reclassed:
            module.__class__ = ALL_REDUCE_CLASSES[cls]
        log.info(
            "trainer.sync_batchnorm: %d BatchNorm layers share batch statistics across processes "
            "(all-reduce; torch's SyncBatchNorm needs CUDA)",
            len(self.reclassed),
        )
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        """Back to the model's own BatchNorm modules, holding the synchronised layers' current tensors
        (moving the model to a device gave the converted layers new buffers)."""
        for module, cls in self.reclassed:
            module.__class__ = cls
        for path, original in self.replaced:
            parent_path, _, child = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            converted = getattr(parent, child)
            # setattr on a name a module already holds as a parameter or buffer replaces it in place
            # (a buffer keeps its persistence): Module's public way to swap a tensor.
            for name, param in converted.named_parameters(recurse=False):
                setattr(original, name, param)
            for name, buffer in converted.named_buffers(recurse=False):
                setattr(original, name, buffer)
            original.train(converted.training)
            setattr(parent, child, original)
        self.replaced, self.reclassed = [], []
        return model
