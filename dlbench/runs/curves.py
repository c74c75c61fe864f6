"""The curves of runs side by side, as a PNG: one panel a group of comparable runs, each run's best point starred,
the legend beside the curves and never over them, however many runs (``dlbench compare --plot``).

Imports matplotlib's object API only: no pyplot and no display, Agg draws the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dlbench.runs.run import Run

ROWS = 30
"""Legend entries a column before the legend takes another column (7-point entries: 0.155 in each, 4.6 in)."""


def plot_figure(panels: Sequence[tuple[str, str, Sequence[Run]]], labels: dict[Path, str]) -> Figure:
    """A figure of one panel for each ``(title, scalar tag, runs)``: the tag's curve of every run over steps. Each
    legend sits right of its panel in as many columns as keep it no taller than about the panel (three at most:
    beyond 90 runs the panel grows taller instead); the figure grows as wide and tall as that needs."""
    from matplotlib.figure import Figure

    shape = [(math.ceil(len(runs) / max(ROWS, math.ceil(len(runs) / 3))), max(len(labels[r.path]) for r in runs))
             for _, _, runs in panels]
    legend_width = max(ncol * (0.45 + 0.055 * chars) for ncol, chars in shape)  # inches; a 7-point character ~0.055
    heights = [max(3.2, 0.9 + 0.155 * math.ceil(len(runs) / ncol)) for (_, _, runs), (ncol, _) in
               zip(panels, shape, strict=True)]
    fig = Figure(figsize=(6.5 + legend_width, sum(heights) + 0.3), dpi=100, layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (title, tag, runs), (ncol, _) in zip(axes, panels, shape, strict=True):
        for i, run in enumerate(runs):
            points = run.scalars[tag]
            (line,) = ax.plot([p.step for p in points], [p.value for p in points], label=labels[run.path],
                              marker="o" if len(points) <= 40 else None, markersize=3, linewidth=1.2,
                              linestyle=("-", "--", "-.", ":")[i // 10 % 4])  # the ten colours repeat
            best = run.best(tag)
            if best is not None:
                ax.plot([best.step], [best.value], marker="*", markersize=10, color=line.get_color(), linestyle="")
        better = "lower" if runs[0].mode(tag) == "min" else "higher"
        ax.set_title(f"{title} ({better} is better; * marks each run's best)", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(tag)
        ax.grid(alpha=0.3)
        # Anchored outside the axes: constrained layout then narrows the axes to make room for it.
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, ncols=ncol,
                  fontsize=7 if len(runs) > 8 else 8, frameon=False, handlelength=1.5, columnspacing=1.0)
    return fig
