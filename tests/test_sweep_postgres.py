"""``dlbench sweep`` shared through a real PostgreSQL server: two worker processes on one study, each trial run once;
a worker killed with SIGKILL mid-trial loses no trial; ``--show``; bad URLs are one-paragraph errors.

The server is a throwaway cluster on 127.0.0.1 (tests/postgres.py); these tests skip only where PostgreSQL or
psycopg is not installed. The trials are tiny LSTM runs, as in tests/test_sweep.py.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

import postgres  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from dlbench.cli import main as cli_main  # noqa: E402
from dlbench.tools import sweep as sweep_mod  # noqa: E402

postgres_server = postgres.postgres_server  # the fixtures, for the tests of this module
postgres_url = postgres.postgres_url

TINY = ["--", "--trainer.max_epochs", "2", "--trainer.enable_model_summary", "false"]
SPACE = ["--model", "lstm", "--sampler", "random", "--pruner", "none", "--param", "model.lr=float:1e-3:1e-2:log",
         "--param", "model.hidden_size=int:4:16"]
HEARTBEAT = "3"  # a trial silent for sweep.GRACE * 3 = 12 s is lost: short for a test, long for a busy CPU


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "DLBENCH_LOG_DIR"}, "PYTHONUNBUFFERED": "1"}


def _worker(workdir: Path, args: list[str], log: Path) -> subprocess.Popen:
    """A ``dlbench sweep`` worker as a user starts one: its own process group (a job scheduler's kill takes the
    group), output to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "dlbench", "sweep", *args], cwd=workdir, env=_env(),
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _finish(procs: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):  # the test's assertions say what is still running
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))


