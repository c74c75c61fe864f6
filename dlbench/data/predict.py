"""The prediction contract: how a trained run reads a user's own files and answers in the data's own terms.

Two hooks make a plugin usable after training (``dlbench predict``, ``dlbench serve``):

* its LightningDataModule's ``predictor()`` returns a :class:`Predictor` once the data module is set up for fit:
  the preprocessing the run trains with (image size, channels and normalisation statistics, vocabulary, scaler,
  class names, ...) as plain data (:meth:`Predictor.state`), plus the code that turns a raw input into the tensors
  the model takes (:meth:`Predictor.read`) and the model's outputs back into rows (:meth:`Predictor.rows`).
  dlbench saves the state with the run when it trains (``RUN_DIR/predictor.json`` and every checkpoint), so a fresh
  process on a machine without the training data rebuilds the same predictor with :meth:`Predictor.from_state`;
* its LightningModule's ``predict_step`` returns a dict of named output tensors, one row a sample (``probs``,
  ``forecast``, ``images``, ``tokens``, ...) that its data kind's predictor knows how to render. Options of a
  prediction (``--top_k``, ``--horizon``, ``--num_samples``, ...) reach the model as ``self.predict_options``.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from dlbench.core.errors import DlbenchError
from dlbench.core.spec import import_ref


class InputError(DlbenchError):
    """One input cannot be read: the message names the input and the fix. The other inputs still get their rows."""


@dataclass
class Source:
    """One raw input as the user gave it: a file (``path``), an upload's bytes (``data``), a line of text (``text``)
    or a JSON record (``record``, e.g. one tabular row). ``name`` keys its rows."""

    name: str
    path: Path | None = None
    data: bytes | None = None
    text: str | None = None
    record: dict[str, Any] | None = None

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.path is not None:
            try:
                return self.path.read_bytes()
            except OSError as err:
                raise InputError(f"{self.name}: cannot read it ({err.strerror}). Check the path.") from None
        if self.text is not None:
            return self.text.encode()
        raise InputError(f"{self.name}: no file or data given.")

    def read_text(self) -> str:
        if self.text is not None:
            return self.text
        try:
            return self.read_bytes().decode("utf-8-sig")  # a byte-order mark, as some editors write, is dropped
        except UnicodeDecodeError:
            raise InputError(f"{self.name}: not UTF-8 text. Save it as UTF-8 text.") from None

    def stream(self) -> io.BytesIO:
        return io.BytesIO(self.read_bytes())


@dataclass
class Example:
    """One sample for the model: ``key`` names it in the output (a file name, ``file:line``, a node id) and
    ``value`` is what :meth:`Predictor.collate` batches (a tensor or a tuple of tensors)."""

    key: str
    value: Any
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything the rows need back (an original image size, the input text, ...). ``extra["error"]`` marks one
    example of a source that cannot be used (an empty line of a text file): it is reported in its place as an
    error row, with the others of the source predicted, and never reaches the model."""


