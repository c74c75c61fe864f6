"""Callbacks dlbench adds to every run."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint


class BestMetric(Callback):
    """Logs ``<monitor>_best``, the best value of the monitored metric so far, after every validation.

    TensorBoard's HParams dashboard shows the last value of each metric it lists; listing this one gives each run's
    best value there, next to the latest.
    """

    def __init__(self, monitor: str, mode: str = "min") -> None:
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None

    @property
    def name(self) -> str:
        return f"{self.monitor}_best"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.logger is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if math.isnan(value):
            return
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = value
        if trainer.is_global_zero:
            trainer.logger.log_metrics({self.name: self.best}, step=trainer.global_step)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best")


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` really holds the last epoch.

    With ``save_last=True``, Lightning 2.6 rewrites ``last.ckpt`` only in steps where it also saved a top-k
    checkpoint, so after the best epoch "last" silently stops moving. This refreshes it at every epoch end.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        # _should_skip_saving_checkpoint is also true when this step was saved already (then last is current).
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
