"""Metrics of our own, each where torchmetrics' does less."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric


class StepMean(MeanMetric):
    """torchmetrics' weighted MeanMetric without its NaN check on every update, a device sync each training
    step (a NaN training loss is the divergence check's to report: callbacks/stops.py). Not
    nan_strategy="disable": in torchmetrics 1.9 that drops the weights, and the mean with them."""

    def update(self, value: torch.Tensor, weight: float | torch.Tensor = 1.0) -> None:
        value = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        weight = torch.broadcast_to(torch.as_tensor(weight, dtype=self.dtype, device=self.device), value.shape)
        self.mean_value += (value * weight).sum()
        self.weight += weight.sum()
