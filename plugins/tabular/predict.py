"""Classifying a user's own table rows with a trained tabular run (``dlbench predict --input rows.csv``).

Each row of a CSV file (a header row naming the columns, then one example a row) is one example, keyed
``FILE:LINE`` with lines counted as a person counts them in the file (the header is line 1; blank lines count, and
are skipped). The run's feature columns are found by name, in any order; other columns (the label, an id) are
ignored. Each row is standardised with the training split's mean and standard deviation, as in training. A JSON
record (``Source.record``, e.g. one row of ``{"rows": [...]}`` given to a server) is one example under the source's
name, its keys the column names.

Rows: ``input``, ``prediction`` (the more probable class), ``probability`` (its probability), ``top2`` and
``top2_probability`` (the other class; ``--top_k 1`` leaves them out), as
:func:`dlbench_plugins.images.predict.class_rows` writes them for every classifier, and ``decision``: the class the
model's own ``threshold`` picks (the positive class when its probability reaches the threshold), which differs from
``prediction`` only for a run trained with a threshold other than 0.5.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from dlbench_plugins.tabular.data import _MISSING

from dlbench.data.predict import Example, InputError, Predictor, Sink, Source

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class TabularPredictor(Predictor):
    """The run's ``features`` (column names, in the model's order) of each row, standardised with the training
    split's ``mean`` and ``std``; rows in terms of ``class_names`` (negative, positive)."""

    inputs = "csv"
    extensions = (".csv",)

    def __init__(self, features: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 class_names: Sequence[str] = ("0", "1")) -> None:
        self.features = [str(f) for f in features]
        self.mean = torch.tensor(list(mean), dtype=torch.float32)
        self.std = torch.tensor(list(std), dtype=torch.float32)
        self.class_names = tuple(str(c) for c in class_names)
        if not len(self.features) == len(self.mean) == len(self.std):
            raise ValueError(f"{len(self.features)} feature names for {len(self.mean)} means and {len(self.std)} "
                             f"standard deviations")

    def state(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "class_names": list(self.class_names)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TabularPredictor:
        return cls(state["features"], state["mean"], state["std"], state.get("class_names", ("0", "1")))

    def describe(self) -> str:
        shown = ", ".join(self.features[:4]) + (", ..." if len(self.features) > 4 else "")
        return f"CSV files with a header row naming the run's {len(self.features)} feature columns ({shown})"

    def scale(self, values: Sequence[float]) -> torch.Tensor:
        """Raw feature values, in the run's order, standardised as in training."""
        return (torch.tensor(list(values), dtype=torch.float32) - self.mean) / self.std

    def read(self, source: Source, options: dict[str, Any]) -> list[Example]:
        if source.record is not None:
            return [Example(source.name, (self.scale(self._record(source.name, source.record)),))]
        text = source.read_text().removeprefix("\ufeff")
        try:
            rows = _numbered_rows(text)
        except csv.Error as err:
            raise InputError(f"{source.name}: not a readable CSV file ({err}). Give a CSV text file with a header "
                             f"row.") from None
        if not rows:
            raise InputError(f"{source.name} is empty: a header row naming the columns ({self.describe_columns()}), "
                             f"then one row an example, is expected.")
        _, header = rows[0]
        header = [h.strip() for h in header]
        columns = self._columns(source.name, header)
        examples = []
        for line, row in rows[1:]:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise InputError(f"{source.name}, line {line}: {len(row)} fields where the header names "
                                 f"{len(header)}. Fix the row (a stray comma, a missing field?).")
            values = [_number(f"{source.name}, line {line}", name, row[i]) for name, i in zip(self.features, columns,
                                                                                          strict=True)]
            examples.append(Example(f"{source.name}:{line}", (self.scale(values),)))
        if not examples:
            raise InputError(f"{source.name} has a header but no data rows: give one row an example below it.")
        return examples

    def describe_columns(self) -> str:
        return ", ".join(repr(f) for f in self.features[:4]) + (", ..." if len(self.features) > 4 else "")

    def _columns(self, name: str, header: list[str]) -> list[int]:
        """Where each of the run's features stands in ``header`` (a name the run has twice: its occurrences in
        order)."""
        have, need = Counter(header), Counter(self.features)
        missing = [f for f in need if have[f] < need[f]]
        if missing:
            raise self._lacks(name, missing, header)
        doubled = [f for f in need if have[f] > need[f]]
        if doubled:
            raise InputError(f"{name}: column {doubled[0]!r} appears {have[doubled[0]]} times in the header, so it is "
                             f"unclear which to use. Rename or drop the extra one.")
        seen: Counter[str] = Counter()
        positions = []
        for feature in self.features:
            positions.append([i for i, h in enumerate(header) if h == feature][seen[feature]])
            seen[feature] += 1
        return positions

    def _record(self, name: str, record: dict[str, Any]) -> list[float]:
        if not isinstance(record, dict):
            raise InputError(f"{name}: a row must be a JSON object of column names and values, got "
                             f"{type(record).__name__}.")
        missing = [f for f in dict.fromkeys(self.features) if f not in record]
        if missing:
            raise self._lacks(name, missing, list(record))
        return [_number(name, f, record[f]) for f in self.features]

    def _lacks(self, name: str, missing: list[str], has: list[str]) -> InputError:
        shown = ", ".join(map(repr, missing[:8])) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        return InputError(f"{name} lacks the run's column{'s' if len(missing) > 1 else ''} {shown}; its columns are "
                          f"{has}. Add {'them' if len(missing) > 1 else 'it'}: the run reads its "
                          f"{len(self.features)} feature columns by name, in any order, and ignores others.")

    def write_inputs(self, batch, folder: Path) -> list[Path]:
        """Each standardised row of a batch ``(x (B, F), ...)`` as a one-row CSV file of its raw values under the
        run's column names (for :func:`dlbench.testing.check_predict`)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, values in enumerate((batch[0].float() * self.std + self.mean).tolist()):
            paths.append(folder / f"{i:04d}.csv")
            with paths[-1].open("w", newline="") as f:
                csv.writer(f).writerows([self.features, [repr(v) for v in values]])
        return paths

    def rows(self, outputs: dict[str, Any], examples: Sequence[Example], options: dict[str, Any],
             sink: Sink) -> list[dict[str, Any]]:
        from dlbench_plugins.images.predict import class_rows

        rows: list[dict[str, Any]] = [{"input": e.key} for e in examples]
        top_k = options.get("top_k")
        for row, extra in zip(rows, class_rows(outputs["probs"], self.class_names, 3 if top_k is None else top_k),
                              strict=True):
            row.update(extra)
        if "positive" in outputs:
            for row, positive in zip(rows, outputs["positive"].tolist(), strict=True):
                row["decision"] = self.class_names[int(positive)]
        return rows


def _numbered_rows(text: str) -> list[tuple[int, list[str]]]:
    """CSV records with the line each starts on (a quoted field may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    start = 1
    for row in reader:
        rows.append((start, row))
        start = reader.line_num + 1
    return rows


def _number(where: str, column: str, cell: Any) -> float:
    """A cell as a finite float32-sized number; InputError naming ``where`` and the column otherwise."""
    if isinstance(cell, bool) or (cell is not None and not isinstance(cell, (int, float, str))):
        raise InputError(f"{where}: column {column!r} holds {cell!r}, not a number. The model reads numbers only.")
    if cell is None or (isinstance(cell, str) and cell.strip().lower() in _MISSING):
        raise InputError(f"{where}: column {column!r} has a missing value. The model needs every value: fill it (e.g. "
                         f"with the column's median) or drop the row.")
    try:
        value = float(cell.strip() if isinstance(cell, str) else cell)
    except (ValueError, OverflowError):
        raise InputError(f"{where}: column {column!r} is not numeric ({cell!r}). The model reads numbers only: "
                         f"encode it as a number as the training data did.") from None
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        raise InputError(f"{where}: column {column!r} holds {cell!r}, not a finite 32-bit float (|value| <= "
                         f"{_FLOAT32_MAX:.3g}). Fix or drop the row.")
    return value
