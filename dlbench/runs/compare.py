"""``dlbench compare``: runs side by side, read back from their event files by TensorBoard's reader.

Numbers of different datasets or metrics are not comparable, so runs are never ranked in one list across them: each
(dataset, monitor) group is a table of its own, best run first, with the hyperparameters its runs were given
differently (not the values derived from the data), the best monitor value, the test score beside its baseline and
the run's evaluations under its row. The text table fits the terminal (:mod:`dlbench.runs.table`); csv, json and
markdown keep every column.

Importing this module is cheap (``dlbench --help`` builds its parser); TensorBoard, matplotlib and torch are imported
only by the functions that need them, torch only to count parameters of runs that did not log the count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlbench.core.errors import DlbenchError
from dlbench.runs.table import UNICODE, Column, Symbols, cell, cut, fit_table, render_csv, render_markdown, symbols_for

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dlbench.runs.run import Run

FORMATS = ("table", "csv", "markdown", "json")
_SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".md": "markdown", ".markdown": "markdown"}
_BOOKKEEPING = {"plugin", "dataset", "data/class", "model/class", "plugin_dist", "dlbench_version"}
"""Hyperparameters that are no choice of the user's: shown in columns of their own, or not at all."""
_FIELDS = ("run", "plugin", "data", "status", "monitor")
"""What ``--filter`` accepts besides hyperparameter keys."""
_NAMED = ("run", "group", "path", "plugin", "data", "monitor", "best", "final", "test", "baseline", "epochs", "steps",
          "time", "params", "status", "evaluations")
"""What ``--columns`` accepts besides hyperparameter keys and scalar tags."""
_KEYS = {"time": "seconds"}
"""``--columns`` names whose column key differs (the CSV header and the JSON key)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="RUN_DIR_OR_LOGDIR",
                        help="log directories, plugin directories or run directories (default: lightning_logs)")
    parser.add_argument("--sort", metavar="METRIC",
                        help="sort each group by this scalar tag's best value, best first (default: the monitor); "
                             "also a hyperparameter key or epochs, steps, seconds, params")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="keep runs whose hyperparameter or field (plugin, data, status, run) matches; "
                             "repeatable; VALUE may list alternatives (a,b) and use * wildcards; KEY!=VALUE excludes")
    parser.add_argument("--columns", metavar="A,B,...",
                        help="the columns to show: run, plugin, data, best, final, test, baseline, epochs, steps, "
                             "time, params, status, monitor, a hyperparameter key (model/hidden_size) or a scalar tag "
                             "(its last value)")
    parser.add_argument("--all", action="store_true",
                        help="every column, hyperparameters derived from the data included, however wide")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: table, or from --output's suffix); "
                                                          "csv, json and markdown keep every column")
    parser.add_argument("--output", metavar="FILE", help="write the table to FILE instead of the terminal")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw the curves of the --sort metric (default: the monitor), one panel a group")
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
        # A run is named as the table shows it (lstm/version_3) or by its path.
        wanted = [v for w in self.values for v in (w, f"*/{w}")] if self.key == "run" else self.values
        hit = value is not None and any(_equal(value, w) for w in wanted)
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


# ---- groups and what differs in them ------------------------------------------------------------------------------

@dataclass
class Group:
    """Runs that can be ranked in one list: the same dataset and the same monitor metric."""

    data: str
    monitor: str | None
    runs: list[Run]

    @property
    def mode(self) -> str:
        return self.runs[0].mode(self.monitor) if self.monitor else "min"

    @property
    def plugins(self) -> list[str]:
        return sorted({run.plugin for run in self.runs})

    @property
    def name(self) -> str:
        """``sunspots: val/rmse``, the group column of csv, json and markdown."""
        return f"{self.data or 'unknown data'}: {self.monitor or 'no monitor metric'}"

    def heading(self, symbols: Symbols, sort: str | None) -> str:
        """``sunspots · lstm · val/rmse, lower is better (4 runs)``: the plugin only when every run is of it."""
        plugin = f" {symbols.dot} {self.plugins[0]}" if len(self.plugins) == 1 else ""
        better = f", {'lower' if self.mode == 'min' else 'higher'} is better" if self.monitor else ""
        order = f", sorted by {sort}" if sort and sort != self.monitor else ""
        count = len(self.runs)
        return (f"{self.data or 'unknown data'}{plugin} {symbols.dot} {self.monitor or 'no monitor metric'}{better}"
                f"{order} ({count} run{'s' * (count != 1)})")


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs by (dataset, monitor), keeping their order within each group; groups in order of their names."""
    groups: dict[tuple[str, str], Group] = {}
    for run in runs:
        groups.setdefault((run.data, run.monitor or ""), Group(run.data, run.monitor, [])).runs.append(run)
    return [groups[key] for key in sorted(groups)]


