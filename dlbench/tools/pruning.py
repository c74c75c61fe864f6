"""The Lightning callback through which a ``dlbench sweep`` trial reports to its Optuna study and is pruned.

``dlbench sweep`` runs every trial as an ordinary ``dlbench fit`` process and adds this callback to it (it is in the
run's config.yaml, so the run says how it was made). After each validation the callback reports the monitored
metric as the trial's intermediate value; when the study's pruner judges the trial worse than its peers at the same
epoch, training stops there and the sweep records the trial as pruned. A trial whose sweep went away (the study no
longer lists it as running) stops at its next validation instead of training on for nobody.
"""

from __future__ import annotations

import math
import warnings

import lightning as L
from lightning.pytorch.callbacks import Callback

# The one way dlbench opens a study database (lock waits, connect timeouts); it lives with the sweep, which opens the
# study without importing Lightning. The trial reports without a heartbeat: its sweep process records that.
from dlbench.tools.sweep import storage_for


class OptunaPruning(Callback):
    """Reports ``monitor`` after every validation to trial ``trial_id`` of study ``study_name`` in ``storage`` and
    stops training when the study's pruner says so (``pruned_at_epoch`` is then set on the trial)."""

    def __init__(self, storage: str, study_name: str, trial_id: int, monitor: str) -> None:
        self.storage, self.study_name, self.trial_id, self.monitor = storage, study_name, trial_id, monitor
        self._storage = self._trial = None

    def _open(self):
        import optuna

        if self._trial is None:
            self._storage = storage_for(self.storage)
            study = optuna.load_study(study_name=self.study_name, storage=self._storage)
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def _decide(self, trainer: L.Trainer) -> bool:
        """True when training should stop: the pruner says so, or the trial is no longer running."""
        import optuna
        from sqlalchemy.exc import SQLAlchemyError

        value = trainer.callback_metrics.get(self.monitor)
        try:
            trial = self._open()
            if self._storage.get_trial(self.trial_id).state != optuna.trial.TrialState.RUNNING:
                return True
            if value is None or not math.isfinite(float(value)):
                return False  # a missing metric is the sweep's to report; a non-finite loss stops the run anyway
            epoch = trainer.current_epoch
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a second validation in the same epoch: Optuna keeps the first
                trial.report(float(value), step=epoch)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", epoch)
                return True
        except (KeyError, optuna.exceptions.OptunaError, SQLAlchemyError) as err:  # deleted, or cannot be reached
            warnings.warn(f"dlbench sweep: cannot report to trial {self.trial_id} of {self.study_name}: {err}",
                          stacklevel=1)
        return False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        stop = self._decide(trainer) if trainer.is_global_zero else False
        # Every process must stop together, or the others would wait in their next collective for ever.
        if trainer.strategy.broadcast(stop, 0):
            trainer.should_stop = True
