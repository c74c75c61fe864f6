"""Progress where nobody watches a bar: one line an epoch when the output is a file or a pipe (CI, ``> log.txt``).

A tqdm bar redrawn into a file leaves every refresh behind (hundreds of carriage-return fragments an epoch); this
prints what a person reads from a log instead: the epoch, its metrics and how long it took. On a terminal dlbench
keeps Lightning's TQDM bar.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar

_MACHINE_TAGS = ("train/epoch_seconds", "train/samples_per_second", "train/peak_memory_mb", "train/lr")
"""Logged by dlbench's monitors for TensorBoard; the line shows the epoch's time itself and keeps to the metrics."""


def _number(value: Any) -> str:
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.4g}"


class EpochLines(ProgressBar):
    """A progress bar that prints one line at the end of every training epoch (after its validation) and one for
    each validate, test or predict pass, to stderr, from global rank zero."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self._enabled = True
        self._stream = stream
        self._started = 0.0
        self._pending: tuple[int, int, float] | None = None
        """(epoch, step, seconds) of an epoch that ended and whose line is not out yet."""

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _write(self, trainer: L.Trainer, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(text, file=self._stream or sys.stderr, flush=True)

    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule, prefixes: tuple[str, ...]) -> str:
        shown = []
        for key, value in sorted(trainer.callback_metrics.items()):
            scalar = getattr(value, "numel", lambda: 1)() == 1
            if not scalar or not key.startswith(prefixes) or key.startswith(_MACHINE_TAGS):
                continue
            shown.append(f"{key} {_number(value)}")
        return "  ".join(shown)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer, pl_module)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Callbacks hear of the epoch's end before the module logs its epoch metrics: the line goes out at the next
        # hook, when every metric of this epoch is in.
        self._pending = (trainer.current_epoch, trainer.global_step, time.perf_counter() - self._started)

    def _flush(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        epoch, step, seconds = self._pending
        self._pending = None
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        metrics = self._metrics(trainer, pl_module, ("train/", "val/"))
        self._write(trainer, f"epoch {epoch + 1}{total}  step {step}  {seconds:.1f} s  {metrics}".rstrip())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._flush(trainer, pl_module)

    def _stage_end(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, prefix: str) -> None:
        metrics = self._metrics(trainer, pl_module, (prefix,))
        self._write(trainer, f"{stage} done  {metrics}".rstrip())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":  # during fit the epoch's line says it
            self._stage_end(trainer, pl_module, "validate", "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stage_end(trainer, pl_module, "test", "test/")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, f"predict done  {trainer.num_predict_batches} batches")


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
