"""Imbalanced binary classification on numeric tables: a stratified split, standardised with training statistics.

Batches are ``(x, y, baseline)``: standardised features ``(B, F)`` float, labels ``(B,)`` float in {0, 1} (1 =
the positive, usually rare class: fraud, malignant) and ``baseline``, the score of a one-feature classifier: the
single raw feature (with its sign) whose AUROC on the *training* split is highest. Its test AUROC is the baseline
the network must beat, an honest one: a network that only rediscovers the best column has learnt nothing more.

Everything learnt from data (standardisation, ``pos_weight`` = negatives / positives, the baseline feature) comes
from the training split only. A trained run classifies a user's own rows with ``dlbench predict`` (see
:mod:`dlbench_plugins.tabular.predict`).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from dlbench import DlbenchError
from dlbench.data.batches import tensor_loader

_MISSING = {"", "na", "nan", "null", "none", "?"}


def read_table(path: str | Path, label: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Numeric features ``(N, F)``, 0/1 labels ``(N,)`` and feature names from a CSV file with a header row."""
    path = Path(path)
    if not path.is_file():
        raise DlbenchError(f"table {path} does not exist. Give an existing CSV file with --data.path.")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DlbenchError(f"table {path} is not a readable UTF-8 CSV file ({err}).") from None
    if not any(header):
        raise DlbenchError(f"table {path} is empty: a header row naming the columns, then one row per example, "
                           f"is expected.")
    if label not in header:
        raise DlbenchError(f"table {path} has no label column {label!r}; its columns are {header}. Name the 0/1 "
                           f"column with --data.label.")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="loadtxt: input contained no data")  # an error below
            values = np.loadtxt(path, delimiter=",", skiprows=1, quotechar='"', comments=None, ndmin=2,
                                dtype=np.float64, encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DlbenchError(f"table {path} is not a readable UTF-8 CSV file ({err}).") from None
    except ValueError as err:
        raise _first_bad_cell(path, header, label) or DlbenchError(f"table {path} cannot be read: {err}.") from None
    if values.shape[0] == 0:
        raise DlbenchError(f"table {path} has a header but no data rows.")
    if values.shape[1] != len(header):
        raise DlbenchError(f"table {path}: the rows have {values.shape[1]} fields, the header names {len(header)}.")
    if not np.isfinite(values).all():
        col = int(np.nonzero(~np.isfinite(values).all(axis=0))[0][0])
        row = int(np.nonzero(~np.isfinite(values[:, col]))[0][0])
        raise _missing(path, header[col], row + 2, label)
    y_col = header.index(label)
    y = values[:, y_col]
    classes = sorted(set(np.unique(y).tolist()))
    if not set(classes) <= {0.0, 1.0}:
        raise DlbenchError(f"table {path}: the label column {label!r} must hold 0 (negative) and 1 (positive) only; "
                           f"it holds {_show(classes)}. Recode it to 0/1, 1 marking the class to detect.")
    if len(classes) < 2:
        raise DlbenchError(f"table {path}: the label column {label!r} holds only {int(classes[0])}s; both classes "
                           f"(0 and 1) are needed to train and score a classifier.")
    features = np.delete(values, y_col, axis=1)
    if features.shape[1] == 0:
        raise DlbenchError(f"table {path} has no feature columns besides the label {label!r}.")
    names = [h for i, h in enumerate(header) if i != y_col]
    return torch.from_numpy(features).float(), torch.from_numpy(y).float(), names


def _show(values: list[float]) -> str:
    shown = [int(v) if float(v).is_integer() else v for v in values[:6]]
    return ", ".join(map(str, shown)) + (", ..." if len(values) > 6 else "")


def _missing(path: Path, column: str, line: int, label: str) -> DlbenchError:
    if column == label:
        return DlbenchError(f"table {path}, line {line}: the label {label!r} is missing. Drop unlabelled rows.")
    return DlbenchError(f"table {path}, line {line}: column {column!r} has a missing value. The model needs every "
                        f"value: fill the gaps (e.g. with the column's median) or drop those rows or the column.")


def _first_bad_cell(path: Path, header: list[str], label: str) -> DlbenchError | None:
    """Why numpy could not parse the table, as a message naming the line and column."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                return DlbenchError(f"table {path}, line {line}: {len(row)} fields where the header names "
                                    f"{len(header)}. Fix the row (a stray comma, a missing field?).")
            for column, cell in zip(header, row, strict=True):
                cell = cell.strip()
                if cell.lower() in _MISSING:
                    return _missing(path, column, line, label)
                try:
                    float(cell)
                except ValueError:
                    if column == label:
                        return DlbenchError(f"table {path}, line {line}: the label column {label!r} holds "
                                            f"{cell!r}; it must hold 0 (negative) or 1 (positive). Recode it.")
                    return DlbenchError(f"table {path}, line {line}: column {column!r} is not numeric ({cell!r}). "
                                        f"The model reads numbers only: drop the column or encode it as numbers "
                                        f"(e.g. one 0/1 column per category) first.")
    return None


def stratified_split(y: torch.Tensor, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of train, validation and test rows, each class split in the same proportions (fixed ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    parts: tuple[list[torch.Tensor], ...] = ([], [], [])
    for c in (0, 1):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test, n_val = round(len(idx) * test_fraction), round(len(idx) * val_fraction)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    return tuple(torch.cat(p) for p in parts)  # type: ignore[return-value]


def best_feature(x: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    """The column of ``x`` that ranks ``y`` best on its own, and the sign (+1 or -1) that makes it a score."""
    aurocs = torch.stack([binary_auroc(x[:, j], y.long()) for j in range(x.shape[1])])
    j = int((aurocs - 0.5).abs().argmax())
    return j, 1.0 if aurocs[j] >= 0.5 else -1.0


class TabularDataModule(L.LightningDataModule):
    """Base for a numeric table with a 0/1 label. Subclasses call :meth:`use_table` in ``__init__`` so that
    ``num_features`` and ``pos_weight`` are known before the model is built."""

    num_features: int
    pos_weight: float
    class_names: tuple[str, str] = ("0", "1")
    """Names of label 0 and label 1, for the rows of ``dlbench predict``: the label column's values by default."""

    def use_table(self, x: torch.Tensor, y: torch.Tensor, names: list[str]) -> None:
        hp = self.hparams
        if hp.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {hp.batch_size}")
        if not (0 < hp.val_fraction < 1 and 0 < hp.test_fraction < 1 and hp.val_fraction + hp.test_fraction < 0.9):
            raise ValueError(f"val_fraction and test_fraction must be in (0, 1) and leave at least 10% for "
                             f"training, got {hp.val_fraction} and {hp.test_fraction}")
        train, val, test = stratified_split(y, hp.val_fraction, hp.test_fraction, hp.seed)
        for split, idx in (("training", train), ("validation", val), ("test", test)):
            if not (y[idx] == 1).any() or not (y[idx] == 0).any():
                raise DlbenchError(f"the {split} split has no {'positive' if (y[idx] == 0).all() else 'negative'} "
                                   f"rows: {int(y.sum())} positives of {len(y)} are too few for these fractions. "
                                   f"Use more data or larger --data.val_fraction / --data.test_fraction.")
        self.feature_names = names
        self.mean = x[train].mean(dim=0)
        std = x[train].std(dim=0)
        self.std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column stays 0, not NaN
        x = (x - self.mean) / self.std
        column, sign = best_feature(x[train], y[train])
        self.baseline_feature = names[column]
        score = sign * x[:, column]
        self.splits = {name: (x[idx], y[idx], score[idx]) for name, idx in (("train", train), ("val", val),
                                                                           ("test", test))}
        n_pos = int(y[train].sum())
        # Sizes and statistics the model receives through linked arguments (see dlbench.core.spec.DATA_KINDS).
        self.num_features = x.shape[1]
        self.pos_weight = (len(train) - n_pos) / n_pos

    def train_dataloader(self):
        x, y, score = self.splits["train"]
        # Batch norm cannot normalise a batch of one row: drop the last, short batch when there is a full one.
        return tensor_loader(self, x, y, score, batch_size=self.hparams.batch_size, shuffle=True,
                             drop_last=len(y) > self.hparams.batch_size)

    def _eval_loader(self, split: str):
        return tensor_loader(self, *self.splits[split], batch_size=max(self.hparams.batch_size, 4096))

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader("test")

    def predict_dataloader(self):
        return self._eval_loader("test")

    def predictor(self):
        """What ``dlbench predict`` needs to classify a user's own rows (see :mod:`dlbench.data.predict`): the
        feature column names in the model's order, the training split's mean and standard deviation of each, and
        the class names."""
        from dlbench_plugins.tabular.predict import TabularPredictor

        return TabularPredictor(self.feature_names, self.mean.tolist(), self.std.tolist(), self.class_names)


class BreastCancerDataModule(TabularDataModule):
    """scikit-learn's bundled Wisconsin diagnostic breast cancer table: 569 tumours, 30 numeric features from
    images of cell nuclei, 212 malignant (label 1, the class to detect) and 357 benign (label 0). The feature
    columns are named as scikit-learn names them (``mean radius``, ``mean texture``, ...)."""

    class_names = ("benign", "malignant")

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 seed: int = 0) -> None:
        """
        Args:
            batch_size: Rows per training batch.
            val_fraction: Fraction of each class held out for validation.
            test_fraction: Fraction of each class held out for testing.
            seed: Seed of the stratified split, kept apart from the training seed.
        """
        super().__init__()
        self.save_hyperparameters()
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        # scikit-learn codes malignant as 0; the positive class to detect is malignant.
        y = torch.from_numpy(1 - data.target).float()
        self.use_table(torch.from_numpy(data.data).float(), y, [str(n) for n in data.feature_names])


class CSVDataModule(TabularDataModule):
    """Any numeric CSV table with a header row and a 0/1 label column, e.g. the credit-card fraud data
    (``creditcard.csv``, label ``Class``, 492 frauds in 284,807 transactions). Every other column is a feature and
    must be numeric; missing values are an error (fill or drop them first)."""

    def __init__(self, path: str | None = None, label: str = "Class", batch_size: int = 256, val_fraction: float = 0.2,
                 test_fraction: float = 0.2, seed: int = 0) -> None:
        """
        Args:
            path: CSV file with a header row; every column but the label must be numeric (required).
            label: Column holding the label: 1 for the class to detect, 0 otherwise ("Class" in the credit-card
                fraud data of the source articles).
            batch_size: Rows per training batch (the articles use 2048 on the 285k-row fraud data).
            val_fraction: Fraction of each class held out for validation.
            test_fraction: Fraction of each class held out for testing.
            seed: Seed of the stratified split, kept apart from the training seed.
        """
        super().__init__()
        self.save_hyperparameters()
        if path is None:
            raise DlbenchError("which table? Give the CSV file with --data.path FILE, and its 0/1 label column with "
                               "--data.label NAME (default 'Class', as in the credit-card fraud data).")
        self.use_table(*read_table(path, label))
