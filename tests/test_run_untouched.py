"""Commands that read a run never change it: validate/test/predict, export, compress and compare on a finished, an
interrupted, a resumed and a killed run leave every file of the run (outside the derived folders: evaluations/,
predictions/, export/, compress/) byte-identical, add no file and remove none, and start no new version_N beside it;
validate/test put their output in a new RUN/evaluations/<stage>_N folder, predict (on the user's own CSV) in
RUN/predictions/predict_N, and each says where. ``sweep --show`` leaves its trial run unchanged too. Real Lightning
runs, each built once a session by real ``dlbench`` processes (Ctrl-C and kill -9 are signals to a process); the
commands that read them run ``dlbench.cli.main`` in the test process (``runs_fixtures.run_in_process``: the working
folder, environment, output and warnings a ``dlbench`` process would have, an exception escaping ``main`` counted as
the traceback a user would see), which spares each the seconds of importing torch and Lightning."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from conftest import dlbench
from runs_fixtures import (
    build_once,
    differences,
    hook_dir,
    hook_env,
    locked,
    run_in_process,
    shared_root,
    signal_callback,
    snapshot,
)

from dlbench.runs.directory import pid_alive

RUN = Path("lightning_logs") / "lstm" / "version_0"
STEPS = 7  # an epoch of the runs below: 207 training windows, 32 a batch
SMALL = ("--model", "lstm", "--model.hidden_size", "16", "--trainer.max_epochs", "3",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
STOP_AT = STEPS + 3  # inside the second epoch, after the first epoch's checkpoint


def _fit(cwd: Path, *args: str, env: dict) -> dict:
    result = dlbench("fit", *args, cwd=cwd, env=env)
    return {"rc": result.returncode, "out": result.stdout[-3000:], "err": result.stderr[-3000:]}


def _status(cwd: Path) -> dict:
    return json.loads((cwd / RUN / "status.json").read_text())


def _build(kind: str, hook: Path):
    env = hook_env(hook)

    def build(cwd: Path) -> dict:
        marker = cwd.parent / f"{cwd.name}.signal-sent"
        if kind == "finished":
            fit = _fit(cwd, *SMALL, env=env)
            assert fit["rc"] == 0, fit["err"]
            assert _status(cwd)["status"] == "finished"
            return {"fit": fit}
        how = signal.SIGKILL if kind == "killed" else signal.SIGINT
        fit = _fit(cwd, *SMALL, "--trainer.callbacks", signal_callback(STOP_AT, how, marker), env=env)
        assert marker.exists(), fit["err"]
        status = _status(cwd)
        if kind == "killed":
            assert fit["rc"] == -signal.SIGKILL, fit["err"]
            assert status["status"] == "running" and not pid_alive(status["pid"]), status
            assert (cwd / RUN / "checkpoints" / "last.ckpt").is_file()
            return {"fit": fit}
        assert fit["rc"] == 130, fit["err"]
        assert status["status"] == "interrupted" and status["steps"] == STOP_AT, status
        if kind == "interrupted":
            return {"fit": fit}
        config = (cwd / RUN / "config.yaml").read_bytes()
        resume = _fit(cwd, "--resume", str(RUN), env=env)
        assert resume["rc"] == 0, resume["err"]
        assert (cwd / RUN / "config.yaml").read_bytes() == config  # a resume without overrides keeps it
        assert _status(cwd)["status"] == "finished"
        assert sorted(p.name for p in (cwd / RUN).parent.iterdir()) == ["version_0"]
        return {"fit": fit, "resume": resume}

    return build


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory, worker_id) -> Path:
    return shared_root(tmp_path_factory, worker_id)


def _run(runs_root: Path, kind: str) -> Path:
    """The working folder of a run of this kind (its run is ``lightning_logs/lstm/version_0`` in it), built once a
    session whichever test or worker asks first."""
    cwd, _ = build_once(runs_root, f"untouched-{kind}", _build(kind, hook_dir(runs_root)))
    return cwd


KINDS = ["finished", "interrupted", "resumed", "killed"]
INPUT = "series.csv"  # the user's own series for predict: the run's column (sunspots), more than one window
COMMANDS = {  # command line (RUN: the run directory, relative to the working folder), the stage and the file it writes
    "validate": (["validate", "--run", "RUN"], "validate"),
    "test": (["test", "--run", "RUN"], "test"),
    "test-last": (["test", "--run", "RUN", "--ckpt_path", "last"], "test"),
    "predict": (["predict", "--run", "RUN", "--input", INPUT], "predict"),
    "export": (["export", "RUN"], None),
    "compress-quantize": (["compress", "RUN", "--method", "quantize"], None),
    "compare": (["compare", "lightning_logs"], None),
}
OUTPUT = {"validate": ("evaluations", "evaluation.json"), "test": ("evaluations", "evaluation.json"),
          "predict": ("predictions", "predictions.csv")}  # where each stage writes, inside the run
COMPARE_STATUS = {"finished": "finished", "interrupted": "interrupted", "resumed": "finished", "killed": "killed"}


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", KINDS)
def test_reading_a_run_leaves_it_untouched(runs_root, kind, command):
    cwd = _run(runs_root, kind)
    run = cwd / RUN
    args, stage = COMMANDS[command]
    args = [str(RUN) if a == "RUN" else a for a in args]
    derived, written = OUTPUT.get(stage, ("evaluations", None))
    with locked(runs_root / f"untouched-{kind}-commands"):  # one command at a time on a run, across workers
        if command == "predict" and not (cwd / INPUT).exists():
            (cwd / INPUT).write_text("year,sunspots\n" + "".join(f"{1990 + i},{40 + 9 * (i % 7)}\n" for i in range(15)))
        before, siblings, outputs = snapshot(run), _entries(run.parent), _entries(run / derived)
        result = run_in_process(*args, cwd=cwd, env=hook_env(hook_dir(runs_root)))
        after = snapshot(run)
        siblings_after, outputs_after = _entries(run.parent), _entries(run / derived)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert result.left_behind == [], f"{' '.join(args)} left behind {result.left_behind}"
    assert differences(before, after) == [], f"{' '.join(args)} changed the {kind} run: {differences(before, after)}"
    assert siblings_after == siblings, f"{' '.join(args)} made {sorted(set(siblings_after) - set(siblings))} " \
                                       f"beside the run in lightning_logs/lstm"
    assert _entries(cwd / "lightning_logs") == ["lstm"], _entries(cwd / "lightning_logs")
    if stage is not None:
        new = sorted(set(outputs_after) - set(outputs))
        assert len(new) == 1 and new[0].startswith(f"{stage}_"), \
            f"expected one new {derived}/{stage}_N folder, got {new} (before: {outputs})"
        folder = RUN / derived / new[0]
        assert (cwd / folder / written).is_file(), _entries(cwd / folder)
        assert str(folder) in output or str(cwd / folder) in output, \
            f"the output does not name {folder}: {output[-1500:]}"
    if command == "compare":
        (row,) = [line for line in result.stdout.splitlines()
                  if line.startswith(str(RUN.relative_to("lightning_logs")))]
        assert row.split()[-1] == COMPARE_STATUS[kind], row


def test_sweep_show_leaves_its_trial_run_untouched(runs_root):
    def build(cwd: Path) -> dict:
        result = dlbench("sweep", "--model", "lstm", "--name", "tiny", "--param", "model.hidden_size=int:4:8",
                         "--trials", "1", "--", "--trainer.max_epochs", "1", "--trainer.enable_model_summary",
                         "false", cwd=cwd)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return {}

    pytest.importorskip("optuna")
    cwd, _ = build_once(runs_root, "untouched-sweep", build)
    (trial,) = (cwd / "lightning_logs" / "lstm").iterdir()
    before, siblings = snapshot(trial), _entries(trial.parent)
    result = run_in_process("sweep", "--name", "tiny", "--show", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.left_behind == [], result.left_behind
    assert result.stdout.startswith("sweep tiny: 1 trial"), result.stdout
    assert differences(before, snapshot(trial)) == []
    assert _entries(trial.parent) == siblings
