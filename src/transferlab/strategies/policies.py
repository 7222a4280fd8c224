"""The strategies of the notes as freeze policies: head only, full fine-tune, top blocks, two phases,
scratch, discriminative rates and gradual unfreezing (strategy=<name>)."""

from __future__ import annotations

import lightning as L
from torch.optim import Optimizer

from transferlab.errors import TransferlabError
from transferlab.options import check
from transferlab.strategies.base import FreezePolicy, block_paths, reinitialise, set_trainable


class HeadOnly(FreezePolicy):
    """Fixed feature extractor: only the new head trains; the backbone runs in inference mode."""

    name = "head_only"

    trains_backbone = False

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], False)
        self.inference_mode = ["backbone"]


class FullFinetune(FreezePolicy):
    """Everything trains; the backbone at `backbone_lr_scale` × the head's learning rate."""

    name = "full_finetune"
    freezes_backbone = False

    def __init__(self, backbone_lr_scale: float = 0.1) -> None:
        super().__init__()
        self.backbone_lr_scale = check("strategy.backbone_lr_scale", backbone_lr_scale)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], True)

    def lr_scales(self, blocks: int) -> list[float]:
        return [self.backbone_lr_scale] * blocks


class TopBlocks(FreezePolicy):
    """The last `n` blocks train (optionally re-initialised); the rest stays frozen in inference mode."""

    name = "top_blocks"

    def __init__(self, n: int = 2, reinit: bool = False, backbone_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.n, self.reinit = check("strategy.n", n), check("strategy.reinit", reinit)
        self.backbone_lr_scale = check("strategy.backbone_lr_scale", backbone_lr_scale)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        blocks = pl_module.backbone.blocks
        if self.n > len(blocks):
            raise TransferlabError(
                f"strategy.n={self.n}, but {pl_module.backbone.name} has only {len(blocks)} blocks "
                f"(use strategy=full_finetune to train them all)"
            )
        frozen, top = blocks[: -self.n], blocks[-self.n :]
        set_trainable(frozen, False)
        set_trainable(top, True)
        if self.reinit:
            reinitialise(top)
        self.inference_mode = block_paths(pl_module, slice(None, -self.n))

    def lr_scales(self, blocks: int) -> list[float]:
        return [self.backbone_lr_scale] * blocks


class TwoPhase(FreezePolicy):
    """The Keras recipe: train the head on a frozen backbone for `head_epochs`, then
    unfreeze the whole backbone at `unfreeze_lr_scale` × lr, its BatchNorm kept in
    inference mode so the pretrained statistics survive the small-data fine-tune."""

    name = "two_phase"

    def __init__(self, head_epochs: int = 2, unfreeze_lr_scale: float = 0.01) -> None:
        super().__init__()
        self.head_epochs = check("strategy.head_epochs", head_epochs)
        self.unfreeze_lr_scale = check("strategy.unfreeze_lr_scale", unfreeze_lr_scale)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], False)
        self.inference_mode = ["backbone"]

    @property
    def frozen_backbone_epochs(self) -> int:
        return self.head_epochs

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch >= self.head_epochs:
            lr = pl_module.hparams.optimizer["lr"] * self.unfreeze_lr_scale
            self.add_param_group(pl_module, optimizer, [pl_module.backbone], lr)


class Scratch(FreezePolicy):
    """Random initialisation, everything trains: the baseline that shows what pretraining buys."""

    name = "scratch"
    freezes_backbone = False

    uses_pretrained_weights = False

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], True)


class Discriminative(FreezePolicy):
    """Everything trains; each block's lr is `decay` × the one above it (head at lr, stem lowest)."""

    name = "discriminative"
    freezes_backbone = False

    def __init__(self, decay: float = 0.5) -> None:
        super().__init__()
        self.decay = check("strategy.decay", decay)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], True)

    def lr_scales(self, blocks: int) -> list[float]:
        return [self.decay ** (blocks - index) for index in range(blocks)]


class Gradual(FreezePolicy):
    """ULMFiT-style gradual unfreezing: the head alone first, then one more block from the
    top every `every` epochs, each joining the optimizer at lr × decay^(its depth from the top)."""

    name = "gradual"

    def __init__(self, every: int = 1, decay: float = 0.5) -> None:
        super().__init__()
        self.every, self.decay = check("strategy.every", every), check("strategy.decay", decay)

    @property
    def frozen_backbone_epochs(self) -> int:
        return self.every

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], False)
        self.inference_mode = block_paths(pl_module, slice(None))

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        blocks = pl_module.backbone.blocks
        unfrozen = min(epoch // self.every, len(blocks))
        base_lr = pl_module.hparams.optimizer["lr"]
        # Idempotent: a resumed run re-adds nothing and re-freezes nothing.
        for depth in range(1, unfrozen + 1):
            self.add_param_group(pl_module, optimizer, [blocks[-depth]], base_lr * self.decay**depth)
        self.inference_mode = block_paths(pl_module, slice(None, len(blocks) - unfrozen))
