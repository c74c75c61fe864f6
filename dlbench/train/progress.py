"""Progress where nobody watches a bar: one line an epoch when the output is a file or a pipe (CI, ``> log.txt``).

A tqdm bar redrawn into a file leaves every refresh behind (hundreds of carriage-return fragments an epoch); this
prints what a person reads from a log instead: the epoch, its metrics and how long it took. On a terminal dlbench
keeps Lightning's TQDM bar.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from dlbench.core.errors import DlbenchError

PROGRESS_ENV = "DLBENCH_PROGRESS"
PROGRESS = ("auto", "bar", "lines")

_MACHINE_TAGS = ("train/epoch_seconds", "train/samples_per_second", "train/peak_memory_mb", "train/lr")
"""Logged by dlbench's monitors for TensorBoard; the line shows the epoch's time itself and keeps to the metrics."""


_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _HoldStopMessage(logging.Filter):
    """Holds back Lightning's "`Trainer.fit` stopped: ..." line, which it logs before the last epoch's metrics are in,
    so that it can follow that epoch's line."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("`Trainer.fit` stopped"):
            self.held.append(text.replace("`Trainer.fit` stopped", "training stopped").replace("`", ""))
            return False
        return True


def _number(value: Any) -> str:
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.4g}"


class EpochLines(ProgressBar):
    """A progress bar that prints one line at the end of every training epoch (after its validation) and one for
    each validate, test or predict pass, to stdout (where Lightning's bar goes), from global rank zero."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self._enabled = True
        self._stream = stream
        self._started = 0.0
        self._pending: tuple[int, int, float] | None = None
        """(epoch, step, seconds) of an epoch that ended and whose line is not out yet."""
        self._stop = _HoldStopMessage()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _write(self, trainer: L.Trainer, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(text, file=self._stream or sys.stdout, flush=True)

    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule, prefixes: tuple[str, ...]) -> str:
        shown = []
        for key, value in sorted(trainer.callback_metrics.items()):
            scalar = getattr(value, "numel", lambda: 1)() == 1
            if not scalar or not key.startswith(prefixes) or key.startswith(_MACHINE_TAGS):
                continue
            shown.append(f"{key} {_number(value)}")
        return "  ".join(shown)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop.held.clear()
        for name in _RANK_ZERO_LOGGERS:
            logging.getLogger(name).addFilter(self._stop)

    def _release_stop_message(self, trainer: L.Trainer) -> None:
        for name in _RANK_ZERO_LOGGERS:
            logging.getLogger(name).removeFilter(self._stop)
        for text in self._stop.held:
            if trainer.is_global_zero:
                print(text, file=sys.stderr, flush=True)
        self._stop.held.clear()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed from a checkpoint saved inside an epoch starts there, without on_train_epoch_start.
        self._started = time.perf_counter()

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
        self._release_stop_message(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._flush(trainer, pl_module)
        self._release_stop_message(trainer)

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


class TerminalBar(TQDMProgressBar):
    """Lightning's TQDM bar, refreshed every ``refresh_rate`` steps, without the second bar Lightning opens, fills and
    closes for every validation inside ``fit`` (a few milliseconds an epoch, much of a small data set's epoch): the
    training bar shows the validation metrics from the epoch's end on. ``dlbench validate`` keeps its bar."""

    @staticmethod
    def _inside_fit(trainer: L.Trainer) -> bool:
        return trainer.state.fn == "fit" and not trainer.sanity_checking

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._inside_fit(trainer):
            super().on_validation_start(trainer, pl_module)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any,
                                  **kwargs: Any) -> None:
        if not self._inside_fit(trainer):
            super().on_validation_batch_start(trainer, pl_module, *args, **kwargs)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any,
                                **kwargs: Any) -> None:
        if not self._inside_fit(trainer):
            super().on_validation_batch_end(trainer, pl_module, *args, **kwargs)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._inside_fit(trainer):
            super().on_validation_end(trainer, pl_module)
            return
        self.reset_dataloader_idx_tracker()  # the training bar shows the metrics when the epoch ends, once


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default stdout, where Lightning's TQDM bar writes) is a terminal."""
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar() -> ProgressBar:
    """The bar for where the output goes, or as ``$DLBENCH_PROGRESS`` says: ``bar`` (TQDM), ``lines`` (a line an
    epoch) or ``auto`` (a bar on a terminal, lines into a file or pipe)."""
    wanted = os.environ.get(PROGRESS_ENV, "auto").strip().lower() or "auto"
    if wanted not in PROGRESS:
        raise DlbenchError(f"{PROGRESS_ENV}={wanted!r} is not a progress display; use one of {', '.join(PROGRESS)} "
                           f"(auto: a bar on a terminal, a line an epoch otherwise).")
    if wanted == "bar" or wanted == "auto" and is_terminal():
        return TerminalBar(refresh_rate=10)  # refreshing every step costs time on small models
    return EpochLines()
