"""How often a plugin draws its epoch-end pictures: cheaply enough that they never slow training noticeably.

A matplotlib figure (a confusion matrix, predicted boxes) takes 0.1-0.2 s to draw on a CPU. After a one-minute epoch
that is nothing; after the 0.2 s epochs of a small model on small data it would be most of the run. So pictures are
drawn after the first epoch, after the last one, and in between only when the time since the last drawing is at
least ``(1 - share) / share`` times what that drawing cost: drawing takes at most ``share`` of the run's wall time,
whatever the epoch length.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L


class PictureBudget:
    """``if budget.due(trainer): with budget.drawing(): ...`` in a plugin's ``on_validation_epoch_end``."""

    def __init__(self, share: float = 0.05) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share = share
        self._next = float("-inf")

    def due(self, trainer: L.Trainer) -> bool:
        """Whether to draw now; never during the sanity check, always at the first and last epoch."""
        if trainer.sanity_checking:
            return False
        last = bool(trainer.max_epochs and trainer.max_epochs > 0 and trainer.current_epoch + 1 >= trainer.max_epochs)
        return last or trainer.should_stop or time.perf_counter() >= self._next

    @contextmanager
    def drawing(self) -> Iterator[None]:
        """Times the drawing inside it and schedules the next one accordingly."""
        start = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            self._next = end + (end - start) * (1 - self.share) / self.share