def differing_hparams(runs: list[Run], derived: bool = False) -> list[str]:
    """Hyperparameter keys that take more than one value among the runs that have them. A key only some runs have
    (another plugin's argument) is not a difference by itself: runs of several plugins stay readable. Values derived
    from the data (``model/target_mean``) count only with ``derived``."""
    keys = {k for run in runs for k in run.hparams} - _BOOKKEEPING
    if not derived:
        keys -= {k for run in runs for k in run.linked_keys}
    differ = [k for k in keys if len({cell(run.hparams[k], precise=True) for run in runs if k in run.hparams}) > 1]
    group = {"model": 0, "data": 1, "trainer": 2}
    return sorted(differ, key=lambda k: (group.get(k.partition("/")[0], 3), k))


def short_names(paths: Sequence[Path], roots: Sequence[str | Path]) -> dict[Path, str]:
    """Each run by its path under the log directory given (``lstm/version_3``), at least its last two parts; by its
    path from here where two would read the same."""
    bases = [Path(root).resolve() for root in roots]
    names = {}
    for path in paths:
        base = next((b for b in bases if path.is_relative_to(b)), None)
        parts = path.relative_to(base).parts if base is not None else ()
        names[path] = "/".join(parts if len(parts) >= 2 else path.parts[-2:])
    counts = Counter(names.values())
    return {path: name if counts[name] == 1 else display_path(path) for path, name in names.items()}


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


# ---- records and columns ------------------------------------------------------------------------------------------

def _score_tags(run: Run) -> tuple[str | None, str | None, str]:
    """The run's test score, its baseline and the baseline in words, as its plugin's spec names them."""
    from dlbench.core.spec import baseline_label

    spec = run.spec
    score = spec.score if spec is not None and spec.score else None
    if score is None and run.monitor:  # a plugin that is not installed here: the monitor's test counterpart
        score = next((t for t in ["test/" + run.monitor.rpartition("/")[2]] if t in run.scalars), None)
    baseline = spec.baseline if spec is not None and spec.baseline else None
    return score, baseline, baseline_label(spec, baseline) if baseline else ""


def _last(run: Run, tag: str | None) -> float | None:
    point = run.final(tag)
    return point.value if point is not None else None


def build_record(run: Run, group: Group, name: str, sort_tag: str | None, params: dict,
                 tags: Sequence[str] = ()) -> dict:
    """Everything the formats show of one run."""
    best = run.best(run.monitor)
    score, baseline, label = _score_tags(run)
    count, source = params.get(run.path, (None, ""))
    record = {"group": group.name, "run": name, "path": display_path(run.path), "plugin": run.plugin,
              "data": run.data, "monitor": run.monitor, "mode": run.mode(run.monitor) if run.monitor else None,
              "best": best.value if best else None, "best_step": best.step if best else None,
              "final": _last(run, run.monitor), "test_metric": score, "test": _last(run, score),
              "baseline_metric": baseline, "baseline": _last(run, baseline), "baseline_label": label,
              "epochs": run.epochs, "steps": run.steps, "seconds": run.seconds, "params": count,
              "params_source": source, "status": run.status, "problem": run.problem,
              "evaluations": [{"name": e.name, "stage": e.stage, "checkpoint": e.checkpoint, "status": e.status,
                               "metrics": e.metrics, "path": display_path(e.path)} for e in run.evaluations],
              "hparams": dict(sorted(run.hparams.items()))}
    if sort_tag:
        point = run.best(sort_tag)
        record[f"best {sort_tag}"] = point.value if point else None
    record.update({tag: _last(run, tag) for tag in tags})
    return record


