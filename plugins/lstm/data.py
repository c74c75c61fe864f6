"""A univariate time series from a CSV file, cut into windows and split chronologically.

The default is the bundled yearly sunspot series. Any CSV with a header row works: ``--data.path my.csv
--data.column price``. Statistics for normalisation come from the training part only, so nothing of the
validation or test future leaks into training. A trained run forecasts from a user's own CSV with ``dlbench predict``
(see :mod:`dlbench_plugins.lstm.predict`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import torch

from dlbench import DlbenchError
from dlbench.data.batches import tensor_loader

BUNDLED = Path(__file__).with_name("sunspots.csv")


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


TRAINING_FIXES = {
    "empty": "a header row and one value a row are expected.",
    "column": "Pick one with --data.column.",
    "value": "Clean the file or choose another --data.column.",
    "finite": "Fix or drop that row.",
}
"""The closing advice of :func:`series_column`'s messages when a training file is wrong; prediction passes its own
(see :mod:`dlbench_plugins.lstm.predict`)."""


def read_series(path: str | Path, column: str | None = None) -> torch.Tensor:
    """One numeric column of a CSV file as a float tensor; the last column when ``column`` is not given."""
    return read_series_column(path, column)[0]


def read_series_column(path: str | Path, column: str | None = None) -> tuple[torch.Tensor, str]:
    """:func:`read_series`, and the name of the column it read (the last one when ``column`` is not given)."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DlbenchError(f"series file {path} does not exist. Give an existing CSV with --data.path.") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise DlbenchError(f"series file {path} is not a readable CSV text file ({err}).") from None
    return series_column(rows, f"series file {path}", column)


def series_column(rows: list[list[str]], where: str, column: str | None = None,
                  error: type[DlbenchError] = DlbenchError,
                  fixes: dict[str, str] = TRAINING_FIXES) -> tuple[torch.Tensor, str]:
    """The values of one column of CSV ``rows`` (a header row, then one value a row; blank rows skipped) and the
    column's name: training and prediction read files with this same code. ``where`` opens
    each message (``series file PATH``); ``error`` is the exception raised, ``fixes`` the advice that ends each
    message (keys ``empty``, ``column``, ``value``, ``finite``; see :data:`TRAINING_FIXES`)."""
    if len(rows) < 2:
        raise error(f"{where} has no data rows: {fixes['empty']}")
    header = [h.strip() for h in rows[0]]
    if header:
        header[0] = header[0].removeprefix("\ufeff")  # a byte-order mark some spreadsheets write
    if not header:
        raise error(f"{where} starts with an empty line; its first line must be the header row naming the columns.")
    if column is None:
        index = len(header) - 1
    elif column in header:
        index = header.index(column)
    else:
        raise error(f"{where} has no column {column!r}; its columns are {header}. {fixes['column']}")
    values = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            value = float(row[index])
        except (IndexError, ValueError):
            raise error(f"{where}, line {line_no}: column {header[index]!r} is not a number ({row!r}). "
                        f"{fixes['value']}") from None
        if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
            raise error(f"{where}, line {line_no}: value {value} is not a finite 32-bit float "
                        f"(|value| <= {_FLOAT32_MAX:.3g}). {fixes['finite']}")
        values.append(value)
    return torch.tensor(values, dtype=torch.float32), header[index]


def windows(series: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (window, next value) pairs: x[i] = series[i:i+window], y[i] = series[i+window]."""
    x = series.unfold(0, window, 1)[:-1].unsqueeze(-1)
    y = series[window:].unsqueeze(-1)
    return x, y


class SeriesDataModule(L.LightningDataModule):
    """Windows of a univariate series, split chronologically into train, validation and test."""

    def __init__(self, path: str | None = None, column: str | None = None, window: int = 10,
                 val_fraction: float = 0.15, test_fraction: float = 0.15, batch_size: int = 32) -> None:
        """
        Args:
            path: CSV file with a header row; the bundled yearly sunspot series when not given.
            column: Column holding the series; the last column when not given.
            window: Number of past values the model sees to predict the next one.
            val_fraction: Fraction of the series, after the training part, used for validation.
            test_fraction: Fraction at the end of the series used for testing.
            batch_size: Windows per training batch.
        """
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 0.9):
            raise ValueError(f"val_fraction and test_fraction must be in (0, 1) and leave at least 10% for "
                             f"training, got {val_fraction} and {test_fraction}")
        self.save_hyperparameters()
        self.series, self.column = read_series_column(path or BUNDLED, column)
        n = len(self.series)
        self.n_test = int(round(n * test_fraction))
        self.n_val = int(round(n * val_fraction))
        self.n_train = n - self.n_val - self.n_test
        if min(self.n_train, self.n_val, self.n_test) <= window:
            raise DlbenchError(f"series of {n} values is too short for window={window}: each split needs more than "
                               f"{window} values. Use a longer series or a smaller --data.window.")
        train = self.series[: self.n_train]
        # Sizes and statistics the model receives through linked arguments (see dlbench.core.spec.DATA_KINDS).
        self.n_features = 1
        self.window = window
        self.target_mean = float(train.mean())
        self.target_std = float(train.std()) or 1.0

    def _split(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Targets lie in [start, stop); their input windows may reach back into the previous split, as they would
        # when forecasting for real.
        lo = max(0, start - self.window)
        normed = (self.series[lo:stop] - self.target_mean) / self.target_std
        return windows(normed, self.window)

    def setup(self, stage: str | None = None) -> None:
        n_tv = self.n_train + self.n_val
        self.train_xy = self._split(0, self.n_train)
        self.val_xy = self._split(self.n_train, n_tv)
        self.test_xy = self._split(n_tv, len(self.series))

    def train_dataloader(self):
        return tensor_loader(self, *self.train_xy, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return tensor_loader(self, *self.val_xy, batch_size=1024)

    def test_dataloader(self):
        return tensor_loader(self, *self.test_xy, batch_size=1024)

    def predict_dataloader(self):
        return self.test_dataloader()

    def predictor(self):
        """What ``dlbench predict`` needs to forecast from a user's CSV (see :mod:`dlbench.data.predict`): the name
        of the column this run reads, the window, and the training part's mean and standard deviation. These are
        the very ``target_mean`` and ``target_std`` linked into the model's hyperparameters: the predictor
        standardises a file's last window with them, the model's ``predict_step`` returns to the series' units with
        its copy."""
        from dlbench_plugins.lstm.predict import SeriesPredictor

        return SeriesPredictor(self.column, self.window, self.target_mean, self.target_std)
