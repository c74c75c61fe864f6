"""The Results block a fit ends with: the score, its baseline, which way is better, and whether the run beat it.

A plugin's spec names its test ``score`` and the ``baseline`` it must beat (majority class, persistence, PCA, ...);
the block says both in words, so that ``test/acc 0`` beside ``test/acc_majority 0.381`` cannot be mistaken for a
result.
"""

from __future__ import annotations

import math
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

from dlbench.core.spec import Plugin, baseline_label
from dlbench.runs.run import metric_mode

LABEL = 16
"""Width of the labels column of the block."""
WIDTH = 100
"""Lines of metrics wrap at this width."""


def number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


@dataclass(frozen=True)
class Verdict:
    """A score against its baseline."""

    score_tag: str
    score: float
    baseline_tag: str
    baseline: float
    mode: str
    """``min`` or ``max``: which way the score is better."""
    label: str
    """What the baseline is, in words."""

    @property
    def margin(self) -> float:
        """How much better than the baseline the score is (negative: worse)."""
        return self.baseline - self.score if self.mode == "min" else self.score - self.baseline

    @property
    def beats(self) -> bool:
        return math.isfinite(self.score) and self.margin > 0

    def sentence(self) -> str:
        """``beats the baseline by 14.8 (51% lower)`` or ``did not beat the baseline ...``."""
        better = "lower" if self.mode == "min" else "higher"
        if self.beats:
            share = f" ({abs(self.margin / self.baseline):.0%} {better})" if self.baseline else ""
            return f"{better} is better: beats the baseline by {number(self.margin)}{share}"
        if math.isfinite(self.score) and self.margin == 0:
            return f"{better} is better: only ties the baseline, so the model learned nothing it could use"
        return f"{better} is better: did NOT beat the baseline ({number(self.score)} vs {number(self.baseline)})"


def verdict(plugin: Plugin | None, metrics: dict[str, float]) -> Verdict | None:
    """The plugin's score against its baseline, when both were logged."""
    if plugin is None or not plugin.score or not plugin.baseline:
        return None
    if plugin.score not in metrics or plugin.baseline not in metrics:
        return None
    return Verdict(plugin.score, metrics[plugin.score], plugin.baseline, metrics[plugin.baseline],
                   metric_mode(plugin.score, plugin.name), baseline_label(plugin, plugin.baseline))


def score_lines(plugin: Plugin | None, metrics: dict[str, float]) -> list[str]:
    """The score, baseline and verdict lines, then every other metric; without a score, every metric."""
    found = verdict(plugin, metrics)
    lines = []
    if found is not None:
        lines += [f"  {'score':<{LABEL}} {found.score_tag} {number(found.score)}",
                  f"  {'baseline':<{LABEL}} {number(found.baseline)}  {found.label} ({found.baseline_tag})",
                  f"  {'verdict':<{LABEL}} {found.sentence()}"]
        if not found.beats:
            lines.append(f"  {'':<{LABEL}} train longer (--trainer.max_epochs) or try another --model.lr")
    shown = {found.score_tag, found.baseline_tag} if found else set()
    others = [f"{k} {number(v)}" for k, v in sorted(metrics.items()) if k not in shown]
    if others and found is not None:
        wrapped = textwrap.wrap("   ".join(others), WIDTH - LABEL - 3, break_on_hyphens=False)
        lines += [f"  {'also logged' if i == 0 else '':<{LABEL}} {part}" for i, part in enumerate(wrapped)]
    elif others:
        lines += [f"  {k:<{LABEL}} {number(v)}" for k, v in sorted(metrics.items())]
    return lines


def results_block(plugin: Plugin | None, metrics: dict[str, float], best_checkpoint: str | None,
                  run_dir: str | None, log_root: str | None) -> str:
    lines = score_lines(plugin, metrics)
    if best_checkpoint:
        lines.append(f"  {'best checkpoint':<{LABEL}} {best_checkpoint}")
    if run_dir:
        lines.append(f"  {'run directory':<{LABEL}} {run_dir}")
    if log_root:
        lines.append(f"  {'TensorBoard':<{LABEL}} tensorboard --logdir {shlex.quote(str(Path(log_root)))}")
    return "\nResults\n" + "\n".join(lines)
