"""``dlbench predict``: a trained run answers on the user's own files.

The run's preprocessing comes back from the run itself (``predictor.json``, or the record in its checkpoint; see
:mod:`dlbench.data.predict`), its model from the checkpoint; each input becomes the tensors the model trained on,
the Lightning Trainer runs ``predict_step`` (any accelerator, device count and precision), and a
``BasePredictionWriter`` turns each batch's outputs into rows in the data's own terms. The rows go to ``--output``
(CSV or JSON lines by its suffix) or to ``RUN_DIR/predictions/predict_N/predictions.csv``, with the PNG files of
models that make images beside them; the run's own files are never touched.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlbench.core.conventions import log_root
from dlbench.core.errors import DlbenchError
from dlbench.data.predict import (
    PREDICTOR_FILE,
    Example,
    InputError,
    Predictor,
    Source,
    predictor_from_record,
)
from dlbench.runs.trained import TrainedRun

PREDICTIONS_DIR = "predictions"
_DIR_ENV = "DLBENCH_PREDICT_DIR"  # the output folder, handed to the processes a multi-device run starts
_TOKEN_ENV = "DLBENCH_PREDICT_TOKEN"  # names the ranks' part files of one prediction
TABLE_ROWS = 10


@dataclass
class Prediction:
    """What a prediction produced: rows in input order (failed inputs as rows with an ``error``), and where."""

    rows: list[dict[str, Any]]
    errors: list[tuple[str, str]]
    path: Path | None
    folder: Path
    images: list[Path] = field(default_factory=list)


def load_predictor(source: TrainedRun, data: str | None = None) -> Predictor:
    """The run's predictor: from its checkpoint, else its ``predictor.json``, else (with ``data``) rebuilt from the
    run's data module (``data="run"``) or a registered dataset, which must then be on this machine."""
    record = ((source.saved.get("callbacks") or {}).get("SavePredictor") or {}).get("record")
    where = str(source.checkpoint)
    if record is None and source.run_dir is not None and (source.run_dir / PREDICTOR_FILE).is_file():
        where = str(source.run_dir / PREDICTOR_FILE)
        try:
            record = json.loads((source.run_dir / PREDICTOR_FILE).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DlbenchError(f"{where} is unreadable ({err}). Restore it, or add --data to rebuild the "
                               f"preprocessing from the run's training data.") from None
    if record is not None and data is None:
        return predictor_from_record(record, where)
    if data is None:
        run = source.run_dir or source.checkpoint
        raise DlbenchError(f"{run} carries no preprocessing for prediction: it has no {PREDICTOR_FILE} and its "
                           f"checkpoint no predictor record (it was trained before dlbench saved them, or its plugin "
                           f"has no predictor). Re-run the fit (dlbench fit --config RUN_DIR/config.yaml), or add "
                           f"--data to rebuild the preprocessing from the run's training data on this machine.")
    datamodule = _datamodule(source, data)
    make = getattr(datamodule, "predictor", None)
    if not callable(make):
        raise DlbenchError(f"the data module {type(datamodule).__name__} has no predictor() hook, so its plugin cannot "
                           f"predict on files (see 'Writing a plugin' in the README).")
    datamodule.setup("fit")
    return make()


def _datamodule(source: TrainedRun, data: str):
    if data == "run":
        return source.load_datamodule()
    from dlbench.core import registry
    from dlbench.core.spec import import_ref

    return import_ref(registry.dataset(data).datamodule)()


def expand(inputs: Sequence[str], predictor: Predictor) -> list[Source | tuple[str, InputError]]:
    """Sources of the ``--input`` items: files, the files of a folder (by the predictor's suffixes, sorted), ``-``
    for standard input; an item that does not exist becomes an error in its place."""
    sources: list[Source | tuple[str, InputError]] = []
    for item in inputs:
        if item == "-":
            sources.append(Source(name="stdin", data=sys.stdin.buffer.read()))
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in predictor.extensions)
            if not found:
                wanted = ", ".join(predictor.extensions) or "files"
                sources.append((item, InputError(f"{item}: a folder with no {wanted} files in it. Give a folder of "
                                                 f"inputs or the files themselves.")))
            sources += [Source(name=str(p), path=p) for p in found]
        elif path.is_file():
            sources.append(Source(name=item, path=path))
        else:
            sources.append((item, InputError(f"{item}: no such file or folder. Check the path.")))
    return sources


