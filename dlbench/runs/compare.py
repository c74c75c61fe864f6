"""``dlbench compare``: runs side by side, one row a run, read back from their event files by TensorBoard's reader.

Importing this module is cheap (``dlbench --help`` builds its parser); TensorBoard, matplotlib and torch are
imported only by the functions that need them, torch only to count parameters of runs that did not log the count.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlbench.core.errors import DlbenchError

if TYPE_CHECKING:
    from dlbench.runs.run import Run

FORMATS = ("table", "csv", "markdown", "json")
_SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".md": "markdown", ".markdown": "markdown"}
_OWN_COLUMNS = {"plugin", "data/class", "model/class"}
"""Hyperparameters shown in columns of their own, never among the differing ones."""
_FIELDS = ("run", "plugin", "data", "status", "monitor")
"""What ``--filter`` accepts besides hyperparameter keys."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="RUN_DIR_OR_LOGDIR",
                        help="log directories, plugin directories or run directories (default: lightning_logs)")
    parser.add_argument("--sort", metavar="METRIC",
                        help="sort by this scalar tag's best value, best first (default: each run's monitor); also "
                             "a hyperparameter key or epochs, steps, seconds, params")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="keep runs whose hyperparameter or field (plugin, data, status, run) matches; "
                             "repeatable; VALUE may list alternatives (a,b) and use * wildcards; KEY!=VALUE excludes")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: table, or from --output's suffix)")
    parser.add_argument("--output", metavar="FILE", help="write the table to FILE instead of the terminal")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw the curves of the --sort metric (default: the monitor) of every run shown")
    parser.set_defaults(func=main)


# ---- choosing runs ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    key: str
    values: tuple[str, ...]
    negate: bool

    @classmethod
    def parse(cls, text: str) -> Filter:
        match = re.fullmatch(r"\s*([^=!\s][^=!]*?)\s*(!?=)(.*)", text)
        if not match:
            raise DlbenchError(f"--filter {text!r} is not KEY=VALUE; e.g. --filter plugin=lstm or "
                               f"--filter model/hidden_size=64.")
        key, op, value = match.groups()
        return cls(key, tuple(v.strip() for v in value.split(",")), op == "!=")

    def matches(self, run: Run) -> bool:
        value = field_value(run, self.key)
        hit = value is not None and any(_equal(value, wanted) for wanted in self.values)
        return hit != self.negate


def _equal(value: Any, wanted: str) -> bool:
    if isinstance(value, bool) or (isinstance(value, (int, float)) and wanted.lower() in ("true", "false")):
        return float(value) == float(wanted.lower() == "true")
    if isinstance(value, (int, float)):
        try:
            return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
        except ValueError:
            return False
    return fnmatchcase(str(value), wanted)


