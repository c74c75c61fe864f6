"""Reading runs back: scalars from a run directory's event files, through TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a run as ``[(step, value), ...]`` in step order, merged over all its event files."""
    acc = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags().get(SCALARS, [])}


def last_scalars(run_dir: str | Path) -> dict[str, float]:
    """The last logged value of every scalar tag."""
    return {tag: points[-1][1] for tag, points in read_scalars(run_dir).items() if points}