def read_examples(predictor: Predictor, sources: Sequence[Source | tuple[str, InputError]],
                  options: dict[str, Any]) -> tuple[list[tuple[int, Example]], list[tuple[int, str, str]]]:
    """Each source read into examples, numbered in input order; errors keep their place as ``(order, input,
    message)``: a source that could not be read at all, or one example of it that could not (an example whose
    ``extra["error"]`` says why, e.g. an empty line of a text file)."""
    examples: list[tuple[int, Example]] = []
    errors: list[tuple[int, str, str]] = []
    order = 0
    for source in sources:
        if isinstance(source, tuple):
            name, err = source
            errors.append((order, name, str(err)))
            order += 1
            continue
        try:
            read = list(predictor.read(source, options))
        except InputError as err:
            errors.append((order, source.name, str(err)))
            order += 1
            continue
        for example in read:
            if example.extra.get("error"):
                errors.append((order, example.key, str(example.extra["error"])))
            else:
                examples.append((order, example))
            order += 1
    return examples, errors


def output_folder(source: TrainedRun, plugin: str) -> Path:
    """A new ``predictions/predict_N`` folder of the run (claimed with an atomic mkdir), or of
    ``<log dir>/<plugin>`` for a checkpoint outside a run or a run directory that cannot be written."""
    given = os.environ.get(_DIR_ENV)
    if given:  # a process started by a multi-device run: its parent chose the folder
        return Path(given)
    if source.run_dir is not None and os.access(source.run_dir, os.W_OK):
        root = source.run_dir / PREDICTIONS_DIR
    else:
        root = Path(log_root()) / plugin / PREDICTIONS_DIR
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        try:
            (root / f"predict_{n}").mkdir()
            return root / f"predict_{n}"
        except FileExistsError:
            n += 1


def _writer_class():
    from lightning.pytorch.callbacks import BasePredictionWriter

    from dlbench.data.predict import Sink, cpu_outputs

    class RowWriter(BasePredictionWriter):
        """Rows of each batch as it is predicted, each process into its own part file; rank zero joins them in input
        order (an input a distributed sampler repeated to even out the ranks is kept once)."""

        def __init__(self, predictor: Predictor, examples: list[tuple[int, Example]], options: dict[str, Any],
                     parts: Path, images: Path) -> None:
            super().__init__(write_interval="batch")
            self.predictor, self.examples, self.options = predictor, examples, options
            self.parts = parts
            self.sink = Sink(images)
            self.rows: dict[int, dict[str, Any]] = {}

        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                               dataloader_idx) -> None:
            if not isinstance(prediction, dict):
                raise DlbenchError(f"{type(pl_module).__name__}.predict_step returned a {type(prediction).__name__}; "
                                   f"dlbench predict needs a dict of named outputs (see dlbench.data.predict).")
            outputs = cpu_outputs(prediction)
            chosen = [self.examples[i] for i in batch_indices]
            rows = self.predictor.rows(outputs, [e for _, e in chosen], self.options, self.sink)
            for (order, _), row in zip(chosen, rows, strict=True):
                self.rows[order] = row

        def on_predict_end(self, trainer, pl_module) -> None:
            token = os.environ.get(_TOKEN_ENV, "")
            part = self.parts / f".rows.{token}.{trainer.global_rank}.json"
            part.write_text(json.dumps({str(k): v for k, v in self.rows.items()}))
            trainer.strategy.barrier()
            if trainer.is_global_zero:
                merged: dict[int, dict[str, Any]] = {}
                for rank in range(trainer.world_size):
                    path = self.parts / f".rows.{token}.{rank}.json"
                    merged.update({int(k): v for k, v in json.loads(path.read_text()).items()})
                    path.unlink()
                self.rows = merged

    return RowWriter


