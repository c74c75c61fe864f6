"""``dlbench compare`` on real runs, as a user calls it: the table, its formats, sorting, filters, a plot, an
evaluation of a run, and runs that are damaged, empty, killed or still being written. At the scale of many runs:
test_compare_layout.py."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import dlbench
from test_compare_layout import NO_COLUMNS, column, parse_tables

from dlbench.runs import Point, Run, read_scalars
from dlbench.runs.compare import Filter, differing_hparams, group_runs, select, sort_runs

TINY = ("--trainer.max_epochs", "2", "--model.num_layers", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false")


def _fit_concurrently(cwd: Path, *variants: tuple[str, ...]) -> None:
    """Several real ``dlbench fit`` runs at once (each directory is claimed atomically)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DLBENCH_LOG_DIR", None)
    procs = [subprocess.Popen([sys.executable, "-m", "dlbench", "fit", "--model", "lstm", *TINY, *extra], cwd=cwd,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for extra in variants]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A directory with lightning_logs/lstm/version_{0,1}: hidden_size 8 and 16, all else equal."""
    root = tmp_path_factory.mktemp("compare")
    _fit_concurrently(root, ("--model.hidden_size", "8"), ("--model.hidden_size", "16"))
    return root


def _hidden(run_dir: Path) -> int:
    import yaml

    return yaml.safe_load((run_dir / "hparams.yaml").read_text())["model"]["hidden_size"]


def _best(run_dir: Path, tag: str = "val/rmse") -> float:
    return min(v for _, v in read_scalars(run_dir)[tag])


def _compare(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The real command in a subprocess."""
    result = dlbench("compare", *args, cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture
def compare(capsys, monkeypatch):
    """The same command in this process (the many calls of a test then pay the imports once)."""
    from dlbench.cli import main

    def call(cwd: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        returned = main(["compare", *args])
        out, err = capsys.readouterr()
        assert returned == code, err
        return subprocess.CompletedProcess(["dlbench", "compare", *args], returned, out, err)

    return call


def test_table_shows_only_the_differing_hyperparameters_best_run_first(runs):
    run_dirs = sorted((runs / "lightning_logs" / "lstm").iterdir())
    expected = sorted(run_dirs, key=_best)  # val/rmse: lower is better

    result = dlbench("compare", cwd=runs, env=NO_COLUMNS, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert max(map(len, result.stdout.splitlines())) <= 100
    (table,) = parse_tables(result.stdout)
    assert table.heading == "sunspots · lstm · val/rmse, lower is better (2 runs)"
    hidden = column(table, "model/hidden_size", "hidden_size")
    for same in ("lr", "seed", "batch_size", "max_epochs", "num_layers", "target_mean", "target_std", "window"):
        assert not any(t.endswith(same) for t in table.titles)  # equal in both runs, or derived from the data
    assert [row["run"] for row in table.rows] == [f"lstm/{d.name}" for d in expected]
    assert [int(row[hidden]) for row in table.rows] == [_hidden(d) for d in expected]
    for row, d in zip(table.rows, expected, strict=True):
        scalars = read_scalars(d)
        assert float(row[column(table, "val/rmse ↓", "best ↓")]) == pytest.approx(_best(d), rel=1e-4)
        assert float(row[column(table, "test/rmse", "test")]) == pytest.approx(scalars["test/rmse"][-1][1], rel=1e-4)
        baseline = float(row[column(table, "persistence", "baseline")])
        assert baseline == pytest.approx(scalars["test/rmse_persistence"][-1][1], rel=1e-4)
        assert row["status"] == "finished" and table.under[row["run"]] == []


def test_csv_json_and_markdown_carry_the_same_numbers(runs, compare):
    run_dirs = {f"lstm/{d.name}": d for d in (runs / "lightning_logs" / "lstm").iterdir()}

    rows = list(csv.DictReader(io.StringIO(compare(runs, "--format", "csv").stdout)))
    assert {r["run"] for r in rows} == set(run_dirs)
    for r in rows:
        d = run_dirs[r["run"]]
        scalars = read_scalars(d)
        assert r["path"] == f"lightning_logs/lstm/{d.name}" and r["group"] == "sunspots: val/rmse"
        assert float(r["best"]) == pytest.approx(_best(d), rel=1e-6)
        assert float(r["final"]) == pytest.approx(scalars["val/rmse"][-1][1], rel=1e-6)
        assert float(r["test"]) == pytest.approx(scalars["test/rmse"][-1][1], rel=1e-6)
        assert float(r["baseline"]) == pytest.approx(scalars["test/rmse_persistence"][-1][1], rel=1e-6)
        assert r["test_metric"] == "test/rmse" and r["baseline_label"].startswith("persistence")
        assert int(r["model/hidden_size"]) == _hidden(d) and r["plugin"] == "lstm" and r["status"] == "finished"
        assert int(r["epochs"]) == 2 and int(r["steps"]) > 0 and float(r["seconds"]) > 0
        assert r["data"] == "sunspots" and r["evaluations"] == "0"

    records = json.loads(compare(runs, "--format", "json").stdout)
    assert [r["run"] for r in records] == [r["run"] for r in rows]  # same order in every format
    for rec in records:
        d = run_dirs[rec["run"]]
        assert rec["monitor"] == "val/rmse" and rec["mode"] == "min" and rec["data"] == "sunspots"
        assert rec["best"] == pytest.approx(_best(d), rel=1e-6) and rec["evaluations"] == []
        assert rec["hparams"]["model/hidden_size"] == _hidden(d) and rec["hparams"]["seed"] == 42
        # The parameter count of the checkpoint equals the model's own.
        from dlbench_plugins.lstm.model import LSTMForecaster

        model = LSTMForecaster.load_from_checkpoint(d / "checkpoints" / "last.ckpt", map_location="cpu",
                                                    weights_only=False)
        assert rec["params"] == sum(p.numel() for p in model.parameters())

    out = runs / "table.md"
    compare(runs, "--output", str(out))  # the format follows the suffix
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| group | run |") and set(lines[1]) <= set("|-:")
    cells = [line.strip("|").split("|") for line in lines]
    assert len(lines) == 4 and all(len(c) == len(cells[0]) for c in cells)


def test_sort_by_any_scalar_and_filters(runs, compare):
    run_dirs = sorted((runs / "lightning_logs" / "lstm").iterdir())
    by_train_loss = sorted(run_dirs, key=lambda d: _best(d, "train/loss"))
    rows = list(csv.DictReader(io.StringIO(compare(runs, "--sort", "train/loss", "--format", "csv").stdout)))
    assert [r["run"].rpartition("/")[2] for r in rows] == [d.name for d in by_train_loss]
    assert float(rows[0]["best train/loss"]) == pytest.approx(_best(by_train_loss[0], "train/loss"), rel=1e-6)

    by_size = list(csv.DictReader(io.StringIO(compare(runs, "--sort", "model/hidden_size", "--format", "csv").stdout)))
    assert [int(r["model/hidden_size"]) for r in by_size] == [8, 16]

    only = list(csv.DictReader(io.StringIO(compare(runs, "--filter", "model/hidden_size=16", "--format",
                                                    "csv").stdout)))
    assert len(only) == 1 and _hidden(runs / only[0]["path"]) == 16
    others = compare(runs, "--filter", "plugin=lstm", "--filter", "model/hidden_size!=16", "--format", "json")
    assert [_hidden(runs / r["path"]) for r in json.loads(others.stdout)] == [8]
    either = compare(runs, "--filter", "model/hidden_size=8,16", "--filter", "run=*/version_*", "--format", "json")
    assert len(json.loads(either.stdout)) == 2
    # A run by the name the table shows; the data by its name, not its class.
    named = compare(runs, "--filter", f"run={only[0]['run']}", "--filter", "data=sunspots", "--format", "json")
    assert [r["run"] for r in json.loads(named.stdout)] == [only[0]["run"]]
    assert compare(runs, "--filter", "data=SeriesDataModule").stdout == ""
    none = compare(runs, "--filter", "plugin=cnn")
    assert none.stdout == "" and "no run matches plugin=cnn" in none.stderr

    unknown = compare(runs, "--filter", "hidden=8", code=2)
    assert "Did you mean model/hidden_size?" in unknown.stderr
    assert "val/rmse" in compare(runs, "--sort", "val/nope", code=2).stderr


def test_plot_draws_the_monitor_curves(runs):
    png = runs / "curves.png"
    result = _compare(runs, "--plot", str(png))
    assert "plotted 2 curves" in result.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _events(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("events.out.tfevents*"))


def _set_status(run_dir: Path, **fields) -> None:
    path = run_dir / "status.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_damaged_empty_killed_and_running_runs_are_rows_with_their_status(runs, tmp_path, compare):
    good = runs / "lightning_logs" / "lstm" / "version_0"
    logs = tmp_path / "logs" / "lstm"
    copies = {name: shutil.copytree(good, logs / name) for name in
              ("version_0", "version_1", "version_2", "version_3", "version_4")}
    fit_events = _events(copies["version_1"])[0]
    data = fit_events.read_bytes()
    fit_events.write_bytes(data[: len(data) * 2 // 3])  # a copy cut short
    crc_events = _events(copies["version_2"])[0]
    data = bytearray(crc_events.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in a record
    crc_events.write_bytes(bytes(data))
    _set_status(copies["version_3"], status="running", pid=_dead_pid(), host=socket.gethostname())
    _set_status(copies["version_4"], status="running", pid=os.getpid(), host=socket.gethostname())
    live_events = _events(copies["version_4"])[-1]
    live_events.write_bytes(live_events.read_bytes()[:-5])  # the writer is half-way through its last record
    (logs / "version_5").mkdir()  # claimed, nothing written yet
    (logs / "version_6").mkdir()
    (logs / "version_6" / "events.out.tfevents.0.host.1.0").write_bytes(b"")

    records = {r["run"].rpartition("/")[2]: r for r in
               json.loads(_compare(tmp_path, str(tmp_path / "logs"), "--format", "json").stdout)}
    assert set(records) == {f"version_{i}" for i in range(7)}
    assert records["version_0"]["status"] == "finished" and records["version_0"]["problem"] == ""
    assert records["version_1"]["status"] == "corrupt" and "truncated" in records["version_1"]["problem"]
    assert fit_events.name in records["version_1"]["problem"]
    assert records["version_2"]["status"] == "corrupt" and "crc" in records["version_2"]["problem"]
    assert records["version_3"]["status"] == "killed"
    assert records["version_4"]["status"] == "running"
    assert records["version_5"]["status"] == "empty" and records["version_6"]["status"] == "empty"
    # What could be read still counts: the truncated copy keeps its hyperparameters.
    assert records["version_0"]["best"] == pytest.approx(_best(good), rel=1e-6)
    assert records["version_1"]["hparams"]["plugin"] == "lstm"

    text = compare(tmp_path, str(tmp_path / "logs")).stdout
    rows = {row["run"]: (row["status"], table.under[row["run"]]) for table in parse_tables(text) for row in table.rows}
    assert set(rows) == {f"lstm/version_{i}" for i in range(7)}
    assert rows["lstm/version_1"][0] == "corrupt"  # and why, on the line under it
    assert rows["lstm/version_1"][1][0].startswith(f"corrupt: {fit_events.name}")
    assert rows["lstm/version_3"][0] == "killed" and "is gone" in rows["lstm/version_3"][1][0]
    assert rows["lstm/version_5"] == ("empty", []) and rows["lstm/version_0"] == ("finished", [])


def test_paths_may_name_runs_and_plugin_dirs_and_each_run_is_listed_once(runs, compare):
    lstm = runs / "lightning_logs" / "lstm"
    records = json.loads(compare(runs, str(lstm / "version_1"), str(lstm), "--format", "json").stdout)
    assert sorted(r["path"] for r in records) == ["lightning_logs/lstm/version_0", "lightning_logs/lstm/version_1"]
    assert sorted(r["run"] for r in records) == ["lstm/version_0", "lstm/version_1"]
    assert "nowhere does not exist" in compare(runs, "nowhere", code=2).stderr


def test_a_logged_parameter_count_is_used_without_importing_torch(runs, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = shutil.copytree(runs / "lightning_logs" / "lstm" / "version_0", tmp_path / "lstm" / "version_0")
    with SummaryWriter(str(run)) as writer:  # what dlbench.train.monitor.TrainingSpeed logs when a run starts
        writer.add_scalar("model/params", 1234, 0)
    code = ("import json, sys; from dlbench.cli import main; main(['compare', sys.argv[1], '--format', 'json']);"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning'))))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    *table, heavy = out.stdout.strip().splitlines()
    (record,) = json.loads("\n".join(table))
    assert record["params"] == 1234 and record["params_source"] == "logged"
    assert json.loads(heavy) == []


def _run(name: str, plugin: str, monitor: str, values: list[float], **hparams) -> Run:
    points = [Point(step, 0.0, v) for step, v in enumerate(values)]
    return Run(Path(name), "finished", hparams={"plugin": plugin, **hparams}, scalars={monitor: points},
               metrics=[monitor])


def test_differences_and_order_across_plugins_of_different_metrics():
    a = _run("a", "lstm_like", "val/rmse", [5.0, 3.0, 4.0], **{"model/hidden_size": 8.0, "data/batch_size": 32.0})
    b = _run("b", "lstm_like", "val/rmse", [6.0, 2.5], **{"model/hidden_size": 16.0, "data/batch_size": 32.0})
    c = _run("c", "cnn_like", "val/acc", [0.5, 0.9, 0.8], **{"model/channels": "[32, 64]", "data/batch_size": 64.0})
    d = _run("d", "cnn_like", "val/acc", [0.95], **{"model/channels": "[32, 64]", "data/batch_size": 64.0})
    assert differing_hparams([a, b]) == ["model/hidden_size"]
    # Another plugin's own arguments are no difference; a shared one that differs is.
    assert differing_hparams([a, b, c, d]) == ["model/hidden_size", "data/batch_size"]
    # Each run by its own monitor, best first in that monitor's direction: accuracy up, RMSE down.
    assert [r.path.name for r in sort_runs([a, b, c, d], None)] == ["d", "c", "b", "a"]
    assert [[r.path.name for r in g.runs] for g in group_runs(sort_runs([a, b, c, d], None))] == [["d", "c"],
                                                                                                  ["b", "a"]]
    assert (c.best("val/acc").value, c.best("val/acc").step, c.final("val/acc").value) == (0.9, 1, 0.8)
    assert [r.path.name for r in select([a, b, c, d], [Filter.parse("model/hidden_size=16")])] == ["b"]
    assert [r.path.name for r in select([a, b, c, d], [Filter.parse("plugin!=lstm_*")])] == ["c", "d"]


def test_values_linked_from_the_data_are_no_difference():
    # lstm's spec links n_features, window, target_mean and target_std from its datamodule into the model.
    e = _run("e", "lstm", "val/rmse", [3.0], **{"model/hidden_size": 8.0, "model/target_mean": 40.0,
                                               "data/path": "a.csv"})
    f = _run("f", "lstm", "val/rmse", [2.0], **{"model/hidden_size": 16.0, "model/target_mean": 41.5,
                                               "data/path": "a.csv"})
    assert differing_hparams([e, f]) == ["model/hidden_size"]
    assert differing_hparams([e, f], derived=True) == ["model/hidden_size", "model/target_mean"]
    assert e.data == f.data == "a.csv"  # an older run without the dataset hyperparameter: named by its file


def test_an_evaluation_of_a_run_is_a_line_under_its_row(runs, tmp_path):
    run = shutil.copytree(runs / "lightning_logs" / "lstm" / "version_0", tmp_path / "lightning_logs" / "lstm" /
                          "version_0")
    evaluation = dlbench("test", "--run", "lightning_logs/lstm/version_0", "--trainer.enable_progress_bar", "false",
                         cwd=tmp_path, timeout=300)
    assert evaluation.returncode == 0, evaluation.stderr
    record = json.loads((run / "evaluations" / "test_0" / "evaluation.json").read_text())

    result = dlbench("compare", cwd=tmp_path, env=NO_COLUMNS, timeout=120)
    assert result.returncode == 0, result.stderr
    (table,) = parse_tables(result.stdout)
    assert [row["run"] for row in table.rows] == ["lstm/version_0"]
    (line,) = table.under["lstm/version_0"]
    assert line.startswith("test_0  test/rmse ") and f"({Path(record['checkpoint']).name})" in line
    assert float(line.split()[2]) == pytest.approx(record["metrics"]["test/rmse"], rel=1e-4)