def display_path(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def field_value(run: Run, key: str) -> Any:
    fields = {"run": display_path(run.path), "plugin": run.plugin, "data": run.data, "status": run.status,
              "monitor": run.monitor}
    return fields[key] if key in fields else run.hparams.get(key)


def select(runs: list[Run], filters: Sequence[Filter]) -> list[Run]:
    known = set(_FIELDS) | {k for run in runs for k in run.hparams}
    for f in filters:
        if f.key not in known:
            close = _close(f.key, known)
            raise DlbenchError(f"--filter {f.key}: no run has a field or hyperparameter {f.key!r}.{close} Fields: "
                               f"{', '.join(_FIELDS)}; hyperparameters look like model/hidden_size, data/batch_size, "
                               f"trainer/max_epochs, seed.")
    return [run for run in runs if all(f.matches(run) for f in filters)]


def _close(name: str, choices: set[str]) -> str:
    import difflib

    found = [c for c in sorted(choices) if name in c][:3] or difflib.get_close_matches(name, sorted(choices), n=3)
    return f" Did you mean {', '.join(found)}?" if found else ""


def differing_hparams(runs: list[Run]) -> list[str]:
    """Hyperparameter keys that take more than one value among the runs that have them. A key only some runs have
    (another plugin's argument) is not a difference by itself: runs of several plugins stay readable."""
    keys = {k for run in runs for k in run.hparams} - _OWN_COLUMNS
    differ = [k for k in keys if len({_cell(run.hparams[k], precise=True) for run in runs if k in run.hparams}) > 1]
    group = {"model": 0, "data": 1, "trainer": 2}
    return sorted(differ, key=lambda k: (group.get(k.partition("/")[0], 3), k))


# ---- sorting ------------------------------------------------------------------------------------------------------

def sort_runs(runs: list[Run], key: str | None, params: dict[Path, tuple[int | None, str]] | None = None) -> list[Run]:
    """Best first by ``key``'s best value when it is a scalar tag (by each run's monitor when ``key`` is None,
    runs of the same monitor together); ascending for other fields; runs without a value last."""
    scalar_tags = {t for run in runs for t in run.scalars}
    if key is None or key in scalar_tags:
        def order(run: Run) -> tuple:
            tag = key or run.monitor
            best = run.best(tag)
            signed = (best.value if run.mode(tag) == "min" else -best.value) if best is not None else 0.0
            return ("" if key else (tag or "~"), best is None, signed)
    else:
        fields = {"epochs", "steps", "seconds", "params", *_FIELDS} | {k for run in runs for k in run.hparams}
        if key not in fields:
            raise DlbenchError(f"--sort {key}: no run logged a scalar or has a field named {key!r}."
                               f"{_close(key, fields | scalar_tags)} Scalar tags here: "
                               f"{', '.join(sorted(scalar_tags)) or 'none'}.")

        def order(run: Run) -> tuple:
            if key == "params":
                value = (params or {}).get(run.path, (None, ""))[0]
            elif key in ("epochs", "steps", "seconds"):
                value = getattr(run, key)
            else:
                value = field_value(run, key)
            number = isinstance(value, (int, float))
            return (value is None, not number, value if number else str(value or ""))
    return sorted(runs, key=order)


# ---- the table ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    key: str
    """Machine name: the CSV header and the JSON key."""
    title: str
    """Header of the text and Markdown tables."""
    get: Callable[[dict], Any]
    kind: str = "text"
    """How the text table shows values: text, number, count, seconds."""


def _cell(value: Any, precise: bool = False) -> str:
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


def _human(value: Any, kind: str) -> str:
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
    return _cell(value)


def build_records(runs: list[Run], sort_tag: str | None, params: dict[Path, tuple[int | None, str]],
                  hparam_keys: list[str]) -> tuple[list[dict], list[Column]]:
    """One dict a run with every value the formats show, and the columns to show."""
    monitors = {run.monitor for run in runs}
    single = monitors.pop() if len(monitors) == 1 else None
    records = []
    for run in runs:
        best, final = run.best(run.monitor), run.final(run.monitor)
        count, source = params.get(run.path, (None, ""))
        record = {"run": display_path(run.path), "plugin": run.plugin, "data": run.data,
                  **{k: run.hparams.get(k) for k in hparam_keys},
                  "monitor": run.monitor, "mode": run.mode(run.monitor) if run.monitor else None,
                  "best": best.value if best else None, "best_step": best.step if best else None,
                  "final": final.value if final else None,
                  "epochs": run.epochs, "steps": run.steps, "seconds": run.seconds,
                  "params": count, "params_source": source, "status": run.status, "problem": run.problem}
        if sort_tag and sort_tag != single:
            point = run.best(sort_tag)
            record[f"best {sort_tag}"] = point.value if point else None
        records.append(record)

    def pick(key: str) -> Callable[[dict], Any]:
        return lambda record: record.get(key)

    columns = [Column("run", "run", pick("run")), Column("plugin", "plugin", pick("plugin")),
               Column("data", "data", pick("data"))]
    columns += [Column(k, k, pick(k), "number") for k in hparam_keys]
    if single is None:
        columns.append(Column("monitor", "monitor", pick("monitor")))
    columns += [Column("best", f"best {single}" if single else "best", pick("best"), "number"),
                Column("final", f"final {single}" if single else "final", pick("final"), "number")]
    if sort_tag and sort_tag != single:
        columns.append(Column(f"best {sort_tag}", f"best {sort_tag}", pick(f"best {sort_tag}"), "number"))
    columns += [Column("epochs", "epochs", pick("epochs"), "number"),
                Column("steps", "steps", pick("steps"), "number"),
                Column("seconds", "time", pick("seconds"), "seconds"),
                Column("params", "params", pick("params"), "count"),
                Column("status", "status", pick("status"))]
    return records, columns


def _status_cell(record: dict, width: int = 60) -> str:
    status, problem = record.get("status") or "", record.get("problem") or ""
    if status in ("corrupt", "failed") and problem:
        text = f"{status}: {problem}"
        return text if len(text) <= width else text[: width - 3] + "..."
    return status


def render_table(records: list[dict], columns: list[Column]) -> str:
    cells = [[_status_cell(r) if c.key == "status" else _human(c.get(r), c.kind) for c in columns] for r in records]
    titles = [c.title for c in columns]
    widths = [max([len(titles[i])] + [len(row[i]) for row in cells]) for i in range(len(columns))]
    right = [c.kind != "text" for c in columns]

    def line(values: list[str]) -> str:
        cells = (v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True))
        return "  ".join(cells).rstrip()

    return "\n".join([line(titles), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def render_markdown(records: list[dict], columns: list[Column]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c.title) for c in columns) + " |",
             "|" + "|".join("---:" if c.kind != "text" else "---" for c in columns) + "|"]
    for r in records:
        values = [_status_cell(r, 120) if c.key == "status" else _human(c.get(r), c.kind) for c in columns]
        lines.append("| " + " | ".join(esc(v) for v in values) + " |")
    return "\n".join(lines)


