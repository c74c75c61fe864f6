"""Baseline metrics that plugins log beside their own, so every run shows what a trivial predictor would score; and
:class:`LossMean`, the epoch mean of a loss without a host synchronisation per step."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric, Metric


class MajorityAccuracy(Metric):
    """Accuracy of always predicting the most frequent class of the labels seen (the majority-class baseline).

    Counts are summed across processes, so under DDP it is the majority over the whole split.
    """

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("counts", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, target: torch.Tensor) -> None:
        self.counts += torch.bincount(target.flatten().long(), minlength=self.num_classes)[: self.num_classes]

    def compute(self) -> torch.Tensor:
        total = self.counts.sum().clamp_min(1)
        return self.counts.max().float() / total


class LossMean(MeanMetric):
    """The weighted mean of per-batch losses over an epoch, updated without ever waiting for the device.

    torchmetrics' :class:`~torchmetrics.MeanMetric` checks every update for NaN with ``if nans.any()``, which reads a
    value back from the device: one host synchronisation per training step on a GPU, which stalls the queue of
    kernels. Its ``nan_strategy="disable"`` skips the check but then ignores the weights (torchmetrics 1.9), which
    would average batches of different sizes wrongly. This keeps MeanMetric's states, reduction and ``compute``;
    ``update`` only adds on the device, with a Python-number weight folded into the arithmetic (no host-to-device
    copy). A NaN loss makes the mean NaN, visibly; dlbench's FiniteLossGuard stops a run whose training loss is not
    finite.
    """

    def __init__(self, **kwargs) -> None:
        if kwargs.pop("nan_strategy", "disable") != "disable":
            raise ValueError("LossMean never checks for NaN (that check is a host synchronisation); use "
                             "torchmetrics.MeanMetric for a nan_strategy")
        super().__init__(nan_strategy="disable", **kwargs)

    def update(self, value: torch.Tensor | float, weight: torch.Tensor | float = 1.0) -> None:
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        value = value.detach().to(self.dtype)
        if isinstance(weight, torch.Tensor):
            weight = torch.broadcast_to(weight.to(self.dtype), value.shape)
            self.mean_value += (value * weight).sum()
            self.weight += weight.sum()
        else:
            self.mean_value += value.sum() * weight
            self.weight += value.numel() * weight