def predict(run: str | Path, inputs: Sequence[str], options: dict[str, Any] | None = None,
            output: str | Path | None = None, ckpt_path: str | None = None, data: str | None = None,
            batch_size: int = 256, trainer_args: dict[str, Any] | None = None,
            weights_only: bool = True) -> Prediction:
    """Predict with the run (a run directory or a checkpoint file) on ``inputs``; see the module docstring."""

    options = dict(options or {})
    source = TrainedRun.open(checkpoint_of(run, ckpt_path), weights_only)
    predictor = load_predictor(source, data)
    model = source.load_model(weights_only)
    mode = predicts_from(model, predictor)
    if mode == "samples" and inputs:
        what = f"it predicts on {predictor.describe()}" if predictor.inputs == "none" \
            else "it draws samples: give --num_samples N [--seed S] instead"
        raise DlbenchError(f"{source.plugin_name} takes no --input: {what}. Drop --input.")
    if mode == "inputs" and not inputs:
        raise DlbenchError(f"predict on what? {source.plugin_name} takes {predictor.describe()}: add --input PATH "
                           f"[PATH ...].")
    errors: list[tuple[int, str, str]] = []
    if inputs:
        examples, errors = read_examples(predictor, expand(inputs, predictor), options)
    else:
        try:
            examples = list(enumerate(predictor.generate(options)))
        except InputError as err:
            raise DlbenchError(str(err)) from None
    out_path = _output_path(output)
    folder = out_path.parent if out_path is not None and not os.environ.get(_DIR_ENV) \
        else output_folder(source, source.plugin_name)
    saved_env = {k: os.environ.get(k) for k in (_DIR_ENV, _TOKEN_ENV)}
    os.environ[_DIR_ENV] = str(folder)  # for the processes a multi-device run starts; restored below
    os.environ.setdefault(_TOKEN_ENV, str(os.getpid()))
    try:
        return _run(source, predictor, model, examples, errors, options, folder, out_path, batch_size, trainer_args)
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run(source: TrainedRun, predictor: Predictor, model, examples: list[tuple[int, Example]],
         errors: list[tuple[int, str, str]], options: dict[str, Any], folder: Path, out_path: Path | None,
         batch_size: int, trainer_args: dict[str, Any] | None) -> Prediction:
    import lightning as L
    from torch.utils.data import DataLoader

    writer = _writer_class()(predictor, examples, options, folder,
                             folder if out_path is None else _images_folder(out_path))
    rows: dict[int, dict[str, Any]] = {}
    if examples:
        model.predict_options = options
        size = getattr(predictor, "batch_size", None) or batch_size  # a graph: all its nodes in one pass
        loader = DataLoader(range(len(examples)), batch_size=size, shuffle=False,
                            collate_fn=lambda idx: predictor.collate([examples[i][1].value for i in idx]))
        settings = {"accelerator": "cpu", "devices": 1, **(trainer_args or {})}
        _quiet_lightning()
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[writer], **settings)
        trainer.predict(model, dataloaders=loader, return_predictions=False)
        if not trainer.is_global_zero:
            sys.exit(0)
        rows = writer.rows
    for order, name, message in errors:
        rows[order] = {"input": name, "error": message}
    ordered = [rows[k] for k in sorted(rows)]
    path = out_path or folder / "predictions.csv"
    write_rows(ordered, path)
    return Prediction(ordered, [(n, m) for _, n, m in errors], path, folder, writer.sink.written)


def predicts_from(model, predictor: Predictor) -> str:
    """``inputs`` (the user's files), ``samples`` (draws, no inputs: a GAN) or ``either`` (a VAE reconstructs inputs
    or draws samples): the model's ``predicts_from`` attribute, else ``samples`` for data whose predictor takes no
    inputs (a graph predicted on its own nodes), else ``inputs``."""
    declared = getattr(model, "predicts_from", None)
    if declared in ("inputs", "samples", "either"):
        return declared
    return "samples" if predictor.inputs == "none" else "inputs"


