"""The checks dlbench runs on every built-in, applied to this plugin, and a prediction on a user's own CSV file."""

import json

import pytest
from dlbench_example_iris.predict import TablePredictor

from dlbench.cli import main
from dlbench.data.predict import InputError, Source
from dlbench.testing import QUIET, check_learns, check_predict, check_round_trip, check_smoke, using_log_root


def test_smoke(tmp_path):
    check_smoke("iris_mlp", tmp_path)


def test_checkpoint_round_trip(tmp_path):
    check_round_trip("iris_mlp", tmp_path)


def test_learns(tmp_path):
    scalars = check_learns("iris_mlp", tmp_path)
    assert scalars["test/acc"] >= 0.8


def test_predict(tmp_path):
    rows = check_predict("iris_mlp", tmp_path)
    assert {row["prediction"] for row in rows} <= {"setosa", "versicolor", "virginica"}


def test_predict_command_on_a_csv_file(tmp_path, capsys):
    with using_log_root(tmp_path):
        assert main(["fit", "--model", "iris_mlp", "--trainer.max_epochs", "1", *QUIET]) == 0
    (run,) = (tmp_path / "iris_mlp").glob("version_*")
    flowers = tmp_path / "flowers.csv"  # the columns in another order, the label column too: found by name
    flowers.write_text("species,petal width (cm),petal length (cm),sepal width (cm),sepal length (cm)\n"
                       "setosa,0.2,1.4,3.5,5.1\n\nvirginica,2.3,5.4,3.0,6.9\n")
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n")
    out = tmp_path / "rows.jsonl"
    code = main(["predict", "--run", str(run), "--input", str(flowers), str(unnamed), "--top_k", "2",
                 "--output", str(out)])
    assert code == 2  # one input failed; the others still get their rows
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["input"] for row in rows] == [f"{flowers}:2", f"{flowers}:4", str(unnamed)]
    for row in rows[:2]:
        assert row["prediction"] in {"setosa", "versicolor", "virginica"} and "top2" in row and "top3" not in row
    assert "lacks the columns 'sepal length (cm)'" in rows[2]["error"]
    assert "lacks the columns" in capsys.readouterr().err


def test_json_records_as_dlbench_serve_passes_them():
    predictor = TablePredictor.from_state({"features": ["a", "b"], "mean": [1.0, 2.0], "std": [2.0, 4.0],
                                           "class_names": ["x", "y"]})
    (example,) = predictor.read(Source("row 0", record={"b": 6, "a": "3", "label": "y"}), {})
    assert example.key == "row 0" and example.value[0].tolist() == [1.0, 1.0]
    with pytest.raises(InputError, match="row 1 lacks the column 'b'"):
        predictor.read(Source("row 1", record={"a": 1}), {})
    with pytest.raises(InputError, match="row 2: column 'a' holds 'n/a', not a number"):
        predictor.read(Source("row 2", record={"a": "n/a", "b": 1}), {})
