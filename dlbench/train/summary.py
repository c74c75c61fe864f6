"""The model, in one line, when a fit starts: ``--summary line`` (the default), ``full`` or ``off``.

Lightning's model summary prints a table of every child module, metric objects included (``train_loss LossMean``
reads as if it were a layer), 15 to 25 lines of up to 200 characters before the first epoch. What a person checks
there is the class, the size and the cost; the table stays a flag away, without the metric objects.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary import ModelSummary as Summary
from lightning.pytorch.utilities.model_summary.model_summary import (
    _format_summary_table,
    get_formatted_model_size,
    get_human_readable_count,
)
from torch import nn
from torchmetrics import Metric

SUMMARY = ("line", "full", "off")
SummaryMode = Literal["line", "full", "off"]


class LayerSummary(Summary):
    """Lightning's summary of a module's children, without the torchmetrics objects (they hold no weights and do no
    part of the forward pass)."""

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        return [(name, module) for name, module in super().named_modules if not isinstance(module, Metric)]


def example_batch_size(model: L.LightningModule) -> int | None:
    """The batch size of the model's ``example_input_array`` (its first tensor's first dimension), if it has one."""
    example = getattr(model, "example_input_array", None)
    while isinstance(example, (list, tuple)) and example:
        example = example[0]
    if isinstance(example, dict) and example:
        example = next(iter(example.values()))
    return int(example.shape[0]) if isinstance(example, torch.Tensor) and example.dim() > 0 else None


def summary_line(model: L.LightningModule, summary: Summary) -> str:
    """``model LSTMForecaster: 50.5 K parameters (all trainable), 0.2 MB, 256 FLOPs a sample``."""
    total, trainable = summary.total_parameters, summary.trainable_parameters
    frozen = "all trainable" if trainable == total else f"{get_human_readable_count(trainable).strip()} trainable"
    parts = [f"{get_human_readable_count(total).strip()} parameters ({frozen})",
             f"{get_formatted_model_size(summary.model_size)} MB"]
    flops, batch = getattr(summary, "total_flops", 0), example_batch_size(model)
    if flops and batch:
        # torch's FlopCounterMode counts matrix products and convolutions, not recurrent cells: say what it missed.
        counts, params = summary.flop_counts, dict(zip(summary.layer_names, summary.param_nums, strict=True))
        missed = sorted({kind for name, kind in zip(summary.layer_names, summary.layer_types, strict=True)
                         if params[name] and not sum(counts.get(name, {}).values())})
        without = f" (not counting {', '.join(missed)})" if missed else ""
        parts.append(f"{get_human_readable_count(round(flops / batch)).strip()} FLOPs a sample{without}")
    return f"model {type(model).__name__}: {', '.join(parts)}"


class ModelLine(ModelSummary):
    """Lightning's ModelSummary callback, printing one line (``line``), the table without metric objects (``full``)
    or nothing (``off``). It takes the place of the callback Lightning adds by itself."""

    def __init__(self, mode: SummaryMode = "line") -> None:
        super().__init__(max_depth=0 if mode == "off" else 1)
        self.mode = mode

    def _summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Summary:
        from lightning.pytorch.strategies.deepspeed import DeepSpeedStrategy

        if isinstance(trainer.strategy, DeepSpeedStrategy) and trainer.strategy.zero_stage_3:
            return super()._summary(trainer, pl_module)  # parameters sharded: Lightning's DeepSpeed summary counts them
        return LayerSummary(pl_module, max_depth=self._max_depth)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.mode == "off":
            return
        summary = self._summary(trainer, pl_module)
        if not trainer.is_global_zero:
            return
        if self.mode == "line":
            text = summary_line(pl_module, summary)
        else:
            flops = getattr(summary, "total_flops", 0)
            text = "\n" + _format_summary_table(summary.total_parameters, summary.trainable_parameters,
                                                summary.model_size, summary.total_training_modes, flops,
                                                *summary._get_summary_data())
        print(text, file=sys.stderr, flush=True)

    @staticmethod
    def summarize(*args: Any, **kwargs: Any) -> None:  # on_fit_start above prints; Lightning's path is unused
        raise NotImplementedError
