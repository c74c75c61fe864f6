"""The tabular plugin: the CSV reader and its errors, a split that learns only from training rows, the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dlbench_plugins.tabular.data import BreastCancerDataModule, CSVDataModule, read_table, stratified_split
from dlbench_plugins.tabular.model import TabularMLP, curves_figure

from dlbench.core.errors import DlbenchError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def table(tmp_path: Path, n_neg: int = 30, n_pos: int = 7, seed: int = 0) -> Path:
    """A table in the credit-card file's format (quoted header, quoted label): 'signal' is low for positives,
    'noise' is noise and 'scale' has a large offset and spread."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.zeros(n_neg), torch.ones(n_pos)])
    signal = -3 * y + 0.1 * torch.randn(len(y), generator=g)
    noise = torch.randn(len(y), generator=g)
    scale = 1000 + 50 * torch.randn(len(y), generator=g)
    rows = [f'{a:.6f},{b:.6f},{c:.6f},"{int(t)}"' for a, b, c, t in zip(signal, noise, scale, y, strict=True)]
    return write(tmp_path / "t.csv", '"signal","noise","scale","Class"\n' + "\n".join(rows) + "\n")


def test_read_table_quoted_csv(tmp_path):
    x, y, names = read_table(table(tmp_path), "Class")
    assert x.shape == (37, 3) and y.shape == (37,) and names == ["signal", "noise", "scale"]
    assert int(y.sum()) == 7 and set(y.tolist()) == {0.0, 1.0}


@pytest.mark.parametrize(("text", "label", "match"), [
    ("", "Class", "empty"),
    ("a,b,Class\n", "Class", "no data rows"),
    ("a,b,y\n1,2,0\n3,4,1\n", "Class", r"no label column 'Class'; its columns are \['a', 'b', 'y'\]"),
    ("a,city,Class\n1,Paris,0\n3,Rome,1\n", "Class", r"line 2: column 'city' is not numeric \('Paris'\)"),
    ("a,b,Class\n1,2,0\n3,,1\n", "Class", r"line 3: column 'b' has a missing value"),
    ("a,b,Class\n1,2,0\n3,NaN,1\n", "Class", r"line 3: column 'b' has a missing value"),
    ("a,b,Class\n1,2,0\n3,4,2\n5,6,1\n", "Class", r"1 \(positive\) only; it holds 0, 1, 2"),
    ("a,b,Class\n1,2,no\n3,4,yes\n", "Class", r"label column 'Class' holds 'no'"),
    ("a,b,Class\n1,2,0\n3,4,0\n", "Class", "holds only 0s"),
    ("a,b,Class\n1,2,0\n3,4\n", "Class", "line 3: 2 fields where the header names 3"),
    ("Class\n0\n1\n", "Class", "no feature columns"),
])
def test_read_table_errors(tmp_path, text, label, match):
    with pytest.raises(DlbenchError, match=match):
        read_table(write(tmp_path / "bad.csv", text), label)


def test_missing_file(tmp_path):
    with pytest.raises(DlbenchError, match="does not exist"):
        read_table(tmp_path / "nope.csv", "Class")
    with pytest.raises(DlbenchError, match="--data.path FILE"):
        CSVDataModule()


def test_stratified_split_keeps_the_class_ratio():
    y = torch.cat([torch.zeros(80), torch.ones(20)])
    train, val, test = stratified_split(y, 0.2, 0.2, seed=0)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(100))
    assert [int(y[i].sum()) for i in (train, val, test)] == [12, 4, 4]
    assert [len(i) for i in (train, val, test)] == [60, 20, 20]


def test_pos_weight_and_standardisation_come_from_training_rows_only(tmp_path):
    dm = CSVDataModule(str(table(tmp_path)), val_fraction=0.2, test_fraction=0.2)
    x_train, y_train, _ = dm.splits["train"]
    # 7 positives split 5/1/1, 30 negatives 18/6/6: the training ratio is 18/5, the whole table's 30/7.
    assert int(y_train.sum()) == 5 and dm.pos_weight == pytest.approx(18 / 5)
    assert torch.allclose(x_train.mean(dim=0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x_train.std(dim=0), torch.ones(3), atol=1e-5)
    x_all = torch.cat([dm.splits[s][0] for s in ("train", "val", "test")])
    assert x_all.mean(dim=0).abs().max() > 1e-3  # statistics of all rows would have centred these too
    assert dm.num_features == 3


def test_baseline_is_the_best_single_training_feature_with_its_sign(tmp_path):
    dm = CSVDataModule(str(table(tmp_path)))
    assert dm.baseline_feature == "signal"
    _, y, score = dm.splits["test"]
    # 'signal' is low for positives, so the baseline score is its negation: positives score higher.
    assert score[y == 1].min() > score[y == 0].max()


def test_too_few_positives_for_the_split(tmp_path):
    with pytest.raises(DlbenchError, match="has no positive rows"):
        CSVDataModule(str(table(tmp_path, n_neg=30, n_pos=2)))


def test_breast_cancer_split():
    dm = BreastCancerDataModule()
    sizes = {s: len(dm.splits[s][1]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 569 and dm.num_features == 30
    positives = {s: int(dm.splits[s][1].sum()) for s in sizes}
    assert sum(positives.values()) == 212  # malignant is the positive class
    assert dm.pos_weight == pytest.approx((sizes["train"] - positives["train"]) / positives["train"])
    x, y, baseline = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 30) and y.shape == (64,) and baseline.shape == (64,)


def test_model_predictions_follow_the_threshold():
    model = TabularMLP(num_features=4, pos_weight=3.0, hidden=8, threshold=0.9).eval()
    x = torch.randn(16, 4)
    out = model.predict_step((x, torch.zeros(16), torch.zeros(16)), 0)
    assert out["probs"].shape == (16, 2)
    assert torch.allclose(out["probs"].sum(dim=1), torch.ones(16))
    assert torch.equal(out["positive"], (out["probs"][:, 1] >= 0.9).long())
    assert model.state_dict()["pos_weight"] == 3.0
    assert [m.out_features for m in model.net if isinstance(m, torch.nn.Linear)] == [8, 4, 1]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"threshold": 1.0}, "threshold"), ({"pos_weight": 0.0}, "pos_weight"), ({"hidden": 0}, "hidden must be >= 1"),
])
def test_model_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TabularMLP(**kwargs)


def test_curves_figure_marks_the_threshold():
    from torchmetrics.classification import BinaryPrecisionRecallCurve, BinaryROC

    prob, target = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.7, 0.2]), torch.tensor([0, 0, 1, 1, 1, 0])
    roc, pr = BinaryROC(), BinaryPrecisionRecallCurve()
    figure = curves_figure(*roc(prob, target), *pr(prob, target), threshold=0.5)
    roc_axes, pr_axes = figure.axes
    # At 0.5, rows 0.8 and 0.7 are flagged: both positive, so no false positive and 2 of 3 positives found.
    point = roc_axes.lines[-1]
    assert (point.get_xdata()[0], point.get_ydata()[0]) == pytest.approx((0.0, 2 / 3))
    point = pr_axes.lines[-1]
    assert (point.get_xdata()[0], point.get_ydata()[0]) == pytest.approx((2 / 3, 1.0))
    assert pr_axes.lines[1].get_ydata()[0] == pytest.approx(0.5)  # constant score: precision = positive rate


def test_fit_draws_validation_curves(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlbench.testing import QUIET, build

    model, dm, trainer = build("tabular", "--model.curves_every_n_epochs", "2", "--trainer.max_epochs", "4", *QUIET,
                               log_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert len(events.Images("val/curves")) == 2  # epochs 2 and 4
