"""Freeze policies (strategy=<name>): which blocks train, when, and at which learning rates."""

from transferlab.strategies.auto import Auto
from transferlab.strategies.base import FreezePolicy
from transferlab.strategies.fastai import FastaiFineTune
from transferlab.strategies.policies import (
    Discriminative,
    FullFinetune,
    Gradual,
    HeadOnly,
    Scratch,
    TopBlocks,
    TwoPhase,
)

__all__ = [
    "Auto",
    "Discriminative",
    "FastaiFineTune",
    "FreezePolicy",
    "FullFinetune",
    "Gradual",
    "HeadOnly",
    "Scratch",
    "TopBlocks",
    "TwoPhase",
]
