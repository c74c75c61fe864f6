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
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlbench import registry
from dlbench.errors import DlbenchError
from dlbench.plugin import import_ref

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
RTOL, ATOL = 1e-4, 1e-5
"""Tolerance of the check, as in ``torch.testing.assert_close``: ``|exported - torch| <= ATOL + RTOL * |torch|``
for every output value. Float32 kernels of two runtimes differ by rounding, a few units in the 7th digit."""


class NotExportable(DlbenchError):
    """The model cannot go through the exporter; the message says why."""


@dataclass
class Source:
    """What a run directory or checkpoint says about the model to export."""

    checkpoint: Path
    run_dir: Path | None
    model_class: str
    data_class: str | None
    data_args: dict[str, Any] = field(default_factory=dict)

    @property
    def plugin_name(self) -> str:
        entry = registry.entry_for_model_class(self.model_class)
        return entry.name if entry else self.model_class.rpartition(".")[2].lower()


@dataclass
class Result:
    path: Path
    fmt: str
    max_abs_diff: float
    batch_sizes: tuple[int, ...]
    dynamic_batch: bool
    inputs: str
    notes: list[str] = field(default_factory=list)


def find_checkpoint(path: Path) -> tuple[Path, Path | None]:
    """(checkpoint, run directory or None) for a run directory or a checkpoint file."""
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return path, run_dir if (run_dir / "config.yaml").is_file() else None
    if not path.is_dir():
        raise DlbenchError(f"{path} does not exist. Give a run directory (lightning_logs/<plugin>/version_N) or a "
                           f".ckpt file.")
    best = sorted((path / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    last = path / "checkpoints" / "last.ckpt"
    if best:
        return best[-1], path
    if last.is_file():
        return last, path
    raise DlbenchError(f"{path} holds no checkpoints/best-*.ckpt or checkpoints/last.ckpt. Give a run directory of "
                       f"a run that finished at least one epoch, or the .ckpt file itself.")


def _config_section(config: dict, key: str) -> tuple[str | None, dict[str, Any]]:
    section = config.get(key)
    if isinstance(section, str):
        return section, {}
    if isinstance(section, dict) and isinstance(section.get("class_path"), str):
        return section["class_path"], dict(section.get("init_args") or {})
    return None, {}


def read_source(path: str | Path, weights_only: bool = True) -> tuple[Source, dict]:
    """The checkpoint (loaded, checked) and what it takes to rebuild its model and data module."""
    from dlbench.lightning_cli import load_checkpoint

    ckpt_path, run_dir = find_checkpoint(Path(path))
    try:
        checkpoint = load_checkpoint(str(ckpt_path), weights_only)
    except DlbenchError:
        raise
    except Exception as err:  # torch's unpickler fails on some garbage with errors load_checkpoint does not expect
        raise DlbenchError(f"checkpoint {ckpt_path} is corrupt or not a checkpoint at all ({_first_line(err)}). Use "
                           f"another checkpoint, e.g. the run's last.ckpt or best-*.ckpt.") from None
    config: dict = {}
    if run_dir is not None:
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise DlbenchError(f"cannot read {run_dir / 'config.yaml'} ({str(err).splitlines()[0]}). Give the "
                               f"checkpoint file instead of the run directory.") from None
    model_class, _ = _config_section(config, "model")
    data_class, data_args = _config_section(config, "data")
    saved = checkpoint.get("hyper_parameters", {})
    model_class = model_class or saved.get("_class_path")
    if not model_class:
        raise DlbenchError(f"{ckpt_path} does not say which model class wrote it (no config.yaml beside it and no "
                           f"_class_path in its hyperparameters). Export a checkpoint written by dlbench fit.")
    if data_class is None:
        saved_data = checkpoint.get("datamodule_hyper_parameters", {})
        data_class = saved_data.get("_class_path")
        data_args = {k: v for k, v in saved_data.items() if not k.startswith("_")}
    return Source(ckpt_path, run_dir, model_class, data_class, data_args), checkpoint


def _import_class(dotted: str, what: str):
    module, _, name = dotted.rpartition(".")
    try:
        return import_ref(f"{module}:{name}")
    except (ImportError, ValueError) as err:
        raise DlbenchError(f"cannot import the {what} class {dotted} ({err}). Install the plugin that provides it "
                           f"('dlbench list' shows what is installed).") from None


def load_model(source: Source, weights_only: bool = True):
    cls = _import_class(source.model_class, "model")
    try:
        model = cls.load_from_checkpoint(source.checkpoint, map_location="cpu", weights_only=weights_only)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise DlbenchError(f"cannot load {source.checkpoint} into {cls.__name__}: {str(err).splitlines()[0][:300]}. "
                           f"Use a checkpoint written by this plugin's dlbench fit.") from None
    return model.eval()


def load_datamodule(source: Source):
    """The run's data module, rebuilt from its class path and arguments, with a test split."""
    if source.data_class is None:
        raise DlbenchError(f"{source.checkpoint} does not say which data module the model was trained on, so there "
                           f"is no real input to export with. Export the run directory, which has config.yaml.")
    cls = _import_class(source.data_class, "data module")
    try:
        datamodule = cls(**source.data_args)
    except (TypeError, ValueError) as err:
        raise DlbenchError(f"cannot rebuild the data module {cls.__name__} of this run: {err}.") from None
    if not hasattr(datamodule, "test_dataloader"):
        raise NotExportable(f"the data module {cls.__name__} has no test split to take a real input from.")
    return datamodule


def real_batch(source: Source, datamodule=None):
    """The first batch of the test split of the run's data module (or of ``datamodule``), as the model receives
    it."""
    from dlbench.testing import _batch

    return _batch(datamodule if datamodule is not None else load_datamodule(source), "test")


def _describe(tensors) -> str:
    return ", ".join(f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}" if hasattr(t, "shape")
                     else type(t).__name__ for t in tensors)


def forward_inputs(model, batch) -> tuple:
    """The positional inputs of ``model.forward`` taken from a data batch, matched against the model's
    ``example_input_array`` (the same number of tensors, dimensions and kind of numbers)."""
    import torch

    example = model.example_input_array
    if example is None:
        raise NotExportable("its model sets no example_input_array, so which inputs forward takes is unknown. Set "
                            "self.example_input_array in the model's __init__.")
    if isinstance(example, dict):
        raise NotExportable("its forward takes keyword inputs (example_input_array is a dict); the exporters here "
                            "trace positional tensor inputs.")
    examples = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    if isinstance(batch, torch.Tensor):
        candidates: tuple = (batch,)
    elif isinstance(batch, (tuple, list)):
        candidates = tuple(batch[: len(examples)])
    else:
        raise NotExportable(f"its batches are {type(batch).__name__} objects, not tensors (graph data and the like); "
                            f"the exporters trace tensor inputs only.")
    fits = len(candidates) == len(examples) and all(
        isinstance(c, torch.Tensor) and isinstance(e, torch.Tensor) and c.dim() == e.dim()
        and c.is_floating_point() == e.is_floating_point() for c, e in zip(candidates, examples, strict=True))
    if not fits:
        raise NotExportable(f"its forward takes ({_describe(examples)}), but a test batch begins with "
                            f"({_describe(candidates)}): what the model computes from is not what the data holds "
                            f"(e.g. a generator's noise). Export such a model from Python with its own inputs.")
    return candidates


def flat_outputs(out) -> list:
    from dlbench.testing import _flatten

    return [t.detach().cpu() for t in _flatten(out)]


@contextmanager
def _quiet() -> Iterator[None]:
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


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


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
            with _quiet(), torch.no_grad():
                torch.onnx.export(model, inputs, str(path), dynamo=True, dynamic_shapes=shapes, external_data=False,
                                  verbose=False, report=False)
            return shapes is not None
        except Exception as err:  # the exporter raises many kinds; the first line says what was not supported
            error = err
    raise NotExportable(f"torch.onnx.export failed: {_first_line(error)}")


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
        with _quiet(), torch.no_grad():
            scripted = model.to_torchscript(method="trace", example_inputs=inputs)
    except Exception as err:  # tracing raises many kinds; the first line says what could not be traced
        why = _first_line(err)
        if "Tracing failed sanity checks" in why:
            why += (" (two traces of forward on the same input differ: its control flow depends on the data, e.g. on "
                    "padding masks; try --format onnx)")
        raise NotExportable(f"torch.jit.trace failed: {why}") from None
    torch.jit.save(scripted, str(path))
    return True  # whether the trace generalises over the batch size is what the check on half a batch finds out


def run_torchscript(path: Path, inputs: tuple) -> list:
    import torch

    with _quiet(), torch.no_grad():
        return flat_outputs(torch.jit.load(str(path), map_location="cpu")(*inputs))


EXPORTERS = {"onnx": (export_onnx, run_onnx), "torchscript": (export_torchscript, run_torchscript)}


def max_difference(expected: list, got: list, what: str) -> float:
    """The largest absolute difference; a DlbenchError when outputs differ in number or shape or beyond tolerance."""
    import torch

    if len(expected) != len(got) or any(e.shape != g.shape for e, g in zip(expected, got, strict=True)):
        raise DlbenchError(f"the exported model's outputs on {what} ({_describe(got)}) do not match PyTorch's "
                           f"({_describe(expected)}).", exit_code=1)
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
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
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
                notes.append(f"the batch size is fixed at {n} ({_first_line(err)[:120]})")
                dynamic = False
            else:
                worst = max(worst, max_difference(expected_half, got_half, f"a batch of {n // 2}"))
                sizes = (n, n // 2)
        elif n <= 1:
            dynamic = False
            notes.append(f"input shapes are fixed as traced ({_describe(inputs)}): the inputs share no batch "
                         f"dimension" if n == 0 else "the batch size is fixed at 1, the size traced")
        if not dynamic and not notes:
            notes.append(f"the batch size is fixed at {n}")
        shutil.move(str(path), output)
    return Result(output, fmt, worst, sizes, dynamic, _describe(inputs), notes)


def default_output(source: Source, fmt: str) -> Path:
    if source.run_dir is not None:
        return source.run_dir / "export" / f"{source.plugin_name}{FORMATS[fmt]}"
    return source.checkpoint.with_suffix(FORMATS[fmt])


def export(path: str | Path, fmt: str, output: str | Path | None = None, weights_only: bool = True) -> Result:
    """Export the model of a run directory or checkpoint; see the module docstring."""
    source, _ = read_source(path, weights_only)
    try:
        model = load_model(source, weights_only)
        inputs = forward_inputs(model, real_batch(source))
        return export_model(model, inputs, fmt, Path(output) if output else default_output(source, fmt))
    except NotExportable as err:
        raise NotExportable(f"{source.plugin_name} cannot be exported to {fmt}: {err}") from None


def _report(result: Result, source_path: str) -> str:
    size = result.path.stat().st_size
    lines = [f"exported {result.path} ({size / 1024:.0f} KiB, {result.fmt}) from {source_path}",
             f"checked against PyTorch on a real test batch ({result.inputs})"
             + (f" and on its first {result.batch_sizes[1]} rows" if len(result.batch_sizes) > 1 else "")
             + f": max abs difference {result.max_abs_diff:.3g} (tolerance rtol {RTOL:g}, atol {ATOL:g})",
             f"batch size: {'dynamic' if result.dynamic_batch else 'fixed'}"]
    lines += [f"note: {n}" for n in result.notes]
    if result.fmt == "torchscript":
        lines.append("note: TorchScript is deprecated in PyTorch and Lightning; ONNX (--format onnx) is the lasting "
                     "format")
    return "\n".join(lines)


def export_all(fmt: str) -> list[tuple[str, str]]:
    """(plugin, 'ok: ...' or the reason it cannot be exported) for every installed plugin, with its tiny preset,
    untrained: exportability does not depend on the weights."""
    from dlbench.testing import build

    rows = []
    for entry in registry.entries(registry.PLUGINS):
        if entry.broken:
            rows.append((entry.name, f"broken: {entry.error}"))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with _quiet():
                    model, datamodule, _ = build(entry.name, *entry.spec.tiny_args, log_dir=Path(tmp))
                from dlbench.testing import _batch

                inputs = forward_inputs(model.eval(), _batch(datamodule))
                result = export_model(model, inputs, fmt, Path(tmp) / f"model{FORMATS[fmt]}")
                rows.append((entry.name, f"ok (max abs difference {result.max_abs_diff:.2g}, batch size "
                                         f"{'dynamic' if result.dynamic_batch else 'fixed'})"))
            except DlbenchError as err:
                rows.append((entry.name, str(err)))
            except Exception as err:  # one plugin's failure must not hide the others' results
                rows.append((entry.name, f"failed: {_first_line(err)}"))
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


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export a trained model to ONNX or TorchScript, checked on real data",
                              description="Export the model of a run (its best checkpoint, else last.ckpt) or of a "
                                          "checkpoint file, and check the file against PyTorch on a real test batch.")
    p.add_argument("path", nargs="?", help="run directory (lightning_logs/<plugin>/version_N) or .ckpt file")
    p.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="file format (default: onnx)")
    p.add_argument("--output", "-o", help="file to write (default: <run dir>/export/<plugin>.onnx or "
                                          "<plugin>.torchscript.pt)")
    p.add_argument("--weights_only", type=_bool, default=True,
                   help="load checkpoints without running code (default true; false only for files you trust)")
    p.add_argument("--all", action="store_true",
                   help="try every installed plugin (tiny, untrained) and say which export and why not")
    p.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m dlbench.export ...``: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="dlbench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except DlbenchError as err:
        print(f"dlbench: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