def render_csv(records: list[dict], columns: list[Column], extra: Sequence[str] = ()) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in columns] + list(extra))
    for r in records:
        writer.writerow([_cell(c.get(r), precise=True) for c in columns] + [_cell(r.get(k), True) for k in extra])
    return out.getvalue()


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def render(records: list[dict], columns: list[Column], fmt: str, runs: list[Run] | None = None) -> str:
    if fmt == "table":
        return render_table(records, columns)
    if fmt == "markdown":
        return render_markdown(records, columns)
    if fmt == "csv":
        return render_csv(records, columns, extra=[k for k in ("problem",) if any(r.get(k) for r in records)])
    rows = []
    for i, r in enumerate(records):
        row = {k: _json_value(v) for k, v in r.items()}
        if runs is not None:
            row["hparams"] = {k: _json_value(v) for k, v in sorted(runs[i].hparams.items())}
        rows.append(row)
    return json.dumps(rows, indent=2)


# ---- the plot -----------------------------------------------------------------------------------------------------

def run_labels(runs: list[Run], hparam_keys: list[str]) -> dict[Path, str]:
    """``lstm/version_1 hidden_size=8``: the run and its differing hyperparameters, short names where unambiguous."""
    short = {k: k.rpartition("/")[2] for k in hparam_keys}
    names = list(short.values())
    short = {k: s if names.count(s) == 1 else k for k, s in short.items()}
    labels = {}
    for run in runs:
        settings = " ".join(f"{short[k]}={_cell(run.hparams.get(k))}" for k in hparam_keys if k in run.hparams)
        labels[run.path] = f"{run.path.parent.name}/{run.path.name} {settings}".strip()
    return labels


def plot(runs: list[Run], tag: str | None, path: str | Path, labels: dict[Path, str]) -> int:
    """Curves of ``tag`` (each run's monitor when None) over steps, one panel per metric, the best point starred.
    Returns the number of curves drawn."""
    from matplotlib.figure import Figure  # the object API needs no pyplot and no display: Agg draws the PNG

    groups: dict[str, list[Run]] = {}
    for run in runs:
        name = tag or run.monitor
        if name and run.scalars.get(name):
            groups.setdefault(name, []).append(run)
    if not groups:
        raise DlbenchError(f"nothing to plot: no run shown logged {tag or 'its monitor metric'}.")
    fig = Figure(figsize=(9, 0.8 + 3.4 * len(groups)), dpi=100, layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, (name, members) in zip(axes, groups.items(), strict=True):
        for run in members:
            points = run.scalars[name]
            (line,) = ax.plot([p.step for p in points], [p.value for p in points], label=labels[run.path],
                              marker="o" if len(points) <= 40 else None, markersize=3, linewidth=1.5)
            best = run.best(name)
            if best is not None:
                ax.plot([best.step], [best.value], marker="*", markersize=12, color=line.get_color(), linestyle="")
        better = "lower" if members[0].mode(name) == "min" else "higher"
        ax.set_title(f"{name} ({better} is better; * marks each run's best)", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.savefig(path)
    return sum(len(m) for m in groups.values())


def _print(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:  # ``dlbench compare | head``: the reader has what it wanted; Python must not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# ---- the command --------------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    from dlbench.runs.run import find_runs, params_of, read_run

    paths = args.paths or ["lightning_logs"]
    if not args.paths and not Path("lightning_logs").exists():
        raise DlbenchError("no lightning_logs here. Run dlbench compare from the directory you trained in, or give "
                           "a log directory: dlbench compare path/to/lightning_logs")
    filters = [Filter.parse(f) for f in args.filter]
    fmt = args.format or (_SUFFIX_FORMATS.get(Path(args.output).suffix.lower()) if args.output else None) or "table"
    found = find_runs(paths)
    if not found:
        raise DlbenchError(f"no runs under {', '.join(map(str, paths))}: a run is a directory with TensorBoard event "
                           f"files, such as lightning_logs/lstm/version_0.")
    runs = select([read_run(p) for p in found], filters)
    if not runs:
        print(f"no run matches {' and '.join(args.filter)} ({len(found)} runs read).", file=sys.stderr)
        return 0
    params = {run.path: params_of(run) for run in runs}
    runs = sort_runs(runs, args.sort, params)
    keys = differing_hparams(runs)
    records, columns = build_records(runs, args.sort, params, keys)
    text = render(records, columns, fmt, runs)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"wrote {len(records)} runs to {args.output}", file=sys.stderr)
    else:
        _print(text)
    if args.plot:
        curves = plot(runs, args.sort, args.plot, run_labels(runs, keys))
        print(f"plotted {curves} curves to {args.plot}", file=sys.stderr)
    return 0
