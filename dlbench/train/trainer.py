"""The Lightning Trainer with dlbench's one extra option, ``steps_per_call``."""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from dlbench.train.steps import StepsPerCall


class DlbenchTrainer(L.Trainer):
    """``lightning.Trainer`` plus ``steps_per_call``; every other argument is the Trainer's own.

    Args:
        steps_per_call: Optimiser steps a ``training_step`` call takes, over as many consecutive batches: Lightning's
            per-batch cost (~0.8 ms here) is paid once for K steps. Same results as 1 (steps, step counter,
            schedules, checkpoints); the progress bar, ``limit_train_batches`` and an integer ``val_check_interval``
            count calls. One process, one optimiser, automatic optimisation, in-memory data.
    """

    def __init__(self, *args: Any, steps_per_call: int = 1, **kwargs: Any) -> None:
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
        self.steps_per_call = steps_per_call
        self._steps = StepsPerCall(steps_per_call) if steps_per_call > 1 else None
        if self._steps is not None:
            callbacks = kwargs.get("callbacks")
            callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
            kwargs["callbacks"] = [*callbacks, self._steps]
        super().__init__(*args, **kwargs)

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Optimiser steps of the whole run, as Lightning estimates them, counted in steps, not calls."""
        calls = super().estimated_stepping_batches
        if self._steps is None or calls == float("inf") or self.max_epochs in (None, -1):
            return calls
        per_epoch = min(self.num_training_batches * self.steps_per_call, self._steps.batches_per_epoch or math.inf)
        steps = int(per_epoch) * max(self.max_epochs, 1)
        return min(steps, self.max_steps) if self.max_steps != -1 else steps
