"""``dlbench bench``: every model x seed as an ordinary ``dlbench fit`` run, each in its own process, then a
leaderboard in Markdown and CSV.

A run that crashes, runs out of memory or is given arguments its model rejects only fails itself: it is reported
with the last line of its error output, and the others go on. The runs land in ``lightning_logs/`` like any other,
so ``dlbench compare`` and TensorBoard show them too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dlbench.core.conventions import DEFAULT_SEED, GPU_MEMORY_TAG, SPEED_TAG, log_root
from dlbench.core.errors import DlbenchError

_ERROR_PREFIX = "dlbench: error: "


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--models", metavar="A,B,C", help="plugins to train, comma-separated")
    which.add_argument("--kind", metavar="KIND", help="every installed plugin of this data kind (images, series, ...)")
    parser.add_argument("--data", metavar="NAME", help="train every model on this registered dataset")
    parser.add_argument("--seeds", default="1", metavar="N|A,B,...",
                        help="how many seeds (N runs seeds 42, 43, ...; 42 is the default of dlbench fit) or a list")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--max_epochs", type=int, metavar="E", help="epochs per run (default: each plugin's own)")
    budget.add_argument("--max_time", metavar="HH:MM:SS", help="wall-time budget per run instead of an epoch count")
    parser.add_argument("--output", metavar="DIR", help="where the leaderboard goes (default: bench-<timestamp>/)")
    parser.add_argument("fit_args", nargs="*", metavar="-- FIT_ARGS",
                        help="after --: arguments for every dlbench fit, e.g. -- --trainer.accelerator gpu")
    parser.set_defaults(func=main)


@dataclass
class Result:
    """One model x seed run as the leaderboard needs it."""

    model: str
    seed: int
    status: str
    """ok, failed or interrupted."""
    reason: str = ""
    run_dir: str = ""
    data: str = ""
    metric: str = ""
    mode: str = "min"
    score: float | None = None
    best_step: int | None = None
    train_seconds: float | None = None
    time_to_best: float | None = None
    """Seconds from the start of training to the validation at which the monitor first reached its best."""
    samples_per_second: float | None = None
    speed_source: str = ""
    """logged (train/samples_per_second of dlbench.train.monitor.TrainingSpeed) or estimate (steps x batch size /
    time)."""
    params: int | None = None
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    wall_seconds: float = 0.0
    """The whole process: start-up, training, test."""


# ---- what to run --------------------------------------------------------------------------------------------------

def models_for(args: argparse.Namespace) -> list[str]:
    """The plugins to train, each name resolved in the registry before anything trains: a misspelt one is the
    registry's error (with its suggestion), not a failed run after the others trained. So is an unknown --data."""
    from dlbench.core import registry

    if args.data and not ("." in args.data and ":" not in args.data):  # a class path is dlbench fit's to check
        registry.dataset(args.data)
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        if not models:
            raise DlbenchError("--models is empty; give plugin names such as --models lstm,rnn.")
        for model in models:
            registry.resolve(registry.PLUGINS, model)
        return list(dict.fromkeys(models))
    working = [e for e in registry.entries(registry.PLUGINS) if e.spec is not None]
    models = [e.name for e in working if e.spec.data_kind == args.kind]
    if not models:
        kinds = sorted({e.spec.data_kind for e in working})
        raise DlbenchError(f"no installed plugin has data kind {args.kind!r}. Kinds: {', '.join(kinds)}.")
    return list(dict.fromkeys(models))


def seeds_for(text: str) -> list[int]:

    try:
        if "," in text:
            return list(dict.fromkeys(int(s) for s in text.split(",") if s.strip()))
        count = int(text)
    except ValueError:
        raise DlbenchError(f"--seeds {text!r}: give a count (--seeds 3) or a list (--seeds 1,2,3).") from None
    if count < 1:
        raise DlbenchError(f"--seeds must be at least 1, got {count}.")
    return [DEFAULT_SEED + i for i in range(count)]


