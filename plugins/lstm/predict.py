"""Forecasting with a trained LSTM run from a user's own CSV files (``dlbench predict --input prices.csv``).

Each file is read by the training code (:func:`dlbench_plugins.lstm.data.series_column`): the column the run trained
on, found by its name wherever it stands among the file's columns, blank rows skipped. The file's last ``window``
values, standardised by the training part's mean and standard deviation, are what the model reads; it forecasts
``--horizon N`` steps (default 1) past the file's end, feeding each forecast back in as the newest value of the
window for the next (see :meth:`dlbench_plugins.lstm.model.LSTMForecaster.predict_step`).

One row a file: ``input`` (the file) and ``step_1`` ... ``step_N``, the forecasts in the series' own units, always
named so, whatever the horizon (``step_1`` is the next value).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dlbench import DlbenchError
from dlbench.data.predict import Example, InputError, Predictor, Sink, Source


def horizon_of(options: dict[str, Any]) -> int:
    """The ``--horizon`` of a prediction (default 1); a DlbenchError, which stops the whole prediction, below 1."""
    horizon = options.get("horizon")
    horizon = 1 if horizon is None else int(horizon)
    if horizon < 1:
        raise DlbenchError(f"--horizon must be >= 1 (steps to forecast after each file's last value), got {horizon}.")
    return horizon


class SeriesPredictor(Predictor):
    """The last ``window`` values of the run's ``column`` of each CSV file, standardised with the training part's
    ``mean`` and ``std``; rows of forecasts ``step_1`` ... ``step_N``."""

    inputs = "csv"
    extensions = (".csv",)

    def __init__(self, column: str, window: int, mean: float, std: float) -> None:
        self.column, self.window = str(column), int(window)
        self.mean, self.std = float(mean), float(std)

    def export_module(self, model) -> torch.nn.Module:
        return SeriesInUnits(model, self.mean, self.std)

    def raw_inputs(self, inputs: tuple) -> tuple:
        return (inputs[0].float() * self.std + self.mean, *inputs[1:])

    def state(self) -> dict[str, Any]:
        return {"column": self.column, "window": self.window, "mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SeriesPredictor:
        return cls(state["column"], state["window"], state["mean"], state["std"])

    def describe(self) -> str:
        return (f"CSV files with a header row and a column {self.column!r} holding at least {self.window} values "
                f"(the last {self.window} are the window the forecast starts from)")

    def values(self, source: Source) -> torch.Tensor:
        """The run's column of a CSV source, read as training reads it; InputError naming the file and the fix."""
        from dlbench_plugins.lstm.data import series_column

        text = source.read_text()
        try:
            rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
        except csv.Error as err:
            raise InputError(f"{source.name}: not a readable CSV file ({err}). Give a CSV text file with a header "
                             f"row.") from None
        fixes = {
            "empty": f"a header row, then one row a time step with the value in column {self.column!r}, is expected.",
            "column": f"The run forecasts column {self.column!r}: give a CSV with a column of that name (other "
                      f"columns are ignored, in any order).",
            "value": "Fix or drop that row.",
            "finite": "Fix or drop that row.",
        }
        series, _ = series_column(rows, source.name, self.column, InputError, fixes)
        if len(series) < self.window:
            raise InputError(f"{source.name}: {len(series)} values in column {self.column!r}; the run reads windows "
                             f"of {self.window}, so at least {self.window} are needed. Give a longer series.")
        return series

    def read(self, source: Source, options: dict[str, Any]) -> list[Example]:
        horizon_of(options)  # a bad --horizon stops the prediction before any file is read
        window = self.values(source)[-self.window:]
        x = ((window - self.mean) / self.std).unsqueeze(-1)  # (window, 1), as the training windows
        return [Example(source.name, (x,))]

    def write_inputs(self, batch, folder: Path) -> list[Path]:
        """Each standardised window of a batch ``(x (B, window, 1), ...)`` as a CSV file of its values in the
        series' units, under the run's column name (for :func:`dlbench.testing.check_predict`)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, window in enumerate((batch[0][..., 0].float() * self.std + self.mean).tolist()):
            paths.append(folder / f"{i:04d}.csv")
            with paths[-1].open("w", newline="") as f:
                csv.writer(f).writerows([[self.column], *([repr(v)] for v in window)])
        return paths

    def rows(self, outputs: dict[str, Any], examples: Sequence[Example], options: dict[str, Any],
             sink: Sink) -> list[dict[str, Any]]:
        forecast = outputs["forecast"]
        if forecast.dim() == 1:
            forecast = forecast.unsqueeze(1)
        rows = []
        for example, steps in zip(examples, forecast.tolist(), strict=True):
            row: dict[str, Any] = {"input": example.key}
            row.update({f"step_{i}": _float32(v) for i, v in enumerate(steps, start=1)})
            rows.append(row)
        return rows


def _float32(value: float) -> float:
    """A float32 output as the shortest decimal that reads back as the same float32 (9 significant digits)."""
    return float(f"{value:.9g}")


class SeriesInUnits(torch.nn.Module):
    """The forecaster in the series' own units: windows ``(N, window, 1)`` of raw values in, the next value
    ``(N, 1)`` out, standardised and brought back inside with the training split's mean and standard deviation; what
    ``dlbench export`` writes, so the exported file needs no scaling of its own."""

    def __init__(self, model: torch.nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.model, self.mean, self.std = model, float(mean), float(std)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.model((values - self.mean) / self.std) * self.std + self.mean