def _kill(proc: subprocess.Popen) -> None:
    """Clean-up after a failed test: the worker's process group, and the trials it left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _load(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url)


def _runs(workdir: Path, name: str) -> list[Path]:
    return sorted((workdir / "lightning_logs" / "lstm").glob(f"sweep-{name}-trial_*"))


def _params_of_run(run_dir: Path) -> tuple:
    init = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_args"]
    return round(init["lr"], 12), init["hidden_size"]


def _params(trial) -> tuple:
    return round(trial.params["model.lr"], 12), trial.params["model.hidden_size"]


def test_two_workers_share_one_study_and_run_each_trial_once(postgres_url, tmp_path):
    name = "shared"
    args = [*SPACE, "--storage", postgres_url, "--name", name, "--trials", "4", "--heartbeat", HEARTBEAT, *TINY]
    logs = [tmp_path / "worker_a.log", tmp_path / "worker_b.log"]
    # Both at once, on a database with no tables yet: both create Optuna's schema and the study at the same moment.
    procs = [_worker(tmp_path, args, log) for log in logs]
    try:
        _finish(procs, timeout=480)
        outs = [log.read_text() for log in logs]
        assert [p.returncode for p in procs] == [0, 0], outs
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill(proc)

    trials = _load(postgres_url, name).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, [(t.number, t.state, t.user_attrs) for t in trials]
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    # Both workers ran trials, and each worker's summary has the whole study: the first to finish waited for the other.
    assert {t.user_attrs["pid"] for t in trials} == {p.pid for p in procs}
    for out in outs:
        assert f"sweep {name}: 4 trials (4 complete)" in out, out
    # Every trial ran exactly once: one run directory each (a second run of a number would have made "-2"), one log.
    runs = _runs(tmp_path, name)
    assert [r.name for r in runs] == sorted(f"sweep-{name}-trial_{t.number}" for t in trials)
    assert sorted(Path(t.user_attrs["run_dir"]).name for t in trials) == [r.name for r in runs]
    assert len(list((tmp_path / "sweeps" / name / "trials").glob("trial_*.log"))) == 4
    # Each run trained with its own trial's values, and no values twice: workers that ask together draw apart.
    by_run = collections.Counter(_params_of_run(r) for r in runs)
    assert by_run == collections.Counter(_params(t) for t in trials)
    assert len(by_run) == 4, by_run
    for t in trials:
        assert t.intermediate_values, f"trial {t.number} reported no validation to the Postgres study"
        assert t.value == pytest.approx(min(t.intermediate_values.values()))

    # --show reads the study back from PostgreSQL without running anything.
    shown = subprocess.run([sys.executable, "-m", "dlbench", "sweep", "--storage", postgres_url, "--name", name,
                            "--show"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    best = min(trials, key=lambda t: t.value)
    assert f"sweep {name}: 4 trials (4 complete)" in shown.stdout
    assert f"best: trial {best.number}, val/rmse {best.value:.6g} (minimize)" in shown.stdout
    table = [ln.split()[0] for ln in shown.stdout.splitlines()[2:7]]
    assert table[0] == "trial" and sorted(table[1:]) == ["0", "1", "2", "3"]
    assert len(_load(postgres_url, name).get_trials()) == 4 and len(_runs(tmp_path, name)) == 4


def test_a_worker_killed_mid_trial_loses_no_trial(postgres_url, tmp_path):
    name = "killed"
    args = [*SPACE, "--storage", postgres_url, "--name", name, "--trials", "2", "--heartbeat", HEARTBEAT, *TINY]
    victim = _worker(tmp_path, args, tmp_path / "victim.log")
    survivor = _worker(tmp_path, args, tmp_path / "survivor.log")
    child = killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.5)
            try:
                trials = _load(postgres_url, name).get_trials()
            except KeyError:  # the study is not created yet
                continue
            mine = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("pid") == victim.pid]
            if mine and "child_pid" in mine[0].user_attrs:
                killed, child = mine[0], mine[0].user_attrs["child_pid"]
        assert killed is not None, "the victim never started a trial: " + (tmp_path / "victim.log").read_text()
        # SIGKILL, no clean-up, as when a machine dies: the worker's group and its trial's dlbench fit (which runs in
        # a session of its own). The dead worker is not reaped yet, so its pid still answers kill(pid, 0), as a pid
        # on another machine cannot be checked at all: only the missing heartbeat tells the survivor.
        os.killpg(victim.pid, signal.SIGKILL)
        os.killpg(child, signal.SIGKILL)

        survivor.wait(timeout=400)
        out = (tmp_path / "survivor.log").read_text()
        assert survivor.returncode == 0, out
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                _kill(proc)

    trials = {t.number: t for t in _load(postgres_url, name).get_trials()}
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(complete) == 2, [(t.number, t.state, t.user_attrs) for t in trials.values()]
    lost = trials[killed.number]
    assert lost.state == TrialState.FAIL and "interrupted" not in lost.user_attrs  # failed by heartbeat, not by pid
    (rerun,) = [t for t in trials.values() if t.user_attrs.get("rerun_of") == killed.number]
    assert rerun.state == TrialState.COMPLETE and _params(rerun) == _params(killed)
    assert rerun.user_attrs["pid"] == survivor.pid
    assert len(trials) == 3  # the two wanted and the lost one: nothing ran twice
    assert f"trials {killed.number} were running in a worker that is gone: they run again" in out
    assert f"sweep {name}: 3 trials (2 complete, 1 fail)" in out
    assert f"lost: its worker stopped sending heartbeats (run again as trial {rerun.number})" in out
    # One run directory a completed trial; the killed one may have died before its fit made its own.
    runs = {r.name for r in _runs(tmp_path, name)}
    assert {f"sweep-{name}-trial_{t.number}" for t in complete} <= runs <= {f"sweep-{name}-trial_{n}" for n in trials}
    assert all((tmp_path / t.user_attrs["run_dir"] / "config.yaml").is_file() for t in complete)


def test_show_names_what_a_database_holds(postgres_url, tmp_path, capsys):
    study = optuna.create_study(study_name="other", storage=postgres_url)
    study.enqueue_trial({"x": 1.0})
    trial = study.ask()
    trial.suggest_float("x", 0, 2)
    study.tell(trial, 0.25)
    assert cli_main(["sweep", "--storage", postgres_url, "--show"]) == 0  # the only study: no --name needed
    out = capsys.readouterr().out
    assert "sweep other: 1 trials (1 complete)" in out and "best: trial 0, value 0.25 (minimize)" in out
    assert cli_main(["sweep", "--storage", postgres_url, "--name", "nope", "--show"]) == 2
    err = capsys.readouterr().err
    assert "no study 'nope' in postgresql+psycopg://" in err and "it holds other. Choose one with --name" in err
    assert cli_main(["sweep", "--show", "--name", "nope", "--dir", str(tmp_path)]) == 2
    assert "there is no study database" in capsys.readouterr().err


def _bad_storage_run(url: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlbench", "sweep", "--model", "lstm", "--param",
                           "model.lr=float:1e-3:1e-2", "--trials", "1", "--storage", url, *TINY],
                          cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql+psycopg://postgres@127.0.0.1:{free}/dlbench", "connection"),  # nothing listens there
    ("postgresql+psycopg://postgres@127.0.0.1:notaport/dlbench", "'notaport'"),
    ("postgresql+nosuchdriver://postgres@127.0.0.1/dlbench", "nosuchdriver"),
    pytest.param("postgresql+psycopg2://postgres@127.0.0.1/dlbench", "pip install 'dlbench[postgres]'",
                 marks=pytest.mark.skipif(importlib.util.find_spec("psycopg2") is not None,
                                          reason="psycopg2 is installed: this URL's driver is not missing here")),
])
def test_unreachable_or_malformed_url_is_one_paragraph(url, expected, tmp_path):
    result = _bad_storage_run(url.format(free=postgres.free_port()), tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    (message,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert message.startswith("dlbench: error: cannot open the study database postgresql+")
    assert expected in message.lower() and "--storage" in message


def test_missing_database_on_a_live_server_is_one_paragraph(postgres_server, tmp_path):
    result = _bad_storage_run(postgres_server.url("no_such_db"), tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert 'database "no_such_db" does not exist' in result.stderr and "(the database must exist)" in result.stderr


def test_printed_urls_hide_the_password():
    shown = sweep_mod.shown_url("postgresql+psycopg://me:s3cret@db.example:5432/sweeps")
    assert "s3cret" not in shown and shown.startswith("postgresql+psycopg://me:")