def lightning_time(text: str) -> str:
    """``HH:MM:SS`` (or ``MM:SS``, ``DD:HH:MM:SS``) as the ``DD:HH:MM:SS`` string Lightning's max_time takes."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        raise DlbenchError(f"--max_time {text!r}: give HH:MM:SS, e.g. --max_time 00:10:00 for ten minutes.")
    return ":".join(["00"] * (4 - len(parts)) + [p.zfill(2) for p in parts])


def fit_command(model: str, seed: int, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "dlbench", "fit", "--model", model, "--seed_everything", str(seed)]
    if args.data:
        cmd += ["--data", args.data]
    if args.max_epochs is not None:
        cmd += ["--trainer.max_epochs", str(args.max_epochs)]
    elif args.max_time:  # the time budget decides alone, not the plugin's default epoch count
        cmd += ["--trainer.max_time", lightning_time(args.max_time), "--trainer.max_epochs", "-1"]
    # A progress bar in a log file is noise; what comes after -- may still turn it on.
    return cmd + ["--trainer.enable_progress_bar", "false", *args.fit_args]


# ---- running one --------------------------------------------------------------------------------------------------

def _wait(proc: subprocess.Popen) -> float | None:
    """Wait for ``proc``; return its peak resident memory in MB (the kernel's own account, where there is one)."""
    if not hasattr(os, "wait4"):
        proc.wait()
        return None
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, kilobytes on Linux
    return usage.ru_maxrss * scale / 2**20


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].removeprefix(_ERROR_PREFIX) if lines else ""