def catalogue(records: list[dict], keys: Sequence[str], sort_tag: str | None, tags: Sequence[str] = (),
              group: Group | None = None, symbols: Symbols = UNICODE) -> dict[str, Column]:
    """Every column the records can fill, by key: named fields, the hyperparameters ``keys``, the best value of the
    ``--sort`` tag and the last value of ``tags``. Titles say the group's metrics and their direction."""
    from dlbench.runs.run import metric_mode

    def pick(key: str):
        return lambda record: record.get(key)

    def hparam(key: str):
        return lambda record: record["hparams"].get(key)

    def one(key: str) -> str | None:
        values = {r[key] for r in records if r[key]}
        return values.pop() if len(values) == 1 else None

    def arrow(mode: str | None) -> str:
        return f" {symbols.lower if mode == 'min' else symbols.higher}" if mode else ""

    ends = [k.rpartition("/")[2] for k in keys]
    numeric = {k: all(isinstance(r["hparams"].get(k), (int, float, type(None))) for r in records) for k in keys}
    monitor, mode = (group.monitor, group.mode) if group is not None and group.monitor else (None, None)
    label = (one("baseline_label") or "").partition(":")[0]
    sort_mode = metric_mode(sort_tag, records[0]["plugin"] if records else None) if sort_tag else None
    columns = [
        Column("group", "group", pick("group"), priority=20),
        Column("run", "run", pick("run"), priority=100, cut_start=True,  # cut only very long paths
               floor=max([min(len(r["run"]), 32) for r in records] or [8])),
        Column("path", "path", pick("path"), priority=10, cut_start=True),
        Column("plugin", "plugin", pick("plugin"), priority=70, floor=6),
        Column("data", "data", pick("data"), priority=65),
        *[Column(k, k, hparam(k), "number" if numeric[k] else "text", priority=60 - min(i, 19),
                 short=ends[i] if ends.count(ends[i]) == 1 else "") for i, k in enumerate(keys)],
        Column("monitor", "monitor", pick("monitor"), priority=20),
        Column("mode", "mode", pick("mode"), priority=10),
        Column("best", f"{monitor}{arrow(mode)}" if monitor else "best", pick("best"), "number",
               short=f"best{arrow(mode)}", priority=95),
        Column("best_step", "best step", pick("best_step"), "number", priority=10),
        Column("final", "final", pick("final"), "number", priority=50),
        *([Column(f"best {sort_tag}", f"{sort_tag}{arrow(sort_mode)}", pick(f"best {sort_tag}"), "number",
                  short=f"{sort_tag.rpartition('/')[2]}{arrow(sort_mode)}", priority=94)] if sort_tag else []),
        Column("test_metric", "test metric", pick("test_metric"), priority=10),
        Column("test", one("test_metric") or "test", pick("test"), "number", short="test", priority=88),
        Column("baseline_metric", "baseline metric", pick("baseline_metric"), priority=10),
        Column("baseline", label if 0 < len(label) <= 20 else "baseline", pick("baseline"), "number",
               short="baseline", priority=85),
        Column("baseline_label", "baseline is", pick("baseline_label"), priority=10),
        Column("epochs", "epochs", pick("epochs"), "number", priority=40),
        Column("steps", "steps", pick("steps"), "number", priority=30),
        Column("seconds", "time", pick("seconds"), "seconds", priority=45),
        Column("params", "params", pick("params"), "count", priority=35),
        Column("params_source", "params from", pick("params_source"), priority=10),
        Column("status", "status", pick("status"), priority=90, floor=11),
        Column("problem", "problem", pick("problem"), priority=10),
        Column("evaluations", "evaluations", lambda r: len(r["evaluations"]), "number", priority=10),
        *[Column(tag, tag, pick(tag), "number", short=tag.rpartition("/")[2], priority=55) for tag in tags],
    ]
    return {c.key: c for c in columns}