def _quiet_lightning() -> None:
    """No lines about accelerators that are not used, nor Lightning's deprecation notes: predict prints rows."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def checkpoint_of(run: str | Path, ckpt_path: str | None) -> Path:
    """What to open for ``--run RUN [--ckpt_path best|last|FILE]``: the run directory itself (its best checkpoint),
    the run's last checkpoint, or the file given."""
    from dlbench.runs.directory import RunDir

    if ckpt_path in (None, "best") and Path(run).is_dir():
        return Path(run)
    if ckpt_path in ("best", "last"):
        return RunDir(Path(run)).checkpoint(ckpt_path)
    return Path(ckpt_path) if ckpt_path else Path(run)


def _output_path(output: str | Path | None) -> Path | None:
    if output is None:
        return None
    path = Path(output)
    if path.is_dir():
        raise DlbenchError(f"--output {output} is a folder; give a file name ending in .csv or .jsonl.")
    if path.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise DlbenchError(f"--output {output}: the rows are written as CSV (.csv) or JSON lines (.jsonl or .json); "
                           f"name the file with one of those suffixes.")
    if not path.parent.is_dir():
        raise DlbenchError(f"cannot write {output}: its folder {path.parent} does not exist. Create it first or "
                           f"choose another --output.")
    return path


def _images_folder(out_path: Path) -> Path:
    return out_path.with_name(out_path.stem + "_images")


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """CSV (columns in order of first appearance; list and dict cells as JSON), JSON lines (``.jsonl``) or one JSON
    array (``.json``), by the file's suffix; written atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as out:
        if path.suffix.lower() == ".csv":
            columns: dict[str, None] = {}
            for row in rows:
                columns.update(dict.fromkeys(row))
            fields = [c for c in columns if c != "error"] + (["error"] if "error" in columns else [])
            writer = csv.DictWriter(out, fieldnames=fields)
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()}
                             for row in rows)
        elif path.suffix.lower() == ".json":
            json.dump(rows, out, indent=1)
            out.write("\n")
        else:
            for row in rows:
                out.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def table(rows: list[dict[str, Any]], limit: int = TABLE_ROWS, width: int = 100) -> str:
    """The first rows as a short text table: the input and its first few fields, cut to ``width``."""
    shown = rows[:limit]
    if not shown:
        return "(no rows)"
    columns = [c for c in dict.fromkeys(k for row in shown for k in row) if c != "error"][:6]
    cells = [[_cell(row.get(c, "")) for c in columns] for row in shown]
    widths = [min(max(len(c), *(len(r[i]) for r in cells)), 40) for i, c in enumerate(columns)]
    lines = ["  ".join(f"{c[:w]:<{w}}" for c, w in zip(columns, widths, strict=True)).rstrip()]
    for row, r in zip(shown, cells, strict=True):
        if "error" in row:  # the reason in full, after the input: it says what to fix
            lines.append(f"{r[0][:widths[0]]:<{widths[0]}}  error: {row['error']}")
        else:
            lines.append("  ".join(f"{v[:w]:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip())
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows")
    return "\n".join(line if "  error: " in line else line[:width] for line in lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _trainer_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if args.accelerator:
        settings["accelerator"] = args.accelerator
    if args.devices:
        settings["devices"] = int(args.devices) if args.devices.lstrip("-").isdigit() else args.devices
    if args.precision:
        settings["precision"] = args.precision
    if isinstance(settings.get("devices"), int) and settings["devices"] > 1:
        settings.setdefault("strategy", "ddp")
    return settings


def cmd_predict(args: argparse.Namespace) -> int:
    from dlbench.train.lightning_cli import check_trainer_values

    settings = _trainer_settings(args)
    check_trainer_values(settings)
    options = {k: v for k, v in {"top_k": args.top_k, "horizon": args.horizon, "num_samples": args.num_samples,
                                 "nodes": args.nodes, "seed": args.seed,
                                 "score_threshold": args.score_threshold}.items() if v is not None}
    for key in ("top_k", "horizon", "num_samples", "batch_size"):
        value = options.get(key, getattr(args, key, None))
        if value is not None and value < 1:
            raise DlbenchError(f"--{key} must be >= 1, got {value}.")
    if args.score_threshold is not None and not 0 <= args.score_threshold <= 1:
        raise DlbenchError(f"--score_threshold is a probability in [0, 1], got {args.score_threshold}.")
    if args.run is None:
        raise DlbenchError("predict with which run? dlbench predict --run lightning_logs/<plugin>/version_N --input "
                           "FILE [FILE ...]")
    result = predict(args.run, args.input or [], options, args.output, args.ckpt_path, args.data, args.batch_size,
                     settings, args.weights_only)
    print(table(result.rows))
    for _, message in result.errors:
        print(f"dlbench: error: {message}", file=sys.stderr)
    done = len(result.rows) - len(result.errors)
    images = f"; {len(result.images)} images beside it" if result.images else ""
    print(f"dlbench: {done} predictions ({len(result.errors)} inputs failed) written to {result.path}{images}",
          file=sys.stderr)
    return 2 if result.errors else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from dlbench.core.options import parse_bool

    p = subparsers.add_parser(
        "predict", prog="dlbench predict", help="predict with a trained run on your own files",
        description="Predict with a trained run on your own files: images (PNG/JPEG, any size and mode, or a folder) "
                    "for image models, a CSV for lstm and tabular, a text file of one example a line (or - for "
                    "standard input) for transformer and seq2seq, WAV files for audio; gcn predicts on its own graph, "
                    "gan and vae draw --num_samples. Each input gets the preprocessing the run trained with; the rows "
                    "go to --output (CSV or JSON lines) or to RUN_DIR/predictions/predict_N/.")
    p.add_argument("--run", metavar="RUN_DIR", help="the trained run (lightning_logs/<plugin>/version_N) or a .ckpt")
    p.add_argument("--input", "-i", nargs="+", metavar="PATH", help="input files or folders; - reads standard input")
    p.add_argument("--output", "-o", metavar="FILE", help="write the rows here (.csv, .jsonl or .json)")
    p.add_argument("--ckpt_path", metavar="best|last|FILE", help="which checkpoint (default: the run's best)")
    p.add_argument("--top_k", type=int, help="class probabilities to list for classifiers (default 3)")
    p.add_argument("--horizon", type=int, help="lstm: steps to forecast after the file's last window (default 1)")
    p.add_argument("--num_samples", type=int, help="gan, vae: samples to draw (default 16)")
    p.add_argument("--nodes", type=int, nargs="+", help="gcn: node ids to predict (default every node)")
    p.add_argument("--score_threshold", type=float, help="detector: the least score of a box listed (default 0.5)")
    p.add_argument("--seed", type=int, help="seed of the samples gan and vae draw (default 0)")
    p.add_argument("--data", nargs="?", const="run", metavar="NAME",
                   help="rebuild the preprocessing from the run's data (or a registered dataset) on this machine, for "
                        "runs trained before dlbench saved it")
    p.add_argument("--batch_size", type=int, default=256, help="inputs a batch (default 256)")
    p.add_argument("--trainer.accelerator", dest="accelerator", help="cpu, gpu, auto, ... (default cpu)")
    p.add_argument("--trainer.devices", dest="devices", help="devices (default 1); more than one runs DDP")
    p.add_argument("--trainer.precision", dest="precision", help="e.g. bf16-mixed")
    p.add_argument("--weights_only", type=parse_bool, default=True,
                   help="load checkpoints without running code (default true; false only for files you trust)")
    p.set_defaults(func=cmd_predict)
    return p