def find_run_dir(log_root: Path, pid: int, since: float, stderr_log: Path) -> Path | None:
    """The run directory the process ``pid`` wrote: its status.json names it. Failing that (it stopped before
    training began), the directory its summary printed."""
    host = socket.gethostname()
    for status_file in log_root.glob("*/*/status.json"):
        try:
            info = json.loads(status_file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and info.get("pid") == pid and info.get("host") == host \
                and float(info.get("started") or 0) >= since - 1:
            return status_file.parent
    try:
        match = re.search(r"^\s*run directory\s+(\S.*)$", stderr_log.read_text(errors="replace"), re.MULTILINE)
    except OSError:
        return None
    return Path(match.group(1).strip()) if match and Path(match.group(1).strip()).is_dir() else None


def run_one(model: str, seed: int, args: argparse.Namespace, logs: Path) -> Result:
    cmd = fit_command(model, seed, args)
    stem = f"{model}-seed{seed}"
    out_log, err_log = logs / f"{stem}.stdout.log", logs / f"{stem}.stderr.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.time()
    with open(out_log, "w") as out, open(err_log, "w") as err:
        err.write("$ " + " ".join(cmd) + "\n")
        err.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        try:
            rss = _wait(proc)
        except KeyboardInterrupt:  # the child got the Ctrl-C too: let it save its checkpoint, then stop the bench
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    result = Result(model=model, seed=seed, status="ok", wall_seconds=time.time() - start, peak_rss_mb=rss)
    logs_root = Path(log_root())
    run_dir = find_run_dir(logs_root, proc.pid, start, err_log)
    if proc.returncode != 0:
        result.status = "interrupted" if proc.returncode == 130 else "failed"
        result.reason = _last_line(err_log) or f"exit code {proc.returncode}"
        if proc.returncode < 0:
            result.reason = f"killed by signal {-proc.returncode}; {result.reason}"
    if run_dir is not None:
        result.run_dir = str(run_dir)
        _measure(result, run_dir, args)
    elif result.status == "ok":
        result.status, result.reason = "failed", "finished without a run directory under " + str(logs_root)
    return result


def _score_metric(model: str) -> tuple[str | None, str | None]:
    """The plugin's score metric (else its monitor) and the monitor, from its spec."""
    from dlbench.core import registry

    try:
        spec = registry.plugin(model)
    except DlbenchError:
        return None, None
    return spec.score or spec.monitor, spec.monitor


def _measure(result: Result, run_dir: Path, args: argparse.Namespace) -> None:
    from dlbench.runs.run import params_of, read_run

    run = read_run(run_dir)
    score_tag, monitor = _score_metric(result.model)
    monitor = run.monitor or monitor
    result.data = args.data or run.data
    if score_tag and run.final(score_tag) is not None:
        result.metric, result.score = score_tag, run.final(score_tag).value
    elif monitor and run.best(monitor) is not None:  # no test split: the best validation value stands in
        result.metric, result.score = monitor, run.best(monitor).value
    result.mode = run.mode(result.metric or monitor or "")
    best = run.best(monitor)
    if best is not None and run.started is not None:
        result.best_step, result.time_to_best = best.step, max(0.0, best.wall_time - run.started)
    result.train_seconds = run.seconds
    speeds = [p.value for p in run.scalars.get(SPEED_TAG, [])]
    if speeds:  # the first epoch pays for warm-up (allocator, caches, compilation); leave it out when there are more
        result.samples_per_second, result.speed_source = statistics.median(speeds[1:] or speeds), "logged"
    elif run.steps and run.seconds and isinstance(run.hparams.get("data/batch_size"), (int, float)):
        result.samples_per_second = run.steps * float(run.hparams["data/batch_size"]) / run.seconds
        result.speed_source = "estimate"
    result.params = params_of(run)[0]
    gpu = [p.value for p in run.scalars.get(GPU_MEMORY_TAG, [])]
    result.peak_gpu_mb = max(gpu) if gpu else None
    if result.status == "ok" and run.status not in ("finished", "unknown"):
        result.status, result.reason = "failed", f"run ended {run.status}: {run.problem}".rstrip(": ")
    elif result.status == "ok" and result.score is None:
        result.status, result.reason = "failed", f"logged neither {score_tag or 'a score'} nor {monitor or 'a monitor'}"


# ---- the leaderboard ----------------------------------------------------------------------------------------------

def leaderboard(results: list[Result]) -> list[dict[str, Any]]:
    """One row a model: mean and standard deviation of the score over its successful seeds, and the rest."""
    rows = []
    for model in dict.fromkeys(r.model for r in results):
        mine = [r for r in results if r.model == model]
        ok = [r for r in mine if r.status == "ok" and r.score is not None]
        failed = [r for r in mine if r not in ok]
        scores = [r.score for r in ok]
        row: dict[str, Any] = {
            "model": model, "data": next((r.data for r in mine if r.data), ""),
            "metric": ok[0].metric if ok else "", "mode": ok[0].mode if ok else "",
            "mean": statistics.fmean(scores) if scores else None,
            "std": statistics.stdev(scores) if len(scores) > 1 else None,
            "seeds": f"{len(ok)}/{len(mine)}",
            "train_seconds": _mean(r.train_seconds for r in ok),
            "time_to_best": _mean(r.time_to_best for r in ok),
            "samples_per_second": _mean(r.samples_per_second for r in ok),
            "speed_source": ok[0].speed_source if ok else "",
            "params": next((r.params for r in ok if r.params is not None), None),
            "peak_rss_mb": max((r.peak_rss_mb for r in mine if r.peak_rss_mb is not None), default=None),
            "peak_gpu_mb": max((r.peak_gpu_mb for r in mine if r.peak_gpu_mb is not None), default=None),
        }
        if not failed:
            row["status"] = "ok"
        else:
            reason = failed[0].reason or failed[0].status
            row["status"] = f"failed: {reason}" if not ok else f"{len(failed)} of {len(mine)} failed: {reason}"
        rows.append(row)

    def order(row: dict) -> tuple:
        mean = row["mean"]
        signed = (mean if row["mode"] == "min" else -mean) if mean is not None else 0.0
        return (mean is None, row["metric"], signed)

    rows.sort(key=order)
    ranks: dict[str, int] = {}  # models ranked among those of the same score metric only
    for row in rows:
        if row["mean"] is not None:
            ranks[row["metric"]] = ranks.get(row["metric"], 0) + 1
        row["rank"] = ranks[row["metric"]] if row["mean"] is not None else None
    return rows


def _mean(values) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _pick(key: str):
    return lambda row: row.get(key)


def _columns(rows: list[dict], marked: bool = True) -> list:
    """The leaderboard's columns; ``marked`` puts ~ before an estimated throughput (CSV has speed_source instead)."""
    from dlbench.runs.compare import Column

    def speed(row: dict) -> Any:
        value = row.get("samples_per_second")
        return f"~{value:.4g}" if marked and value is not None and row.get("speed_source") == "estimate" else value

    columns = [Column("rank", "#", _pick("rank"), "number"), Column("model", "model", _pick("model")),
               Column("data", "data", _pick("data")), Column("metric", "metric", _pick("metric")),
               Column("mean", "mean", _pick("mean"), "number"), Column("std", "std", _pick("std"), "number"),
               Column("seeds", "seeds ok", _pick("seeds"), "number"),
               Column("train_seconds", "train time", _pick("train_seconds"), "seconds"),
               Column("time_to_best", "time to best", _pick("time_to_best"), "seconds"),
               Column("samples_per_second", "samples/s", speed, "number"),
               Column("params", "params", _pick("params"), "count"),
               Column("peak_rss_mb", "peak RSS MB", _pick("peak_rss_mb"), "number")]
    if any(r.get("peak_gpu_mb") is not None for r in rows):
        columns.append(Column("peak_gpu_mb", "peak GPU MB", _pick("peak_gpu_mb"), "number"))
    return columns + [Column("status", "status", _pick("status"))]


def _machine() -> str:
    from dlbench.core.machine import describe

    return f"{platform.node()}: {describe()}"


def markdown_report(rows: list[dict], results: list[Result], command: str, started: str) -> str:
    from dlbench.runs.compare import render_markdown

    columns = _columns(rows)
    lines = [f"# dlbench bench, {started}", "", f"`{command}`", "", _machine(), "",
             render_markdown(rows, columns), "",
             "mean and std: the score metric (the plugin's test score, else its best validation value) over the "
             "seeds that finished; time to best: from the start of training to the validation epoch at which the "
             "monitor metric first reached its best; samples/s: median training throughput per epoch (~ marks an "
             "estimate from steps x batch size / training time, validation included); peak RSS: the largest "
             "resident memory of a run's process.", "", "## Runs", "",
             render_markdown([asdict(r) for r in results], _run_columns())]
    return "\n".join(lines) + "\n"


def _run_columns():
    from dlbench.runs.compare import Column

    keys = [("model", "text"), ("seed", "number"), ("status", "text"), ("metric", "text"), ("score", "number"),
            ("train_seconds", "seconds"), ("time_to_best", "seconds"), ("samples_per_second", "number"),
            ("params", "count"), ("peak_rss_mb", "number"), ("wall_seconds", "seconds"), ("run_dir", "text"),
            ("reason", "text")]
    return [Column(k, k, _pick(k), kind) for k, kind in keys]


def write_reports(out_dir: Path, rows: list[dict], results: list[Result], command: str, started: str) -> None:
    from dlbench.runs.compare import Column, render_csv

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "leaderboard.md").write_text(markdown_report(rows, results, command, started))
    (out_dir / "leaderboard.csv").write_text(render_csv(rows, _columns(rows, marked=False),
                                                        extra=["mode", "speed_source"]))
    per_run = [Column(k, k, _pick(k)) for k in Result.__dataclass_fields__]
    (out_dir / "runs.csv").write_text(render_csv([asdict(r) for r in results], per_run))


