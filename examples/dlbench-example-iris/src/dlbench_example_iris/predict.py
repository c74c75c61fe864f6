"""What ``dlbench predict`` and ``dlbench serve`` need to answer with a trained ``iris_mlp`` run on a user's own rows.

A CSV file with a header row is read one flower a row, keyed ``FILE:LINE``; the run's feature columns are found by
name in any order, and other columns (the species, an id) are ignored. ``dlbench serve`` passes each row of a JSON
request ``{"rows": [{"sepal length (cm)": 5.1, ...}]}`` as one record. Each row is standardised with the training
split's mean and standard deviation, as in training, and answered with class names and probabilities.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dlbench.data.predict import Example, InputError, Predictor, Sink, Source


class TablePredictor(Predictor):
    """The run's preprocessing of a table row: ``features`` (column names, in the model's order) standardised with
    the training split's ``mean`` and ``std``; the model's class indices named by ``class_names``."""

    inputs = "csv"
    extensions = (".csv",)

    def __init__(self, features: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 class_names: Sequence[str]) -> None:
        self.features = [str(f) for f in features]
        self.mean = torch.tensor(list(mean), dtype=torch.float32)
        self.std = torch.tensor(list(std), dtype=torch.float32)
        self.class_names = [str(c) for c in class_names]

    def state(self) -> dict[str, Any]:
        """Everything above as plain JSON data, saved with the run when it trains."""
        return {"features": self.features, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "class_names": self.class_names}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TablePredictor:
        """The predictor of a saved run, rebuilt in a process that has no training data."""
        return cls(state["features"], state["mean"], state["std"], state["class_names"])

    def describe(self) -> str:
        return f"CSV files with a header row naming the columns {', '.join(map(repr, self.features))}"

    def read(self, source: Source, options: dict[str, Any]) -> list[Example]:
        """One example a data row of a CSV file, or one for a JSON record; :class:`InputError` names the input and
        the fix when a column is missing or a value is not a number."""
        if source.record is not None:
            return [self._example(source.name, source.record)]
        reader = csv.DictReader(io.StringIO(source.read_text().removeprefix("\ufeff"), newline=""))
        try:
            header = [h.strip() for h in reader.fieldnames or []]
            self._check_columns(source.name, header)
            reader.fieldnames = header
            examples = [self._example(f"{source.name}:{reader.line_num}", row) for row in reader
                        if any(v and v.strip() for v in row.values() if isinstance(v, str))]
        except csv.Error as err:
            raise InputError(f"{source.name}: not a readable CSV file ({err}). Save it as CSV text.") from None
        if not examples:
            raise InputError(f"{source.name} has no data rows: give one flower a row below the header row.")
        return examples

    def _check_columns(self, name: str, columns: Sequence[str]) -> None:
        missing = [f for f in self.features if f not in columns]
        if missing:
            raise InputError(f"{name} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
                             f" (it has {list(columns)}). Add {'them' if len(missing) > 1 else 'it'}: the run reads "
                             f"its columns {self.features} by name, in any order, and ignores any others.")

    def _example(self, key: str, row: dict[str, Any]) -> Example:
        """The standardised features of one row (a CSV row or a JSON record: column name -> value)."""
        if not isinstance(row, dict):
            raise InputError(f"{key}: a row must be a JSON object of column names and values.")
        self._check_columns(key, list(row))
        values = []
        for feature in self.features:
            try:
                value = float(row[feature])
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                raise InputError(f"{key}: column {feature!r} holds {row[feature]!r}, not a number. Give a number, "
                                 f"or drop the row.")
            values.append(value)
        return Example(key, ((torch.tensor(values) - self.mean) / self.std,))

    def rows(self, outputs: dict[str, Any], examples: Sequence[Example], options: dict[str, Any],
             sink: Sink) -> list[dict[str, Any]]:
        """From the model's ``probs``: the ``prediction`` (the most probable class) and its ``probability``, then
        ``top2``, ``top2_probability``, ... up to ``options["top_k"]`` classes (3 by default)."""
        k = max(1, min(int(options.get("top_k") or 3), len(self.class_names)))
        probs, indices = outputs["probs"].topk(k, dim=1)
        rows = []
        for example, p, i in zip(examples, probs.tolist(), indices.tolist(), strict=True):
            row: dict[str, Any] = {"input": example.key, "prediction": self.class_names[i[0]],
                                   "probability": round(p[0], 6)}
            for rank in range(1, k):
                row[f"top{rank + 1}"] = self.class_names[i[rank]]
                row[f"top{rank + 1}_probability"] = round(p[rank], 6)
            rows.append(row)
        return rows

    def write_inputs(self, batch, folder: Path) -> list[Path]:
        """Each row of a test batch ``(x, y)``, un-standardised, as a one-row CSV file under the run's column names
        (for :func:`dlbench.testing.check_predict`)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, values in enumerate((batch[0].float().cpu() * self.std + self.mean).tolist()):
            paths.append(folder / f"{i:04d}.csv")
            with paths[-1].open("w", newline="") as f:
                csv.writer(f).writerows([self.features, values])
        return paths
