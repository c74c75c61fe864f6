"""Baseline metrics that plugins log beside their own, so every run shows what a trivial predictor would score."""

from __future__ import annotations

import torch
from torchmetrics import Metric


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