# ---- the command --------------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    models, seeds = models_for(args), seeds_for(args.seeds)
    if args.max_epochs is not None and args.max_epochs < 1:
        raise DlbenchError(f"--max_epochs must be at least 1, got {args.max_epochs}.")
    if args.max_time:
        lightning_time(args.max_time)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    out_dir = Path(args.output or f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = command_line(args)
    jobs = [(m, s) for m in models for s in seeds]
    results: list[Result] = []
    try:
        for i, (model, seed) in enumerate(jobs, start=1):
            print(f"[{i}/{len(jobs)}] {model} seed {seed} ...", file=sys.stderr, flush=True)
            result = run_one(model, seed, args, logs)
            results.append(result)
            print(f"[{i}/{len(jobs)}] {model} seed {seed}: {_summary(result)}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        if results:
            write_reports(out_dir, leaderboard(results), results, command, started)
            print(f"bench interrupted; the {len(results)} finished runs are in {out_dir}/leaderboard.md",
                  file=sys.stderr)
        raise
    rows = leaderboard(results)
    write_reports(out_dir, rows, results, command, started)
    from dlbench.runs.compare import render_markdown

    print(render_markdown(rows, _columns(rows)))
    print(f"\nleaderboard: {out_dir}/leaderboard.md and leaderboard.csv; per run: {out_dir}/runs.csv; "
          f"logs: {logs}/", file=sys.stderr)
    return 0 if any(r.status == "ok" for r in results) else 1


def command_line(args: argparse.Namespace) -> str:
    """The bench command as it was given, for the report."""
    import shlex

    parts = ["dlbench", "bench", *(["--models", args.models] if args.models else ["--kind", args.kind]),
             "--seeds", args.seeds]
    for flag in ("data", "max_epochs", "max_time", "output"):
        if getattr(args, flag) is not None:
            parts += [f"--{flag}", str(getattr(args, flag))]
    return shlex.join(parts + (["--", *args.fit_args] if args.fit_args else []))


def _summary(result: Result) -> str:
    if result.status != "ok":
        return f"{result.status}: {result.reason}"
    score = f"{result.metric} {result.score:.5g}" if result.score is not None else "no score"
    return f"{score} in {result.wall_seconds:.1f} s ({result.run_dir})"
