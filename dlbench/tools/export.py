"""``dlbench export RUN_OR_CHECKPOINT --format onnx|torchscript``: a trained model as a file other runtimes load,
checked against PyTorch on real data before it is kept.

The model class and its data module come from the run's ``config.yaml`` (or, for a checkpoint on its own, from the
class paths Lightning saved in it). The input the exporter traces, and the check afterwards, is the first batch of
the plugin's own test split, so the exported file is known to reproduce the model on data it was made for: ONNX
through onnxruntime, TorchScript through ``torch.jit.load``, both within :data:`RTOL` and :data:`ATOL` of PyTorch's
output, and again on half that batch to check that the batch size is free. A model that cannot be exported
(its input is not in the data, a graph, a failing trace) gets the reason in one paragraph, not a traceback.

This module imports no torch until a command runs.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dlbench.core import registry
from dlbench.core.errors import DlbenchError, first_line
from dlbench.core.options import parse_bool
from dlbench.runs.trained import NotExportable, TrainedRun, describe_tensors, first_batch, flat_outputs, forward_inputs

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
RTOL, ATOL = 1e-4, 1e-5
"""Tolerance of the check, as in ``torch.testing.assert_close``: ``|exported - torch| <= ATOL + RTOL * |torch|``
for every output value. Float32 kernels of two runtimes differ by rounding, a few units in the 7th digit."""


@dataclass
class Result:
    path: Path
    fmt: str
    max_abs_diff: float
    batch_sizes: tuple[int, ...]
    dynamic_batch: bool
    inputs: str
    notes: list[str] = field(default_factory=list)
    preprocessing: Path | None = None
    """The file beside the model that says what its inputs are and holds the run's preprocessing."""


