"""``dlbench predict`` for the lstm and tabular plugins, end to end: real tiny fits, real CSV inputs, predictions in
a new process, checked against the model's forward on tensors prepared by hand from the raw data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT, dlbench

from dlbench.core.errors import DlbenchError
from dlbench.data.predict import InputError, Source, predictor_from_record
from dlbench.runs.trained import TrainedRun

SUNSPOTS = ROOT / "plugins" / "lstm" / "sunspots.csv"
WINDOW = 5


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def load_model(run: Path, cls):
    """The model of the checkpoint dlbench predict uses by default (the run's best)."""
    return cls.load_from_checkpoint(TrainedRun.open(run).checkpoint, map_location="cpu").eval()


# The two fits run side by side, then the two predictions: each dlbench process spends most of its time importing
# torch and Lightning, and on a shared machine two at a time finish much sooner than one after the other.


def _lstm_inputs(tmp: Path) -> list[float]:
    """CSV inputs for the lstm run; returns the values of good.csv."""
    # The run's column among others, in another order, with a blank row and quoted cells.
    values = [3.5, 10.0, 25.25, 60.0, 110.0, 140.0, 95.5, 40.0]
    rows = [f'"note {i}",{v},{2000 + i}' for i, v in enumerate(values)]
    (tmp / "good.csv").write_text("note,sunspots,year\n" + "\n".join(rows[:3]) + "\n\n" + "\n".join(rows[3:]) + "\n")
    (tmp / "good2.csv").write_text("sunspots\n" + "\n".join(str(v) for v in range(20, 40)) + "\n")
    (tmp / "no_column.csv").write_text("year,count\n2000,5\n2001,6\n")
    (tmp / "short.csv").write_text("sunspots\n1\n2\n3\n")
    (tmp / "words.csv").write_text("year,sunspots\n2000,1\n2001,2\n2002,many\n2003,4\n2004,5\n2005,6\n")
    return values


def _tabular_inputs(tmp: Path, data, picked: list[int]) -> None:
    """CSV inputs for the tabular run: rows of the table with the features in reverse order, between an id and the
    label column (both ignored), a blank line; a file lacking columns, and one with a cell that is not a number."""
    names = [str(n) for n in data.feature_names]
    header = ["id", *reversed(names), "label"]
    table = [[f"row{i}", *(repr(float(v)) for v in reversed(data.data[i])), str(1 - data.target[i])] for i in picked]
    lines = [",".join(header), *(",".join(cells) for cells in table)]
    lines.insert(3, "")  # a blank line: counted, skipped
    (tmp / "rows.csv").write_text("\n".join(lines) + "\n")
    (tmp / "few_columns.csv").write_text("mean radius,mean texture,label\n1,2,0\n")
    table[1][header.index("mean compactness")] = "n/a"
    (tmp / "bad_cell.csv").write_text("\n".join(",".join(cells) for cells in [header, *table]) + "\n")


def _in_process_predict(run: Path, inputs: list[str], options: dict, output: Path) -> None:
    """dlbench.tools.predict.predict in this process, its environment variables (meant for the processes of a
    multi-device run) removed afterwards so that they reach no later dlbench process."""
    import os

    from dlbench.tools.predict import _DIR_ENV, _TOKEN_ENV, predict

    before = {k: os.environ.get(k) for k in (_DIR_ENV, _TOKEN_ENV)}
    try:
        predict(run, inputs, options, output)
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny lstm fit on a copy of the sunspot CSV (no --data.column: the last column, 'sunspots'; the copy deleted
    after the fit) and a tiny tabular fit on scikit-learn's breast cancer table; then a prediction of each in a new
    process on good and bad CSVs, and a 3-step lstm forecast in this process."""
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.datasets import load_breast_cancer

    lstm, tabular = tmp_path_factory.mktemp("lstm"), tmp_path_factory.mktemp("tabular")
    shutil.copy(SUNSPOTS, lstm / "train.csv")
    fits = [(("fit", "--model", "lstm", "--data.path", "train.csv", "--data.window", str(WINDOW),
              "--model.hidden_size", "8", "--model.num_layers", "1", "--trainer.max_epochs", "2"), lstm),
            (("fit", "--model", "tabular", "--model.hidden", "8", "--trainer.max_epochs", "2"), tabular)]
    with ThreadPoolExecutor(2) as pool:
        for fit in list(pool.map(lambda job: dlbench(*job[0], cwd=job[1]), fits)):
            assert fit.returncode == 0, fit.stderr[-3000:]
    (lstm / "train.csv").unlink()  # prediction needs nothing of the training data
    lstm_dir, tabular_dir = (d / "lightning_logs" / name / "version_0" for d, name in ((lstm, "lstm"),
                                                                                      (tabular, "tabular")))
    values = _lstm_inputs(lstm)
    data, picked = load_breast_cancer(), [0, 7, 300, 568]  # rows of the table; 1 - target: 1 = malignant
    _tabular_inputs(tabular, data, picked)
    lstm_args = ("--input", "good.csv", "no_column.csv", "short.csv", "missing.csv", "words.csv", "good2.csv", "-o",
                 "one.jsonl")
    tabular_args = ("--input", "rows.csv", "few_columns.csv", "bad_cell.csv", "-o", "out.jsonl")
    with ThreadPoolExecutor(2) as pool:
        one, out = pool.map(lambda job: dlbench("predict", "--run", str(job[2]), *job[0], cwd=job[1]),
                            [(lstm_args, lstm, lstm_dir), (tabular_args, tabular, tabular_dir)])
    # After the processes: predict() sets environment variables that a process started meanwhile would inherit.
    _in_process_predict(lstm_dir, [str(lstm / "good.csv"), str(lstm / "good2.csv")], {"horizon": 3},
                        lstm / "three.jsonl")
    return {"lstm": {"tmp": lstm, "run": lstm_dir, "values": values, "one": one},
            "tabular": {"tmp": tabular, "run": tabular_dir, "data": data, "picked": picked,
                        "names": [str(n) for n in data.feature_names], "out": out}}


@pytest.fixture
def lstm_run(runs):
    return runs["lstm"]


@pytest.fixture
def tabular_run(runs):
    return runs["tabular"]


# ---------------------------------------------------------------------------------------------------------- lstm


def test_lstm_rows_errors_and_exit_code(lstm_run):
    one = lstm_run["one"]
    assert one.returncode == 2, one.stderr[-3000:]
    rows = read_jsonl(lstm_run["tmp"] / "one.jsonl")
    assert [r["input"] for r in rows] == ["good.csv", "no_column.csv", "short.csv", "missing.csv", "words.csv",
                                          "good2.csv"]
    assert set(rows[0]) == {"input", "step_1"} and set(rows[5]) == {"input", "step_1"}
    errors = {r["input"]: r["error"] for r in rows if "error" in r}
    assert errors["no_column.csv"] == ("no_column.csv has no column 'sunspots'; its columns are ['year', 'count']. "
                                       "The run forecasts column 'sunspots': give a CSV with a column of that name "
                                       "(other columns are ignored, in any order).")
    assert errors["short.csv"] == ("short.csv: 3 values in column 'sunspots'; the run reads windows of 5, so at "
                                   "least 5 are needed. Give a longer series.")
    assert errors["missing.csv"] == "missing.csv: no such file or folder. Check the path."
    assert errors["words.csv"].startswith("words.csv, line 4: column 'sunspots' is not a number (['2002', 'many'])")
    assert "dlbench: error: short.csv: 3 values" in one.stderr
    assert "2 predictions (4 inputs failed)" in one.stderr


def test_lstm_state_is_the_runs_column_window_and_training_statistics(lstm_run):
    record = json.loads((lstm_run["run"] / "predictor.json").read_text())
    assert record["class"] == "dlbench_plugins.lstm.predict:SeriesPredictor"
    state = record["state"]
    with SUNSPOTS.open(newline="") as f:
        series = torch.tensor([float(r["sunspots"]) for r in csv.DictReader(f)])
    n_held = round(len(series) * 0.15)  # validation and test, 15% each by default
    train = series[: len(series) - 2 * n_held]
    assert state == {"column": "sunspots", "window": WINDOW, "mean": pytest.approx(float(train.mean())),
                     "std": pytest.approx(float(train.std()))}
    from dlbench_plugins.lstm.model import LSTMForecaster

    model = load_model(lstm_run["run"], LSTMForecaster)
    assert (model.hparams.target_mean, model.hparams.target_std) == (state["mean"], state["std"])


def _forecast_by_hand(run: Path, values: list[float], horizon: int) -> list[float]:
    from dlbench_plugins.lstm.model import LSTMForecaster

    model = load_model(run, LSTMForecaster)
    mean, std = model.hparams.target_mean, model.hparams.target_std
    window = [(v - mean) / std for v in values[-WINDOW:]]
    out = []
    with torch.no_grad():
        for _ in range(horizon):
            step = float(model(torch.tensor(window).view(1, WINDOW, 1)))
            out.append(step * std + mean)
            window = window[1:] + [step]
    return out


def test_lstm_forecasts_agree_with_the_model_and_horizon(lstm_run):
    one = {r["input"]: r for r in read_jsonl(lstm_run["tmp"] / "one.jsonl")}
    three = {Path(r["input"]).name: r for r in read_jsonl(lstm_run["tmp"] / "three.jsonl")}
    assert list(three) == ["good.csv", "good2.csv"]
    for name, values in (("good.csv", lstm_run["values"]), ("good2.csv", [float(v) for v in range(20, 40)])):
        assert list(three[name]) == ["input", "step_1", "step_2", "step_3"]
        assert three[name]["step_1"] == pytest.approx(one[name]["step_1"], rel=1e-5)
        expected = _forecast_by_hand(lstm_run["run"], values, 3)
        assert one[name]["step_1"] == pytest.approx(expected[0], rel=1e-4, abs=1e-4)
        assert [three[name][f"step_{i}"] for i in (1, 2, 3)] == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_lstm_bad_horizon_stops_the_prediction(lstm_run):
    record = json.loads((lstm_run["run"] / "predictor.json").read_text())
    predictor = predictor_from_record(record, "predictor.json")
    with pytest.raises(DlbenchError, match="--horizon must be >= 1"):
        predictor.read(Source(name="good.csv", path=lstm_run["tmp"] / "good.csv"), {"horizon": 0})


# ------------------------------------------------------------------------------------------------------- tabular


def test_tabular_rows_keys_and_errors(tabular_run):
    out = tabular_run["out"]
    assert out.returncode == 2, out.stderr[-3000:]
    rows = read_jsonl(tabular_run["tmp"] / "out.jsonl")
    # Lines as a person counts them: the header is line 1, the blank line 4 is skipped.
    assert [r["input"] for r in rows] == ["rows.csv:2", "rows.csv:3", "rows.csv:5", "rows.csv:6", "few_columns.csv",
                                          "bad_cell.csv"]
    for row in rows[:4]:
        assert list(row) == ["input", "prediction", "probability", "top2", "top2_probability", "decision"]
        assert {row["prediction"], row["top2"]} == {"benign", "malignant"}
        assert row["probability"] + row["top2_probability"] == pytest.approx(1, abs=1e-5)
        assert row["decision"] == row["prediction"]  # the default threshold, 0.5
    assert rows[4]["error"].startswith("few_columns.csv lacks the run's columns 'mean perimeter', 'mean area'")
    assert "and 20 more; its columns are ['mean radius', 'mean texture', 'label']" in rows[4]["error"]
    assert rows[5]["error"] == ("bad_cell.csv, line 3: column 'mean compactness' is not numeric ('n/a'). The model "
                                "reads numbers only: encode it as a number as the training data did.")


def test_tabular_state_and_probabilities_agree_with_the_model(tabular_run):
    from dlbench_plugins.tabular.data import stratified_split
    from dlbench_plugins.tabular.model import TabularMLP

    data, picked = tabular_run["data"], tabular_run["picked"]
    record = json.loads((tabular_run["run"] / "predictor.json").read_text())
    assert record["class"] == "dlbench_plugins.tabular.predict:TabularPredictor"
    state = record["state"]
    assert state["features"] == tabular_run["names"] and state["class_names"] == ["benign", "malignant"]
    x = torch.from_numpy(data.data).float()
    train, _, _ = stratified_split(torch.from_numpy(1 - data.target).float(), 0.2, 0.2, seed=0)
    mean, std = x[train].mean(dim=0), x[train].std(dim=0)
    assert state["mean"] == pytest.approx(mean.tolist()) and state["std"] == pytest.approx(std.tolist())
    model = load_model(tabular_run["run"], TabularMLP)
    with torch.no_grad():
        positive = torch.sigmoid(model((x[picked] - mean) / std)).tolist()
    rows = read_jsonl(tabular_run["tmp"] / "out.jsonl")[:4]
    for row, p in zip(rows, positive, strict=True):
        assert row["prediction"] == ("malignant" if p > 0.5 else "benign")
        assert row["probability"] == pytest.approx(max(p, 1 - p), abs=1e-5)


def test_tabular_json_record_is_one_example(tabular_run):
    record = json.loads((tabular_run["run"] / "predictor.json").read_text())
    predictor = predictor_from_record(record, "predictor.json")
    data, names, i = tabular_run["data"], tabular_run["names"], tabular_run["picked"][0]
    row = {"id": "x", **{n: float(v) for n, v in zip(names, data.data[i], strict=True)}}
    row["mean radius"] = str(row["mean radius"])  # a number sent as text is read too
    (example,) = predictor.read(Source(name="rows[0]", record=row), {})
    from_csv = predictor.read(Source(name="rows.csv", path=tabular_run["tmp"] / "rows.csv"), {})[0]
    assert example.key == "rows[0]" and torch.equal(example.value[0], from_csv.value[0])
    with pytest.raises(InputError, match=r"rows\[1\] lacks the run's column 'mean area'; its columns are"):
        predictor.read(Source(name="rows[1]", record={k: v for k, v in row.items() if k != "mean area"}), {})
    with pytest.raises(InputError, match=r"rows\[2\]: column 'mean area' has a missing value"):
        predictor.read(Source(name="rows[2]", record={**row, "mean area": None}), {})


# ---------------------------------------------------------------------------------------------------------- both


def test_written_inputs_read_back_to_the_same_tensors(tmp_path):
    """write_inputs (for dlbench.testing.check_predict) writes what read turns back into the test batch's tensors."""
    from dlbench_plugins.lstm.data import SeriesDataModule
    from dlbench_plugins.tabular.data import BreastCancerDataModule

    for datamodule in (SeriesDataModule(window=WINDOW), BreastCancerDataModule()):
        datamodule.setup("test")
        predictor = datamodule.predictor()
        x = next(iter(datamodule.test_dataloader()))[0][:4]
        files = predictor.write_inputs((x,), tmp_path / type(datamodule).__name__)
        read = [e.value[0] for f in files for e in predictor.read(Source(name=f.name, path=f), {})]
        torch.testing.assert_close(torch.stack(read), x, rtol=1e-5, atol=1e-5)
