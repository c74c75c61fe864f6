"""``dlbench sweep``: real sweeps of tiny LSTM runs, resumed, interrupted, with failing trials; the search space."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import dlbench

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

from dlbench.cli import main as cli_main  # noqa: E402
from dlbench.core.errors import DlbenchError  # noqa: E402
from dlbench.runs import read_scalars  # noqa: E402
from dlbench.tools import sweep as sweep_mod  # noqa: E402

TINY = ["--", "--trainer.max_epochs", "2", "--trainer.enable_model_summary", "false"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Sweeps and their runs land in a fresh directory, as for a user who runs dlbench sweep there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLBENCH_LOG_DIR", raising=False)
    return tmp_path


def _study(workdir: Path):
    (db,) = workdir.glob("sweeps/*/study.db")
    return optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}"), db.parent


def test_four_trial_sweep_records_ordinary_runs_and_the_best(workdir, capsys):
    code = cli_main(["sweep", "--model", "lstm", "--param", "model.hidden_size=int:4:16:log",
                           "--param", "model.lr=float:1e-3:1e-2:log", "--trials", "4", "--jobs", "2", *TINY])
    out = capsys.readouterr().out
    assert code == 0, out
    study, directory = _study(workdir)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir.parent == Path("lightning_logs") / "lstm" and run_dir.name.endswith(f"-trial_{t.number}")
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["model"]["init_args"]["hidden_size"] == t.params["model.hidden_size"]
        assert config["model"]["init_args"]["lr"] == pytest.approx(t.params["model.lr"])
        assert t.intermediate_values, "the pruning callback reported nothing to the study"
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == [0, 1]
            assert t.value == pytest.approx(min(v for _, v in read_scalars(run_dir)["val/rmse"]))
    best = study.best_trial
    assert f"best: trial {best.number}, val/rmse {best.value:.6g} (minimize)" in out
    assert f"reproduce: dlbench fit --config {Path(best.user_attrs['run_dir']) / 'config.yaml'}" in out
    assert (directory / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (directory / "summary.txt").read_text().startswith(f"sweep {directory.name}: 4 trials")

    # --show with --name alone reads the sweep's own SQLite study back, without running a trial.
    assert cli_main(["sweep", "--name", directory.name, "--show"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"sweep {directory.name}: 4 trials") and f"best: trial {best.number}" in shown
    assert len(study.get_trials()) == 4
    assert cli_main(["sweep", "--name", "nothing-here", "--show"]) == 2
    assert "there is no study database" in capsys.readouterr().err
    assert not (workdir / "sweeps" / "nothing-here").exists()  # looking did not create an empty database


def test_resume_runs_only_the_missing_trials_and_failures_are_recorded(workdir, capsys):
    # hidden_size 0 makes dlbench fit fail (the model refuses it): two of the four grid points fail.
    args = ["--model", "lstm", "--sampler", "grid", "--param", "model.hidden_size=choice:0,8",
            "--param", "model.num_layers=choice:1,2", "--jobs", "2", *TINY]
    first = cli_main(["sweep", "--trials", "2", *args])
    capsys.readouterr()
    study, directory = _study(workdir)
    before = {t.number: (t.state, t.datetime_complete) for t in study.get_trials()}
    assert len(before) == 2 and all(s in (TrialState.COMPLETE, TrialState.FAIL) for s, _ in before.values())
    assert first == (0 if any(s == TrialState.COMPLETE for s, _ in before.values()) else 1)
    logs = {n: (directory / "trials" / f"trial_{n}.log").stat().st_mtime_ns for n in before}

    assert cli_main(["sweep", "--trials", "4", *args]) == 0
    out = capsys.readouterr().out
    assert "2 of 4 trials in the study" in out
    trials = study.get_trials()
    assert len(trials) == 4
    assert {n: (t.state, t.datetime_complete) for n, t in enumerate(trials) if n < 2} == before
    assert {n: (directory / "trials" / f"trial_{n}.log").stat().st_mtime_ns for n in logs} == logs
    points = {(t.params["model.hidden_size"], t.params["model.num_layers"]) for t in trials}
    assert points == {(0, 1), (0, 2), (8, 1), (8, 2)}
    for t in trials:
        if t.params["model.hidden_size"] == 0:
            assert t.state == TrialState.FAIL and "hidden_size must be >= 1, got 0" in t.user_attrs["error"]
        else:
            assert t.state == TrialState.COMPLETE and t.value > 0
    assert out.count("fail ") >= 2 and "hidden_size must be >= 1" in out

    assert cli_main(["sweep", "--trials", "4", *args]) == 0  # the same command once more: nothing left to run
    assert "4 of 4 trials in the study" in capsys.readouterr().out and len(study.get_trials()) == 4


def test_trial_of_a_killed_sweep_runs_again(workdir, capsys):
    args = ["--model", "lstm", "--param", "model.hidden_size=choice:8,12", "--trials", "1", *TINY]
    env = {k: v for k, v in os.environ.items() if k != "DLBENCH_LOG_DIR"}
    proc = subprocess.Popen([sys.executable, "-m", "dlbench", "sweep", *args], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = None
    try:
        deadline = time.monotonic() + 300
        while child is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
            dbs = list(workdir.glob("sweeps/*/study.db"))
            try:  # the database file may exist before the study is in it
                # Through storage_for, as a second worker would: it may be creating the tables the sweep creates.
                storage = sweep_mod.storage_for(f"sqlite:///{dbs[0]}")
                trials = optuna.load_study(study_name=dbs[0].parent.name, storage=storage).trials
            except (IndexError, KeyError):
                continue
            child = trials[0].user_attrs.get("child_pid") if trials else None
        assert child is not None, "the sweep never started its trial"
    finally:
        proc.kill()  # SIGKILL: no chance to clean up, as when a machine or a job scheduler kills it
        proc.wait()
        if child is not None:
            os.killpg(child, signal.SIGKILL)

    assert cli_main(["sweep", *args]) == 0
    assert "trials 0 were running when an earlier sweep stopped: they run again" in capsys.readouterr().out
    study, _ = _study(workdir)
    killed, rerun = study.get_trials()
    assert killed.state == TrialState.FAIL and killed.user_attrs["interrupted"] is True
    assert rerun.state == TrialState.COMPLETE and rerun.params == killed.params
    assert rerun.user_attrs["rerun_of"] == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("model.hidden_size=int:8:64:log", dict(kind="int", low=8, high=64, log=True)),
    ("--model.lr=float:1e-4:1e-2", dict(key="model.lr", kind="float", low=1e-4, high=1e-2, log=False)),
    ("trainer.max_epochs=int:2:10:step=2", dict(kind="int", step=2)),
    ("model.hidden_sizes=choice:[8, 8],[16],0.5,true,gelu", dict(choices=("[8, 8]", "[16]", 0.5, True, "gelu"))),
])
def test_param_syntax(text, expected):
    param = sweep_mod.parse_param(text)
    assert {k: getattr(param, k) for k in expected} == expected


@pytest.mark.parametrize(("text", "message"), [
    ("model.lr", "is not KEY=SPEC"),
    ("model.lr=normal:0:1", "the kind must be int, float or choice"),
    ("model.lr=float:0:1:log", "a log scale needs a positive low bound"),
    ("model.hidden_size=int:64:8", "above the high bound"),
    ("model.hidden_size=int:8:x", "with int bounds"),
    ("model.hidden_size=int:8:64:lg", "unknown option 'lg'"),
    ("model.act=choice:relu,relu", "lists a choice twice"),
])
def test_bad_params_are_clear_errors(text, message):
    with pytest.raises(DlbenchError, match=message):
        sweep_mod.parse_param(text)


def test_sampled_values_on_the_command_line():
    params = {"model.lr": 0.001, "model.bidirectional": True, "model.hidden_sizes": "[8, 8]", "seed_everything": 3}
    assert sweep_mod.overrides(params) == ["--model.lr", "0.001", "--model.bidirectional", "true",
                                           "--model.hidden_sizes", "[8, 8]", "--seed_everything", "3"]


def test_definition_checks_before_any_trial(workdir):
    grid = sweep_mod.Sweep(model="lstm", sampler="grid", params=[sweep_mod.parse_param("model.lr=float:1e-3:1e-2")])
    with pytest.raises(DlbenchError, match="grid sampling needs a short list of values for model.lr"):
        grid.resolve()
    with pytest.raises(DlbenchError, match="unknown plugin 'lsmt'"):
        sweep_mod.Sweep(model="lsmt", params=[sweep_mod.parse_param("model.lr=float:1e-3:1e-2")]).resolve()
    with pytest.raises(DlbenchError, match="at least one --param"):
        sweep_mod.Sweep(model="lstm", params=[]).resolve()
    sizes = sweep_mod.Sweep(model="lstm", sampler="grid", params=[sweep_mod.parse_param("model.window=int:4:8:step=2"),
                                                                  sweep_mod.parse_param("model.dropout=choice:0,0.1")])
    sizes.resolve()
    assert sizes.trials == 6 and sizes.metric == "val/rmse" and sizes.direction == "minimize"


def test_misspelt_param_is_refused_before_a_study_or_run_exists(tmp_path):
    result = dlbench("sweep", "--model", "lstm", "--param", "model.hiden_size=int:8:64", "--trials", "2",
                     "--", "--trainer.max_epochs", "1", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "dlbench: error: --param model.hiden_size: lstm's model LSTMForecaster has no argument 'hiden_size'. " \
           "Did you mean model.hidden_size?" in result.stderr
    assert "'dlbench info lstm'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "trial" not in result.stdout
    assert list(tmp_path.iterdir()) == []  # no sweeps/<name>/study.db, no lightning_logs/


@pytest.mark.parametrize(("argv", "message"), [
    (["--param", "trainer.max_epoch=int:1:3"], "lightning's Trainer (with dlbench's steps_per_call) has no argument "
                                               "'max_epoch'. Did you mean trainer.max_epochs"),
    (["--param", "data.windw=int:4:8"], "lstm's data module SeriesDataModule has no argument 'windw'. Did you mean "
                                        "data.window?"),
    (["--data", "sunspots", "--param", "data.zzz=int:4:8"], "dataset sunspots's data module SeriesDataModule has no "
                                                            "argument 'zzz'. It takes batch_size, column, path"),
    (["--data", "sunspot", "--param", "data.window=int:4:8"], "unknown dataset 'sunspot'. Did you mean 'sunspots'"),
    (["--param", "modle.lr=float:1e-3:1e-2"], "dlbench fit has no argument group 'modle'. Did you mean model.lr?"),
    (["--param", "model.lr=float:1e-3:1e-2", "--trials", "0"], "--trials must be >= 1, got 0"),
    (["--param", "model.num_layers=choice:1,2", "--sampler", "grid", "--trials", "0"], "--trials must be >= 1, got 0"),
])
def test_bad_names_and_counts_are_refused_before_any_trial(workdir, capsys, argv, message):
    assert cli_main(["sweep", "--model", "lstm", *argv, *TINY]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err and "trial" not in captured.out
    assert list(workdir.iterdir()) == []


def test_real_argument_names_pass_the_check(workdir):
    keys = ["model.init_args.lr", "model.hidden_size", "data.batch_size", "trainer.steps_per_call",
            "trainer.gradient_clip_val", "seed_everything", "optimizer.init_args.lr"]
    sweep = sweep_mod.Sweep(model="lstm", data="sunspots", params=[sweep_mod.parse_param(f"{k}=choice:1,2")
                                                                   for k in keys])
    sweep.resolve()
    assert sweep.trials == 20 and list(workdir.iterdir()) == []

    import lightning

    class Base:
        def __init__(self, size: int = 3) -> None: ...

    class Forwards(Base):  # **kwargs that go to a parent's named arguments
        def __init__(self, depth: int = 2, **kwargs) -> None: ...

    class Open(lightning.LightningModule):  # **kwargs into Lightning's own: anything may be meant, nothing refused
        def __init__(self, width: int = 1, **kwargs) -> None: ...

    assert sweep_mod.init_arguments(Forwards) == {"depth", "size"} and sweep_mod.init_arguments(Open) is None


def test_same_name_other_definition_is_refused(workdir):
    def make(metric: str) -> sweep_mod.Sweep:
        s = sweep_mod.Sweep(model="lstm", name="mine", metric=metric, params=[sweep_mod.parse_param("model.lr="
                                                                                                  "float:1e-3:1e-2")])
        s.resolve()
        return s

    study, _ = sweep_mod.open_study(make("val/rmse"))
    assert study.study_name == "mine" and (workdir / "sweeps" / "mine" / "study.db").is_file()
    with pytest.raises(DlbenchError, match=r"was started with other settings \(metric differ\)"):
        sweep_mod.open_study(make("val/loss"))
    sweep_mod.open_study(make("val/rmse"))  # the same definition continues the study


def test_objective_is_the_best_finite_value_logged():
    scalars = {"val/rmse": [(0, 9.0), (1, float("nan")), (2, 4.0), (3, 6.0)], "val/acc": [(0, float("inf"))]}
    assert sweep_mod.best_logged(scalars, "val/rmse", "minimize") == 4.0
    assert sweep_mod.best_logged(scalars, "val/rmse", "maximize") == 9.0
    assert math.isnan(sweep_mod.best_logged(scalars, "val/acc", "maximize"))


def test_modules_import_neither_torch_nor_optuna():
    code = ("import sys, dlbench.tools.scaffold, dlbench.tools.export, dlbench.tools.sweep; "
            "print(sorted(m for m in sys.modules if "
            "m.split('.')[0] in ('torch', 'lightning', 'optuna', 'onnx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unreachable_storage_is_a_clear_error(workdir):
    s = sweep_mod.Sweep(model="lstm", storage="sqlite:////nonexistent/dir/x.db",
                        params=[sweep_mod.parse_param("model.lr=float:1e-3:1e-2")])
    s.resolve()
    with pytest.raises(DlbenchError, match="cannot open the study database"):
        sweep_mod.open_study(s)