class Sink:
    """Where rows put what is not a table cell: images a model makes, written as PNG files beside the table."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.written: list[Path] = []
        self._names: set[Path] = set()

    def image(self, name: str, array) -> str:
        """Write an ``(H, W)`` or ``(H, W, C)`` uint8 array as ``<folder>/<name>.png``; returns the path written
        (empty when there is no folder, e.g. a server's answer)."""
        if self.folder is None:
            return ""
        from PIL import Image

        self.folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = self.folder / f"{safe}.png"
        n = 1
        while path in self._names:
            n += 1
            path = self.folder / f"{safe}_{n}.png"  # a.png and other/a.png (or a.jpg) each keep their picture
        self._names.add(path)
        Image.fromarray(array).save(path)
        self.written.append(path)
        return str(path)


class Predictor:
    """The preprocessing of a run and the way back from its outputs; see the module docstring.

    Subclasses set :attr:`inputs` (what ``--input`` takes: ``image``, ``csv``, ``text``, ``wav``, or ``none`` for
    models that draw samples or predict on their own graph) and implement :meth:`state`, :meth:`from_state`,
    :meth:`read` and :meth:`rows`.
    """

    inputs: ClassVar[str] = "file"
    extensions: ClassVar[tuple[str, ...]] = ()
    """File suffixes a folder given as ``--input`` is searched for (lower case, with the dot)."""
    batch_size: ClassVar[int | None] = None
    """Examples a batch, where the predictor knows better than ``--batch_size`` (a graph: every node in one pass)."""

    def state(self) -> dict[str, Any]:
        """The preprocessing as JSON-serialisable plain data."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Predictor:
        raise NotImplementedError

    def read(self, source: Source, options: dict[str, Any]) -> list[Example]:
        """The examples of one input; :class:`InputError` when none of it can be used (the message names the input
        and the fix), an example with ``extra["error"]`` for one part that cannot."""
        raise NotImplementedError

    def generate(self, options: dict[str, Any]) -> list[Example]:
        """The examples of a prediction without inputs (samples to draw, every node of a graph)."""
        raise InputError("this model predicts on inputs: give --input FILE [FILE ...].")

    def collate(self, values: Sequence[Any]):
        """A batch of example values; by default stacked tensors (tuples stacked element-wise)."""
        import torch

        first = values[0]
        if isinstance(first, (tuple, list)):
            return type(first)(torch.stack([v[i] for v in values]) for i in range(len(first)))
        return torch.stack(list(values))

    def rows(self, outputs: dict[str, Any], examples: Sequence[Example], options: dict[str, Any],
             sink: Sink) -> list[dict[str, Any]]:
        """One row a example, in the data's own terms, from the model's named outputs (tensors on the CPU, one row
        a sample)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line saying what this predictor takes, for messages and ``--help``."""
        return f"{self.inputs} inputs"

    def export_module(self, model):
        """For ``dlbench export``: a module around ``model`` that takes raw values (pixel values 0-255, a series in
        its own units) and answers in the data's own units, so the exported file needs no preprocessing of its
        own; :meth:`raw_inputs` turns the model's inputs into such values for tracing and checking. ``None`` (the
        default) exports the model as it is, with its preprocessing written beside it."""
        return None

    def raw_inputs(self, inputs: tuple) -> tuple:
        """The model's (preprocessed) inputs as the raw values :meth:`export_module` takes."""
        return inputs

    def write_inputs(self, batch, folder: Path) -> list[Path]:
        """Write the inputs of a batch of the data module's test split as raw input files in ``folder`` (what a user
        would give ``--input``), for :func:`dlbench.testing.check_predict`; one file a sample, in batch order.
        Predictors without inputs (samples, a graph) need not implement it."""
        raise NotImplementedError


def cpu_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """A ``predict_step``'s named outputs as :meth:`Predictor.rows` takes them: tensors detached on the CPU, floating
    ones as float32 (a bf16 run's too); other values as they are."""
    import torch

    def plain(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        v = v.detach().cpu()
        return v.float() if v.is_floating_point() else v

    return {k: plain(v) for k, v in outputs.items()}


PREDICTOR_FILE = "predictor.json"
"""In a run directory: the predictor's class and state, written by the fit (see :mod:`dlbench.train.callbacks`)."""


def predictor_record(predictor: Predictor) -> dict[str, Any]:
    cls = type(predictor)
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "state": predictor.state()}


def predictor_from_record(record: dict[str, Any], where: str) -> Predictor:
    try:
        cls = import_ref(record["class"])
        return cls.from_state(record["state"])
    except DlbenchError:
        raise
    except Exception as err:  # a record from another version of the plugin, a class that moved
        raise DlbenchError(f"{where}: cannot rebuild the run's preprocessing ({type(err).__name__}: {err}). Re-run the "
                           f"fit with this version of the plugin.") from None


def warn(message: str) -> None:
    print(f"dlbench: {message}", file=sys.stderr)