def parse_columns(text: str, runs: list[Run]) -> tuple[list[str], list[str], list[str]]:
    """``--columns a,b,c`` as column keys, the hyperparameter keys and the scalar tags among them."""
    hparams = {k for run in runs for k in run.hparams}
    tags = {t for run in runs for t in run.scalars}
    keys, keys_h, keys_t = [], [], []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        if name not in _NAMED and name not in _KEYS.values() and name not in hparams and name not in tags:
            raise DlbenchError(f"--columns {name}: no such column.{_close(name, set(_NAMED) | hparams | tags)} "
                               f"Columns: {', '.join(_NAMED)}, a hyperparameter key or a scalar tag.")
        key = _KEYS.get(name, name)
        keys.append(key)
        if name not in _NAMED and name not in _KEYS.values():
            (keys_h if name in hparams else keys_t).append(name)
    if not keys:
        raise DlbenchError("--columns names no column; e.g. --columns run,best,test,status.")
    return keys, keys_h, keys_t


# ---- the formats --------------------------------------------------------------------------------------------------

def _sublines(run: Run, record: dict) -> list[str]:
    """What goes under a run's row: its problem, then one line an evaluation with the metrics of its group."""
    lines = [f"{run.status}: {run.problem}"] if run.problem else []
    ends = [t.rpartition("/")[2] for t in (record["monitor"], record["test_metric"], record["baseline_metric"]) if t]
    baseline = (record["baseline_metric"] or "").rpartition("/")[2]
    label = record["baseline_label"].partition(":")[0]  # test/rmse_persistence -> persistence
    for e in run.evaluations:
        shown = [t for t in e.metrics if t.rpartition("/")[2] in ends] or sorted(e.metrics)[:3]
        parts = [e.name, *(f"{label if t.endswith('/' + baseline) else t} {cell(e.metrics[t])}" for t in shown)]
        parts += [f"({Path(e.checkpoint).name})"] if e.checkpoint else []
        parts += [e.status] if e.status not in ("", "success") else []
        lines.append("  ".join(parts))
    return lines


def render_groups(groups: list[Group], records: list[list[dict]], args: argparse.Namespace, width: int,
                  symbols: Symbols, sort_tag: str | None, picked: tuple[list[str], list[str], list[str]] | None) -> str:
    """One text table a group, under its heading; what a narrow table left out said under it."""
    blocks = []
    for group, rows in zip(groups, records, strict=True):
        keys = picked[1] if picked else differing_hparams(group.runs, derived=args.all)
        columns = catalogue(rows, keys, sort_tag if sort_tag != group.monitor else None, picked[2] if picked else (),
                            group, symbols)
        if picked:
            shown = picked[0]
        elif args.all:
            shown = ["run", "plugin", "data", *keys, "best", "final", f"best {sort_tag}", "test", "baseline",
                     "epochs", "steps", "seconds", "params", "status"]
        else:
            shown = ["run", *(["plugin"] if len(group.plugins) > 1 else []), *keys, "best", f"best {sort_tag}",
                     *(["test", "baseline"] if any(r["test"] is not None for r in rows) else []),
                     "epochs", "seconds", "status"]
        limit = None if args.all else width
        lines, left = fit_table(rows, [columns[k] for k in shown if k in columns], limit,
                                [_sublines(run, row) for run, row in zip(group.runs, rows, strict=True)], symbols)
        notes = []
        label = rows[0]["baseline_label"] if len({r["baseline_label"] for r in rows}) == 1 else ""
        if label and "baseline" in shown and label.partition(":")[0] not in lines[0]:  # the header does not say it
            notes.append(f"baseline: {label} ({rows[0]['baseline_metric']})")
        if left:
            notes.append(_left_out([{"seconds": "time"}.get(c.key, c.key) for c in left], width))
        heading = group.heading(symbols, sort_tag or args.sort)
        blocks.append("\n".join(cut(text, limit, symbols.ellipsis) if limit else text
                                for text in [heading, *lines, *notes]))
    return "\n\n".join(blocks)


