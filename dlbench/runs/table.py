"""Tables of runs: text that fits a width for a person, CSV and Markdown that keep everything for a machine.

A text table too wide for its width first takes the short titles of its columns, then cuts long text cells with an
ellipsis (down to each column's floor), then leaves out its least important columns and says which; no line is
ever wider than the width. Standard library only: ``dlbench --help`` imports this through :mod:`compare`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

KEEP = 80
"""Columns of this priority or more are never left out of a narrow table."""


@dataclass(frozen=True)
class Column:
    key: str
    """Machine name: the CSV header and the JSON key."""
    title: str
    """Header of the text and Markdown tables."""
    get: Callable[[dict], Any]
    kind: str = "text"
    """How the text table shows values: text, number, count, seconds. Only text cells are ever cut."""
    short: str = ""
    """A shorter title for a narrow table (``hidden_size`` for ``model/hidden_size``)."""
    priority: int = 50
    """A narrow table leaves out the lowest first (the rightmost of equals), never one of :data:`KEEP` or more."""
    floor: int = 8
    """The narrowest a text column is cut to before columns are left out."""
    cut_start: bool = False
    """Cut long cells at their start (a run's path ends with what tells it apart), else at their end."""


@dataclass(frozen=True)
class Symbols:
    ellipsis: str
    sub: str
    """Marks a line that belongs to the row above (an evaluation of the run, its problem)."""
    dot: str
    lower: str
    higher: str


UNICODE = Symbols("…", "↳", "·", "↓", "↑")
ASCII = Symbols("...", "->", "-", "(min)", "(max)")


def symbols_for(encoding: str | None) -> Symbols:
    """Arrows and ellipses where the output's encoding can write them (a UTF-8 terminal), ASCII words elsewhere."""
    try:
        "".join(vars(UNICODE).values()).encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ASCII
    return UNICODE


def cell(value: Any, precise: bool = False) -> str:
    """A value as text: integral floats without ``.0``; others to 5 significant digits, or all of them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value) if precise else f"{value:.5g}"
    return str(value)


def human(value: Any, kind: str) -> str:
    """A value as the text table shows it: seconds as ``12.3s`` / ``4m05s`` / ``1h02m``, counts as ``1.2M``."""
    if value is None:
        return ""
    if kind == "seconds":
        seconds = float(value)
        if seconds < 60:
            return f"{seconds:.1f}s"
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
    if kind == "count":
        count = float(value)
        for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(count) >= limit:
                return f"{count / limit:.3g}{suffix}"
        return str(int(count))
    return cell(value)


def cut(text: str, width: int, ellipsis: str = "…", at_start: bool = False) -> str:
    """``text`` in at most ``width`` characters, the cut marked with ``ellipsis``."""
    if len(text) <= width:
        return text
    if width <= len(ellipsis):
        return text[:width]
    keep = width - len(ellipsis)
    return ellipsis + text[len(text) - keep:] if at_start else text[:keep] + ellipsis


def _layout(columns: list[Column], texts: dict[str, list[str]],
            width: int | None) -> tuple[list[str], list[int]] | None:
    """Titles and widths of ``columns`` within ``width``: full titles, else short ones for the columns that may be
    left out (hyperparameters), else short ones for all, else text columns cut down to their floors, widest first.
    None when even that is too wide."""
    def total(widths: list[int]) -> int:
        return sum(widths) + 2 * (len(widths) - 1)

    for titles in ([c.title for c in columns], [c.title if c.priority >= KEEP else c.short or c.title for c in columns],
                   [c.short or c.title for c in columns]):
        widths = [max([len(t), *map(len, texts[c.key])]) for c, t in zip(columns, titles, strict=True)]
        if width is None or total(widths) <= width:
            return titles, widths
    floors = [min(w, c.floor) if c.kind == "text" else w for c, w in zip(columns, widths, strict=True)]
    excess = total(widths) - width
    while excess > 0:
        i = max(range(len(widths)), key=lambda j: widths[j] - floors[j])
        if widths[i] <= floors[i]:
            return None
        step = min(excess, widths[i] - floors[i], max(1, widths[i] // 8))
        widths[i] -= step
        excess -= step
    return titles, widths


def fit_table(records: Sequence[dict], columns: Sequence[Column], width: int | None,
              sublines: Sequence[Sequence[str]] = (), symbols: Symbols = UNICODE) -> tuple[list[str], list[Column]]:
    """The lines of a text table of ``records``, none wider than ``width`` (None: no limit), each record's
    ``sublines`` (its evaluations, its problem) indented under its row; and the columns left out to fit."""
    texts = {c.key: [human(c.get(r), c.kind) for r in records] for c in columns}
    shown, left_out = list(columns), []
    layout = _layout(shown, texts, width)
    while layout is None and any(c.priority < KEEP for c in shown):
        victim = min((c for c in shown if c.priority < KEEP), key=lambda c: (c.priority, -shown.index(c)))
        shown.remove(victim)
        left_out.append(victim)
        layout = _layout(shown, texts, width)
    if layout is None:  # only columns that must stay, and still too wide: cut them to their floors, then the lines
        titles = [c.short or c.title for c in shown]
        layout = titles, [min(max([len(t), *map(len, texts[c.key])]), c.floor if c.kind == "text" else 10**6)
                          for c, t in zip(shown, titles, strict=True)]
    titles, widths = layout

    def line(values: list[str]) -> str:
        parts = []
        for c, w, v in zip(shown, widths, values, strict=True):
            v = cut(v, w, symbols.ellipsis, c.cut_start)
            parts.append(v.ljust(w) if c.kind == "text" else v.rjust(w))
        return "  ".join(parts).rstrip()

    lines = [line(titles), line(["-" * w for w in widths])]
    for i in range(len(records)):
        lines.append(line([texts[c.key][i] for c in shown]))
        lines += [f"  {symbols.sub} {text}" for text in (sublines[i] if i < len(sublines) else ())]
    if width is not None:
        lines = [cut(text, width, symbols.ellipsis) for text in lines]
    return lines, left_out


def render_markdown(records: list[dict], columns: list[Column]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c.title) for c in columns) + " |",
             "|" + "|".join("---:" if c.kind != "text" else "---" for c in columns) + "|"]
    for r in records:
        lines.append("| " + " | ".join(esc(human(c.get(r), c.kind)) for c in columns) + " |")
    return "\n".join(lines)


def render_csv(records: list[dict], columns: list[Column], extra: Sequence[str] = ()) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in columns] + list(extra))
    for r in records:
        writer.writerow([cell(c.get(r), precise=True) for c in columns] + [cell(r.get(k), True) for k in extra])
    return out.getvalue()