@contextmanager
def quiet() -> Iterator[None]:
    """The exporters' deprecation warnings and progress messages are for framework authors, not for this command."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript",
                                              "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def export_onnx(model, inputs: tuple, path: Path) -> bool:
    """Write ``path``; True when the batch dimension is dynamic (otherwise it is fixed at the traced size)."""
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it; say so before it fails deep inside)
    except ImportError:
        raise DlbenchError("ONNX export needs the packages onnx and onnxscript (and onnxruntime to check the result): "
                           "pip install 'dlbench[export]'.") from None
    import torch

    batch = torch.export.Dim("batch")
    # A dynamic batch dimension first; a model whose code fixes the batch size is exported as traced.
    attempts = [tuple({0: batch} for _ in inputs), None] if _batch_size(inputs) > 1 else [None]
    error: BaseException | None = None
    for shapes in attempts:
        try:
            with quiet(), torch.no_grad():
                torch.onnx.export(model, inputs, str(path), dynamo=True, dynamic_shapes=shapes, external_data=False,
                                  verbose=False, report=False)
            return shapes is not None
        except Exception as err:  # the exporter raises many kinds; the first line says what was not supported
            error = err
    raise NotExportable(f"torch.onnx.export failed: {first_line(error)}")


def _batch_size(inputs: tuple) -> int:
    """The size of the batch dimension shared by all inputs; 0 when they share none (e.g. nodes and edges)."""
    sizes = {int(t.shape[0]) if t.dim() else 0 for t in inputs}
    return sizes.pop() if len(sizes) == 1 else 0


def run_onnx(path: Path, inputs: tuple) -> list:
    try:
        import onnxruntime
    except ImportError:
        raise DlbenchError("checking an ONNX export needs onnxruntime: pip install 'dlbench[export]'.") from None
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.cpu().numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    return [torch.from_numpy(o) for o in session.run(None, feeds)]


def export_torchscript(model, inputs: tuple, path: Path) -> bool:
    import torch

    if not hasattr(model, "to_torchscript"):
        raise NotExportable("this Lightning version no longer exports TorchScript (deprecated in PyTorch); use "
                            "--format onnx.")
    try:
        with quiet(), torch.no_grad():
            scripted = model.to_torchscript(method="trace", example_inputs=inputs)
    except Exception as err:  # tracing raises many kinds; the first line says what could not be traced
        why = first_line(err)
        if "Tracing failed sanity checks" in why:
            why += (" (two traces of forward on the same input differ: its control flow depends on the data, e.g. on "
                    "padding masks; try --format onnx)")
        raise NotExportable(f"torch.jit.trace failed: {why}") from None
    torch.jit.save(scripted, str(path))
    return True  # whether the trace generalises over the batch size is what the check on half a batch finds out


def run_torchscript(path: Path, inputs: tuple) -> list:
    import torch

    with quiet(), torch.no_grad():
        return flat_outputs(torch.jit.load(str(path), map_location="cpu")(*inputs))


EXPORTERS = {"onnx": (export_onnx, run_onnx), "torchscript": (export_torchscript, run_torchscript)}


def max_difference(expected: list, got: list, what: str) -> float:
    """The largest absolute difference; a DlbenchError when outputs differ in number or shape or beyond tolerance."""
    import torch

    if len(expected) != len(got) or any(e.shape != g.shape for e, g in zip(expected, got, strict=True)):
        raise DlbenchError(f"the exported model's outputs on {what} ({describe_tensors(got)}) do not match PyTorch's "
                           f"({describe_tensors(expected)}).", exit_code=1)
    worst = 0.0
    for e, g in zip(expected, got, strict=True):
        e, g = e.double(), g.double()
        worst = max(worst, float((e - g).abs().max()) if e.numel() else 0.0)
        if not torch.allclose(g, e, rtol=RTOL, atol=ATOL, equal_nan=True):
            raise DlbenchError(f"the exported model differs from PyTorch on {what} by up to {worst:.3g}, beyond the "
                               f"tolerance (rtol {RTOL:g}, atol {ATOL:g}); the file was not kept.", exit_code=1)
    return worst


def export_model(model, inputs: tuple, fmt: str, output: Path) -> Result:
    """Export ``model`` traced on ``inputs`` to ``output``, kept only when it reproduces PyTorch's outputs on the
    inputs and on half of them (a different batch size)."""
    import torch

    write, run = EXPORTERS[fmt]
    with torch.no_grad():
        expected = flat_outputs(model(*inputs))
    if not expected:
        raise NotExportable("its forward returns no tensors.")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-")
    except OSError as err:  # a read-only run directory, a full disk: one line, before the exporter runs
        raise DlbenchError(f"cannot write {output}: {err.strerror or err}. Choose another place with -o.") from None
    with scratch as tmp:
        path = Path(tmp) / output.name
        dynamic = write(model, inputs, path)
        n = _batch_size(inputs)
        worst = max_difference(expected, run(path, inputs), "the test batch")
        sizes, notes = (n,), []
        if dynamic and n > 1:
            half = tuple(t[: n // 2] for t in inputs)
            with torch.no_grad():
                expected_half = flat_outputs(model(*half))
            try:
                got_half = run(path, half)
            except Exception as err:  # the runtime rejects the shape: the trace fixed the batch size
                notes.append(f"the batch size is fixed at {n} ({first_line(err)[:120]})")
                dynamic = False
            else:
                worst = max(worst, max_difference(expected_half, got_half, f"a batch of {n // 2}"))
                sizes = (n, n // 2)
        elif n <= 1:
            dynamic = False
            notes.append(f"input shapes are fixed as traced ({describe_tensors(inputs)}): the inputs share no batch "
                         f"dimension" if n == 0 else "the batch size is fixed at 1, the size traced")
        if not dynamic and not notes:
            notes.append(f"the batch size is fixed at {n}")
        shutil.move(str(path), output)
    return Result(output, fmt, worst, sizes, dynamic, describe_tensors(inputs), notes)


def default_output(source: TrainedRun, fmt: str) -> Path:
    if source.run_dir is not None:
        return source.run_dir / "export" / f"{source.plugin_name}{FORMATS[fmt]}"
    return source.checkpoint.with_suffix(FORMATS[fmt])


def output_path(source: TrainedRun, given: str | Path, fmt: str, output: str | Path) -> Path:
    """The file ``-o output`` names, as ``cp`` reads its target: an existing folder gets ``<name><suffix>`` inside
    (``<plugin>-<run dir name>`` for a run directory ``given``, the checkpoint's stem for a .ckpt file). A
    DlbenchError, before the slow export, when the file cannot be written there."""
    try:
        return _writable(source, given, fmt, output)
    except OSError as err:  # a folder on the way that cannot even be looked into
        raise DlbenchError(f"cannot write {output}: {err.strerror or err} ({err.filename or output}). Choose another "
                           f"-o, in a folder you can write to.") from None


def _writable(source: TrainedRun, given: str | Path, fmt: str, output: str | Path) -> Path:
    path = Path(output)
    if path.is_dir():
        name = f"{source.plugin_name}-{Path(given).resolve().name}" if Path(given).is_dir() else source.checkpoint.stem
        path = path / f"{name}{FORMATS[fmt]}"
    elif str(output).endswith(("/", "\\")):  # "-o new/": a folder is meant, as cp means it
        if path.exists():
            raise DlbenchError(f"cannot write {output}: {path} is a file, not a folder. Choose another -o.")
        raise DlbenchError(f"cannot write {output}: the folder {path} does not exist. Create it first or choose "
                           f"another -o.")
    folder = path.parent
    if not folder.exists():
        raise DlbenchError(f"cannot write {path}: its folder {folder} does not exist. Create it first or choose "
                           f"another -o.")
    if not folder.is_dir():
        raise DlbenchError(f"cannot write {path}: {folder} is a file, not a folder. Choose another -o.")
    try:  # the export writes a temporary folder beside the file, then moves the checked file into place
        with tempfile.TemporaryDirectory(dir=folder, prefix=".export-"):
            pass
    except OSError as err:
        raise DlbenchError(f"cannot write {path}: its folder {folder} takes no new files ({err.strerror or err}). "
                           f"Choose another -o, in a folder you can write to.") from None
    if path.exists() and not path.is_file():
        raise DlbenchError(f"cannot write {path}: something that is not a file is there. Choose another -o.")
    return path


def export(path: str | Path, fmt: str, output: str | Path | None = None, weights_only: bool = True) -> Result:
    """Export the model of a run directory or checkpoint; see the module docstring."""
    source = TrainedRun.open(path, weights_only)
    target = output_path(source, path, fmt, output) if output else default_output(source, fmt)
    try:
        model = source.load_model(weights_only)
        inputs = forward_inputs(model, source.real_batch())
        predictor = _predictor(source)
        # ONNX files get the preprocessing folded in; TorchScript (deprecated, traced through Lightning's own
        # to_torchscript) is written as the model is, with the preprocessing file beside it.
        folded = predictor.export_module(model) if predictor is not None and fmt == "onnx" else None
        if folded is not None:
            model, inputs = folded.eval(), predictor.raw_inputs(inputs)
        result = export_model(model, inputs, fmt, target)
    except NotExportable as err:
        raise NotExportable(f"{source.plugin_name} cannot be exported to {fmt}: {err}") from None
    result.preprocessing = write_preprocessing(result, source, predictor, folded is not None)
    return result


def _predictor(source: TrainedRun):
    from dlbench.tools.predict import load_predictor

    try:
        return load_predictor(source)
    except DlbenchError:  # a run from before predictors were saved: exported as it is, and the file says so
        return None


def preprocessing_path(model_file: Path) -> Path:
    name = model_file.name
    for suffix in FORMATS.values():
        name = name.removesuffix(suffix)
    return model_file.with_name(f"{name}.preprocessing.json")


def write_preprocessing(result: Result, source: TrainedRun, predictor, folded: bool) -> Path:
    """``<model>.preprocessing.json`` beside the exported file: what its inputs and outputs are, and the run's
    preprocessing as the predictor record ``dlbench predict`` uses (see :mod:`dlbench.data.predict`)."""
    import json

    from dlbench.data.predict import predictor_record

    if predictor is None:
        inputs = ("the model's own inputs, preprocessed as in training; this run saved no preprocessing (trained "
                  "before dlbench saved it): re-run its fit to get it")
    elif folded:
        inputs = (f"raw values as float32, as the files hold them (pixel values 0-255, a series in its own units) "
                  f"for {predictor.describe()}; the preprocessing below is folded into the graph, so apply none")
    else:
        inputs = "the model's own inputs: apply the preprocessing below first (see dlbench.data.predict)"
    record = {"model": result.path.name, "format": result.fmt, "plugin": source.plugin_name,
              "checkpoint": str(source.checkpoint), "inputs": inputs, "input_tensors": result.inputs,
              "folded": folded, "predictor": predictor_record(predictor) if predictor is not None else None}
    path = preprocessing_path(result.path)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def _report(result: Result, source_path: str) -> str:
    size = result.path.stat().st_size
    lines = [f"exported {result.path} ({size / 1024:.0f} KiB, {result.fmt}) from {source_path}",
             f"checked against PyTorch on a real test batch ({result.inputs})"
             + (f" and on its first {result.batch_sizes[1]} rows" if len(result.batch_sizes) > 1 else "")
             + f": max abs difference {result.max_abs_diff:.3g} (tolerance rtol {RTOL:g}, atol {ATOL:g})",
             f"batch size: {'dynamic' if result.dynamic_batch else 'fixed'}"]
    lines += [f"note: {n}" for n in result.notes]
    if result.preprocessing is not None:
        import json

        record = json.loads(result.preprocessing.read_text())
        lines.append(f"inputs: {record['inputs']}")
        lines.append(f"preprocessing: {result.preprocessing}")
    if result.fmt == "torchscript":
        lines.append("note: TorchScript is deprecated in PyTorch and Lightning; ONNX (--format onnx) is the lasting "
                     "format")
    return "\n".join(lines)


def export_all(fmt: str) -> list[tuple[str, str]]:
    """(plugin, 'ok: ...' or the reason it cannot be exported) for every installed plugin, with its tiny preset,
    untrained: exportability does not depend on the weights."""
    from dlbench.train.lightning_cli import build

    rows = []
    for entry in registry.entries(registry.PLUGINS):
        if entry.broken:
            rows.append((entry.name, f"broken: {entry.error}"))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with quiet():
                    model, datamodule, _ = build(entry.name, *entry.spec.tiny_args, log_dir=Path(tmp))
                inputs = forward_inputs(model.eval(), first_batch(datamodule))
                result = export_model(model, inputs, fmt, Path(tmp) / f"model{FORMATS[fmt]}")
                rows.append((entry.name, f"ok (max abs difference {result.max_abs_diff:.2g}, batch size "
                                         f"{'dynamic' if result.dynamic_batch else 'fixed'})"))
            except DlbenchError as err:
                rows.append((entry.name, str(err)))
            except Exception as err:  # one plugin's failure must not hide the others' results
                rows.append((entry.name, f"failed: {first_line(err)}"))
    return rows


def cmd_export(args: argparse.Namespace) -> int:
    if args.all:
        rows = export_all(args.format)
        width = max(len(name) for name, _ in rows)
        for name, outcome in rows:
            print(f"{name:<{width}}  {outcome}")
        return 0
    if args.path is None:
        raise DlbenchError("export what? Give a run directory or checkpoint: dlbench export "
                           "lightning_logs/lstm/version_0 --format onnx (or --all for every plugin).")
    result = export(args.path, args.format, args.output, args.weights_only)
    print(_report(result, args.path))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export a trained model to ONNX or TorchScript, checked on real data",
                              description="Export the model of a run (its best checkpoint, else last.ckpt) or of a "
                                          "checkpoint file, and check the file against PyTorch on a real test batch.")
    p.add_argument("path", nargs="?", help="run directory (lightning_logs/<plugin>/version_N) or .ckpt file")
    p.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="file format (default: onnx)")
    p.add_argument("--output", "-o", help="file to write, or an existing folder to write <plugin>-<run dir "
                                          "name>.onnx (or <checkpoint stem>.onnx) into, as cp does (default: <run "
                                          "dir>/export/<plugin>.onnx or <plugin>.torchscript.pt)")
    p.add_argument("--weights_only", type=parse_bool, default=True,
                   help="load checkpoints without running code (default true; false only for files you trust)")
    p.add_argument("--all", action="store_true",
                   help="try every installed plugin (tiny, untrained) and say which export and why not")
    p.set_defaults(func=cmd_export)
    return p