def _left_out(names: list[str], width: int) -> str:
    """One line saying which columns a narrow table left out, as many of them named as fit."""
    for n in range(len(names), 0, -1):
        more = f" and {len(names) - n} more" if n < len(names) else ""
        text = f"left out for width: {', '.join(names[:n])}{more}; see --all or --columns"
        if len(text) <= width:
            break
    return text


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def render_machine(records: list[dict], columns: list[Column], fmt: str) -> str:
    """csv and markdown: one table of every run with the columns given; json: every record in full."""
    if fmt == "markdown":
        return render_markdown(records, columns)
    if fmt == "csv":
        return render_csv(records, columns)
    return json.dumps([_json_value(r) for r in records], indent=2)


# ---- the plot -----------------------------------------------------------------------------------------------------

def run_labels(groups: list[Group], names: dict[Path, str]) -> dict[Path, str]:
    """``lstm/version_1 hidden_size=8``: the run and the hyperparameters set differently in its group."""
    labels = {}
    for group in groups:
        keys = differing_hparams(group.runs)
        ends = [k.rpartition("/")[2] for k in keys]
        short = {k: e if ends.count(e) == 1 else k for k, e in zip(keys, ends, strict=True)}
        for run in group.runs:
            settings = " ".join(f"{short[k]}={cell(run.hparams.get(k))}" for k in keys if k in run.hparams)
            labels[run.path] = f"{names[run.path]} {settings}".strip()
    return labels


def figure(groups: list[Group], tag: str | None, names: dict[Path, str]) -> tuple[Figure, int]:
    """Curves of ``tag`` (each group's monitor when None) over steps, one panel a group (see
    :mod:`dlbench.runs.curves`), and the number of curves."""
    from dlbench.runs.curves import plot_figure

    panels = [(f"{g.data or 'unknown data'}: {name}", name, members) for g in groups for name in [tag or g.monitor]
              if name and (members := [r for r in g.runs if r.scalars.get(name)])]
    if not panels:
        raise DlbenchError(f"nothing to plot: no run shown logged {tag or 'its monitor metric'}.")
    return plot_figure(panels, run_labels(groups, names)), sum(len(m) for _, _, m in panels)


def _print(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:  # ``dlbench compare | head``: the reader has what it wanted; Python must not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# ---- the command --------------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    from dlbench.runs.run import attach_evaluations, find_runs, loose_evaluations, params_of, read_run

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
    runs = select(attach_evaluations([read_run(p) for p in found], loose_evaluations(paths)), filters)
    if not runs:
        print(f"no run matches {' and '.join(args.filter)} ({len(found)} runs read).", file=sys.stderr)
        return 0
    picked = parse_columns(args.columns, runs) if args.columns else None
    wants_params = fmt != "table" or args.all or args.sort == "params" or "params" in (picked or [[]])[0]
    params = {run.path: params_of(run) for run in runs} if wants_params else {}
    groups = group_runs(sort_runs(runs, args.sort, params))  # sorted once: each group keeps the order
    sort_tag = args.sort if args.sort in {t for run in runs for t in run.scalars} else None
    names = short_names([run.path for run in runs], paths)
    tags = picked[2] if picked else ()
    records = [[build_record(run, g, names[run.path], sort_tag, params, tags) for run in g.runs] for g in groups]
    symbols = UNICODE if args.output else symbols_for(getattr(sys.stdout, "encoding", None))  # files are UTF-8
    if fmt == "table":
        width = 100 if args.output else shutil.get_terminal_size((100, 24)).columns
        text = render_groups(groups, records, args, width, symbols, sort_tag, picked)
    else:
        flat = [r for rows in records for r in rows]
        keys = picked[1] if picked else differing_hparams(runs, derived=True)
        columns = catalogue(flat, keys, sort_tag if any(r["monitor"] != sort_tag for r in flat) else None, tags,
                            symbols=symbols)
        text = render_machine(flat, [columns[k] for k in picked[0]] if picked else list(columns.values()), fmt)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {len(runs)} runs to {args.output}", file=sys.stderr)
    else:
        _print(text)
    if args.plot:
        fig, curves = figure(groups, sort_tag, names)
        fig.savefig(args.plot)
        print(f"plotted {curves} curves to {args.plot}", file=sys.stderr)
    return 0
