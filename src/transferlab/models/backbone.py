"""The backbone contract: `features` maps images to pooled vectors of size `num_features`; `blocks`
lists the stages stem first (at least 4, covering every parameter), so "the top N blocks" means the
same thing on every family; `data_config` says how images must be prepared for the weights."""

from __future__ import annotations

import torch
from torch import nn

from transferlab.errors import TransferlabError
from transferlab.models.data_config import DataConfig


class Backbone(nn.Module):
    def __init__(
        self,
        name: str,
        features: nn.Module,
        num_features: int,
        blocks: list[nn.Module],
        data_config: DataConfig,
        aux_features: int = 0,
        aux_weight: float = 0.0,
        min_input_size: int = 1,
        min_input_reason: str = "",
    ):
        super().__init__()
        self.name = name
        self.features = features
        self.num_features = num_features
        self.data_config = data_config
        # Inception v3 with its auxiliary classifier: in train mode `features` returns
        # (pooled features, auxiliary features of this size).
        self.aux_features = aux_features
        self.aux_weight = aux_weight  # what the auxiliary loss counts for in training (classifier/module.py)
        # The smallest input side its layers accept (torchvision's weights meta "min_size"), and why.
        self.min_input_size, self.min_input_reason = min_input_size, min_input_reason
        self.pool = "avg"  # the global pooling (models/pooling.py: avgmax doubles num_features)
        # Blocks are kept as module paths inside `features` and resolved on every access: a
        # conversion that swaps modules after building (sync BatchNorm, wrappers) must not leave
        # the freeze policies holding the old objects (a "frozen" BN would then update its statistics).
        _check_blocks(name, features, blocks)
        self.block_paths: list[tuple[str, ...]] = _module_paths(features, blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.features(images)

    @property
    def blocks(self) -> list[nn.Module]:
        """The blocks, stem first, as the modules `features` holds now."""
        return [self.block(index) for index in range(len(self.block_paths))]

    def block(self, index: int) -> nn.Module:
        modules = [self.features.get_submodule(path) for path in self.block_paths[index]]
        return modules[0] if len(modules) == 1 else nn.ModuleList(modules)

    def block_names(self) -> list[str]:
        """Readable names of the blocks: their module paths inside `features`."""
        return [(paths[0] or "(all)") if len(paths) == 1 else f"{paths[0]} … {paths[-1]}" for paths in self.block_paths]


def _module_paths(features: nn.Module, blocks: list[nn.Module]) -> list[tuple[str, ...]]:
    """Each block as the paths of its modules in `features`: its own path, or, for a ModuleList
    that groups several modules (ResNet's stem conv1 + bn1), the paths of what it groups."""
    where = {id(module): name for name, module in features.named_modules(remove_duplicate=False)}
    return [
        (where[id(block)],) if id(block) in where else tuple(where[id(m)] for m in block.children()) for block in blocks
    ]


def _check_blocks(name: str, features: nn.Module, blocks: list[nn.Module]) -> None:
    if len(blocks) < 4:
        raise TransferlabError(f"{name}: {len(blocks)} blocks; every backbone declares at least 4")
    in_blocks = [id(p) for block in blocks for p in block.parameters()]
    if len(in_blocks) != len(set(in_blocks)):
        raise TransferlabError(f"{name}: a parameter belongs to two blocks")
    missing = [n for n, p in features.named_parameters() if id(p) not in set(in_blocks)]
    if missing:
        raise TransferlabError(f"{name}: parameters outside every block: {missing[:5]}")


# ---------------------------------------------------------------- torchvision
