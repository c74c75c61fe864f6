"""``dlbench compress RUN_OR_CHECKPOINT --method prune|quantize|distill``: a smaller or faster model from a trained
one, and one table that says what it cost.

* ``prune`` fine-tunes the trained weights as an ordinary ``dlbench fit`` run (its own directory in lightning_logs,
  so TensorBoard and ``dlbench compare`` show it beside the original) with Lightning's ``ModelPruning`` callback:
  the weights of the Linear, convolution and recurrent layers with the smallest magnitudes are masked to zero once,
  as training starts (L1, ``--amount`` of them, across all layers or in each), the rest are fine-tuned around the
  mask, and the pruning is made permanent in every checkpoint.
* ``quantize`` converts the Linear, LSTM and GRU layers to int8 (or float16) weights with PyTorch's post-training
  dynamic quantization (``torch.ao.quantization.quantize_dynamic``: activations are quantized on the fly, on CPU).
* ``distill`` trains a student (any classifier plugin of the same data kind, by default the teacher's own plugin
  made smaller with ``-- --model.*`` overrides) as an ordinary run against the teacher's softened logits:
  ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * the student's own loss``.

Each ends with one table, rows ``before`` and ``after``, measured in this process: the plugin's test metric through
``Trainer.test`` (the plugin's own torchmetrics), the parameter count (non-zero ones for pruning), the size of the
model's state dict saved with ``torch.save`` and the size of that file gzipped (unstructured pruning leaves a dense
file as large as before: its zeros show only once compressed), and the median CPU latency of ``forward`` over
repeated passes of the same real test batch with the same number of threads. The table is written to
``compression.md`` and ``compression.json`` beside the compressed model's ``model.pt``.

This module imports torch and Lightning: ``dlbench`` imports it only when ``compress`` runs.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelPruning
from torch import nn

from dlbench.core import registry
from dlbench.core.errors import DlbenchError, Interrupted, first_line
from dlbench.core.options import parse_bool
from dlbench.core.spec import import_class
from dlbench.runs.trained import NotExportable, TrainedRun, check_fits, forward_inputs, load_checkpoint
from dlbench.tools.export import quiet

METHODS = ("prune", "quantize", "distill")
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase)
"""Layers whose weights pruning masks: the matrices and kernels that hold nearly all of a model's parameters (biases,
norms and embeddings stay dense)."""
QUANTIZABLE = (nn.Linear, nn.LSTM, nn.GRU)
"""What ``quantize_dynamic`` converts on CPU; convolutions need static quantization with calibration data."""
QUANTIZED = (torch.ao.nn.quantized.dynamic.Linear, torch.ao.nn.quantized.dynamic.modules.rnn.RNNBase)


# ---- callbacks of the runs that prune and distill (named in their config.yaml) ------------------------------------

class InitialWeights(Callback):
    """Start training from the weights of ``checkpoint`` (fresh optimizer, epoch 0). A resumed run gets its own
    weights back from its checkpoint afterwards, as Lightning restores it after this hook."""

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        saved = load_checkpoint(self.checkpoint, True)
        check_fits(self.checkpoint, saved, pl_module)
        pl_module.load_state_dict(saved["state_dict"])


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(layer, weight name) of every weight matrix or kernel pruning covers."""
    inside_attention = {id(m) for a in model.modules() if isinstance(a, nn.MultiheadAttention) for m in a.modules()}
    found = []
    for module in model.modules():
        # Attention reads out_proj.weight without calling out_proj, so a pruning hook on it would never run.
        if not isinstance(module, PRUNABLE) or id(module) in inside_attention:
            continue
        for name, _ in module.named_parameters(recurse=False):
            base = name.removesuffix("_orig")
            if base == "weight" or base.startswith("weight_"):
                found.append((module, base))
    return found


class OneShotPruning(ModelPruning):
    """Lightning's ModelPruning, applied once as training starts, so every validation and checkpoint of the run is
    of the pruned model, and kept permanent in checkpoints. Weights of Linear, convolution and recurrent layers
    only; ``scope`` global ranks all of them together, local prunes ``amount`` of each layer."""

    def __init__(self, amount: float = 0.5, pruning_fn: str = "l1_unstructured", scope: str = "global") -> None:
        if not 0 < amount < 1:
            raise ValueError(f"amount must be between 0 and 1 (the fraction of weights to zero), got {amount}")
        if scope not in ("global", "local"):
            raise ValueError(f"scope must be global or local, got {scope!r}")
        super().__init__(pruning_fn, amount=amount, use_global_unstructured=scope == "global", apply_pruning=False,
                         make_pruning_permanent=True, use_lottery_ticket_hypothesis=False)
        self.amount_once, self.scope = amount, scope

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._parameters_to_prune = prunable(pl_module)
        if not self._parameters_to_prune:
            raise DlbenchError(f"{type(pl_module).__name__} has no Linear, convolution or recurrent weights to prune.")
        super().setup(trainer, pl_module, stage)
        _note_hparams(trainer, {"method": "prune", "amount": self.amount_once, "scope": self.scope})

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run's weights already hold the zeros; L1 pruning of the same amount picks exactly them again.
        self.apply_pruning(self.amount_once)
        zeros, total = sparsity(pl_module)
        if trainer.logger is not None:
            trainer.logger.log_metrics({"compress/sparsity": zeros / total}, step=trainer.global_step)


class Distillation(Callback):
    """Adds the teacher's softened logits to the student's training loss:
    ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * student loss``.
    The student's logits are those its own ``training_step`` computed (caught on the way out of ``forward``); the
    teacher, loaded from ``teacher`` (a run directory or checkpoint), stays frozen and is no part of the student's
    checkpoints."""

    def __init__(self, teacher: str, temperature: float = 4.0, alpha: float = 0.9) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.teacher_path, self.temperature, self.alpha = teacher, temperature, alpha
        self.teacher: L.LightningModule | None = None
        self._hook = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        source = TrainedRun.open(self.teacher_path)
        self.teacher = source.load_model().requires_grad_(False)
        caught: list[torch.Tensor] = []
        self._hook = pl_module.register_forward_hook(lambda module, inputs, out: caught.append(out))
        own_step = pl_module.training_step

        def training_step(batch, batch_idx, *args, **kwargs):
            caught.clear()
            out = own_step(batch, batch_idx, *args, **kwargs)
            own = out["loss"] if isinstance(out, dict) else out
            student = caught[-1] if caught else pl_module(*forward_inputs(pl_module, batch))
            with torch.no_grad():
                teacher = self.teacher(*forward_inputs(self.teacher, batch))
            if not (isinstance(student, torch.Tensor) and student.shape == teacher.shape):
                raise DlbenchError(f"the student's forward returns {_shape(student)} but the teacher's returns "
                                   f"{_shape(teacher)}: distillation needs both to return logits over the same "
                                   f"classes. Pick a student plugin for the same data and classes.")
            soft = distill_loss(student, teacher, self.temperature)
            pl_module.log("train/distill_kl", soft, on_step=False, on_epoch=True)
            loss = self.alpha * soft + (1 - self.alpha) * own
            return {**out, "loss": loss} if isinstance(out, dict) else loss

        pl_module.training_step = training_step
        _note_hparams(trainer, {"method": "distill", "teacher": self.teacher_path, "temperature": self.temperature,
                                "alpha": self.alpha})

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.teacher.to(pl_module.device).eval()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._hook is not None:
            self._hook.remove()
            self._hook = None
            pl_module.__dict__.pop("training_step", None)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, batch mean (Hinton et al. 2015: the T^2 keeps the
    gradient's scale independent of T)."""
    t = temperature
    return nn.functional.kl_div(torch.log_softmax(student.float() / t, -1), torch.log_softmax(teacher.float() / t, -1),
                                reduction="batchmean", log_target=True) * t * t


def _note_hparams(trainer: L.Trainer, params: dict[str, Any]) -> None:
    """Put the compression settings beside the run's hyperparameters (HParams dashboard, ``dlbench compare``)."""
    run_params = getattr(trainer.logger, "run_params", None)
    if isinstance(run_params, dict) and run_params:
        run_params["compress"] = params


def _shape(out: Any) -> str:
    return f"a tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__


# ---- measuring -----------------------------------------------------------------------------------------------------

def sparsity(model: nn.Module) -> tuple[int, int]:
    """(zero weights, weights) over the layers pruning covers."""
    weights = [getattr(m, n) for m, n in prunable(model)]
    return sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    """Parameters of ``model``; the weights of dynamically quantized layers count as the float ones they replace."""
    total = 0
    for module in model.modules():
        tensors = list(module.parameters(recurse=False))
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            tensors += [module.weight().dequantize(), *([module.bias()] if module.bias() is not None else [])]
        elif isinstance(module, torch.ao.nn.quantized.dynamic.modules.rnn.RNNBase):
            tensors += [*module.get_weight().values(), *module.get_bias().values()]
        for t in tensors:
            total += int((t != 0).sum()) if nonzero else t.numel()
    return total


def file_sizes(model: nn.Module) -> tuple[bytes, int, int]:
    """The state dict as ``torch.save`` writes it, its size, and the size of the same bytes gzipped."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = buffer.getvalue()
    return data, len(data), len(gzip.compress(data, compresslevel=6, mtime=0))


def latency_ms(model: nn.Module, inputs: tuple, threads: int, repeats: int) -> float:
    """Median milliseconds of one ``forward`` of ``inputs`` on CPU with ``threads`` threads, after 3 warm-up runs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    times = []
    try:
        with torch.no_grad():
            for i in range(repeats + 3):
                start = time.perf_counter()
                model(*inputs)
                if i >= 3:
                    times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


def test_metrics(model: L.LightningModule, datamodule: L.LightningDataModule) -> dict[str, float]:
    """The plugin's own test metrics on its test split, through ``Trainer.test`` on CPU."""
    with quiet():
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        (results,) = trainer.test(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in results.items()}


@dataclass
class Row:
    """One row of the table."""

    name: str
    metrics: dict[str, float]
    params: int
    file_bytes: int
    gzip_bytes: int
    latency_ms: float
    nonzero_params: int | None = None


@dataclass
class Report:
    method: str
    metric: str
    mode: str
    batch: str
    threads: int
    repeats: int
    before: Row
    after: Row
    notes: list[str] = field(default_factory=list)
    output: str = ""

    def cells(self) -> tuple[list[str], list[list[str]]]:
        params = "non-zero params" if self.method == "prune" else "params"
        header = ["", self.metric, params, "file KiB", "gzip KiB", f"latency ms ({self.batch}, {self.threads} thr)"]
        rows = []
        for r in (self.before, self.after):
            count = r.nonzero_params if self.method == "prune" else r.params
            rows.append([r.name, f"{r.metrics.get(self.metric, math.nan):.4g}", f"{count:,}",
                         f"{r.file_bytes / 1024:.1f}", f"{r.gzip_bytes / 1024:.1f}", f"{r.latency_ms:.3f}"])
        return header, rows

    def text(self) -> str:
        header, rows = self.cells()
        widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths,
                                                                                                  strict=True)))
                 for x in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def markdown(self) -> str:
        header, rows = self.cells()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join([f"# dlbench compress --method {self.method}", "", *lines, "",
                          *[f"- {n}" for n in self.notes]]) + "\n"


def measure(name: str, model: L.LightningModule, datamodule, inputs: tuple, threads: int, repeats: int) -> Row:
    model.eval()
    _, size, gz = file_sizes(model)
    return Row(name, test_metrics(model, datamodule), count_parameters(model), size, gz,
               latency_ms(model, inputs, threads, repeats), count_parameters(model, nonzero=True))


def _metric_name(source: TrainedRun, metrics: dict[str, float]) -> tuple[str, str]:
    """(test metric, mode): the monitor's test counterpart, else the plugin's score, else the first test metric."""
    entry = registry.entry_for_model_class(source.model_class)
    spec = entry.spec if entry else None
    candidates = [spec.monitor.replace("val/", "test/", 1), spec.score] if spec else []
    for name in [*candidates, *sorted(metrics)]:
        if name in metrics:
            return name, spec.mode if spec else "min"
    raise DlbenchError(f"{source.plugin_name} logs no test metric, so there is nothing to compare before and after. "
                       f"Compress a plugin whose test_step logs test/<metric>.")


# ---- the methods ---------------------------------------------------------------------------------------------------

def quantize_model(model: nn.Module, dtype: str = "qint8") -> nn.Module:
    """``model`` with its Linear, LSTM and GRU layers dynamically quantized (a copy; ``model`` is left alone)."""
    from torch.ao.quantization import quantize_dynamic

    found = [type(m).__name__ for m in model.modules() if type(m) in QUANTIZABLE]
    if not found:
        kinds = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
        raise DlbenchError(f"{type(model).__name__} has no nn.Linear, nn.LSTM or nn.GRU layer, which is all that "
                           f"dynamic quantization converts (its layers: {', '.join(kinds[:8]) or 'none'}). Prune it "
                           f"(--method prune) or distill it into a smaller student (--method distill) instead.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao, which has no
        # dynamic LSTM/GRU and targets GPUs; on CPU, for these layers, it remains PyTorch's way
        return quantize_dynamic(model, set(QUANTIZABLE), dtype={"qint8": torch.qint8, "float16": torch.float16}[dtype],
                                inplace=False)


def load_quantized(checkpoint: str | Path, state_dict: str | Path, dtype: str = "qint8") -> nn.Module:
    """The model of ``checkpoint`` (a run directory or .ckpt), quantized as ``dlbench compress --method quantize``
    did, with the quantized weights it saved in ``state_dict`` (its model.pt)."""
    source = TrainedRun.open(checkpoint)
    model = quantize_model(source.load_model(), dtype)
    # Packed int8 weights unpickle through torch.ops, which weights_only=True refuses: load only files you trust.
    model.load_state_dict(torch.load(state_dict, map_location="cpu", weights_only=False))
    return model.eval()


def _inputs(model: L.LightningModule, batch: Any, plugin: str, why: str) -> tuple:
    try:
        return forward_inputs(model, batch)
    except NotExportable as err:
        raise DlbenchError(f"{plugin} cannot be {why}: {err}") from None


def run_quantize(args: argparse.Namespace, source: TrainedRun) -> Report:
    datamodule = source.load_datamodule()
    before = source.load_model(args.weights_only)
    inputs = _inputs(before, source.real_batch(datamodule), source.plugin_name, "measured on a tensor batch")
    quantized = quantize_model(before, args.dtype)
    converted = [n for n, m in quantized.named_modules() if isinstance(m, QUANTIZED)]
    share = sum(p.numel() for n, m in before.named_modules() if n in converted for p in m.parameters())
    row_before = measure("before", before, datamodule, inputs, args.threads, args.repeats)
    try:
        row_after = measure("after", quantized, datamodule, inputs, args.threads, args.repeats)
    except DlbenchError:
        raise
    except Exception as err:  # e.g. model code reading layer.weight, which quantized layers hold packed
        raise DlbenchError(f"the quantized {source.plugin_name} fails on its test split ({first_line(err)}): its "
                           f"code uses a layer in a way quantized layers do not support. Prune or distill it "
                           f"instead.") from None
    output = _output_dir(args, source.run_dir / "compress" / "quantize" if source.run_dir
                         else source.checkpoint.with_name(f"{source.checkpoint.stem}-quantize"))
    (output / "model.pt").write_bytes(file_sizes(quantized)[0])
    metric, mode = _metric_name(source, row_before.metrics)
    notes = [f"{len(converted)} layers dynamically quantized to {args.dtype} ({', '.join(converted)}): "
             f"{share:,} of {row_before.params:,} parameters ({share / row_before.params:.0%})",
             "file: the model's state dict saved with torch.save (before float32); gzip: the same bytes gzipped",
             f"before: {source.checkpoint}",
             f"after: {output / 'model.pt'} (load it with dlbench.tools.compress.load_quantized(before, after"
             f"{'' if args.dtype == 'qint8' else ', dtype=' + repr(args.dtype)}))"]
    if args.dtype == "float16":
        notes.append("float16 weights are packed for the fp16 kernels in memory but torch.save writes them unpacked "
                     "as float32, so the file does not shrink")
    return Report("quantize", metric, mode, _batch_text(inputs), args.threads, args.repeats, row_before, row_after,
                  notes, str(output))


def _fit(args: list[str], config: dict) -> Path:
    """Run ``dlbench fit --config CONFIG ARGS`` in this process; the new run's directory."""
    from dlbench.train.lightning_cli import make_cli
    from dlbench.train.target import parse_target

    with tempfile.TemporaryDirectory(prefix="dlbench-compress-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        target = parse_target("fit", ["--config", str(path), *args])
        cli = make_cli(target, ["fit", *target.args])
    if cli.trainer.interrupted:
        raise Interrupted(f"training was interrupted; the run is in {cli.trainer.logger.log_dir}.")
    return Path(cli.trainer.logger.log_dir)


def _log_root(source: TrainedRun) -> Path:
    from dlbench.core.conventions import log_root

    if source.run_dir is not None:
        return source.run_dir.parent.parent
    return Path(log_root())


def _logger(root: Path, name: str, version: str) -> dict:
    base, n = version, 1
    while (root / name / version).exists():
        n += 1
        version = f"{base}-{n}"
    return {"class_path": "dlbench.train.logger.RunLogger",
            "init_args": {"save_dir": str(root), "name": name, "version": version}}


def _source_config(source: TrainedRun, checkpoint: dict) -> dict:
    """The run's config.yaml, or for a checkpoint on its own, one made from the class paths and arguments it holds."""
    if source.run_dir is not None:
        return yaml.safe_load((source.run_dir / "config.yaml").read_text()) or {}
    from dlbench.train.target import linked_attributes

    entry = registry.entry_for_model_class(source.model_class)
    linked = set(linked_attributes(entry.spec if entry else None, import_class(source.model_class, "model")))
    model_args = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items()
                  if not k.startswith("_") and k not in linked}
    return {"model": {"class_path": source.model_class, "init_args": model_args},
            "data": {"class_path": source.data_class, "init_args": source.data_args}}


def run_prune(args: argparse.Namespace, source: TrainedRun, checkpoint: dict) -> Report:
    config = _source_config(source, checkpoint)
    trainer = dict(config.get("trainer") or {})
    root = _log_root(source)
    version = f"pruned-{source.run_dir.name if source.run_dir else source.checkpoint.stem}"
    trainer["logger"] = _logger(root, source.plugin_name, version)
    keep = [c for c in trainer.get("callbacks") or [] if "OptunaPruning" not in str(c)]  # not a sweep trial again
    trainer["callbacks"] = [*keep,
                            {"class_path": "dlbench.tools.compress.InitialWeights",
                             "init_args": {"checkpoint": str(source.checkpoint.resolve())}},
                            {"class_path": "dlbench.tools.compress.OneShotPruning",
                             "init_args": {"amount": args.amount, "scope": args.scope}}]
    trainer["max_epochs"] = args.epochs or 3
    # The fine-tune is a training of its own: it shows its epochs and model line whatever the source run showed (a
    # sweep trial runs without them); `-- --trainer.enable_progress_bar false` still turns them off.
    for key in ("max_steps", "enable_progress_bar", "enable_model_summary"):
        trainer.pop(key, None)
    config = {**config, "trainer": trainer, "ckpt_path": None}
    run_dir = _fit(args.fit_args, config)
    pruned = TrainedRun.open(run_dir)
    datamodule = source.load_datamodule()
    before, after = source.load_model(args.weights_only), pruned.load_model()
    inputs = _inputs(before, source.real_batch(datamodule), source.plugin_name, "measured on a tensor batch")
    row_before = measure("before", before, datamodule, inputs, args.threads, args.repeats)
    row_after = measure("after", after, datamodule, inputs, args.threads, args.repeats)
    zeros, total = sparsity(after)
    output = _output_dir(args, run_dir / "compress")
    data, _, _ = file_sizes(after)
    (output / "model.pt").write_bytes(data)
    (output / "model.pt.gz").write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
    metric, mode = _metric_name(source, row_before.metrics)
    notes = [f"sparsity {zeros / total:.1%} of the {total:,} weights of Linear, convolution and recurrent layers "
             f"({args.scope} L1 pruning, amount {args.amount}), fine-tuned {trainer['max_epochs']} epoch(s)",
             "file: the state dict saved with torch.save, dense float32: unstructured pruning does not shrink it; "
             "gzip: the same bytes gzipped, where the zeros pay off (model.pt.gz)",
             f"before: {source.checkpoint}", f"after: {pruned.checkpoint} (run {run_dir})"]
    return Report("prune", metric, mode, _batch_text(inputs), args.threads, args.repeats, row_before, row_after,
                  notes, str(output))


def classifiers() -> list[str]:
    """Installed plugins whose models return class logits from tensor inputs (by their spec: accuracy-scored,
    not graphs)."""
    return [e.name for e in registry.entries(registry.PLUGINS)
            if e.spec is not None and e.spec.score.endswith("/acc") and e.spec.data_kind != "graph"]


def _check_classifier(model: L.LightningModule, batch: Any, plugin: str) -> None:
    """Refuse a teacher whose forward does not return class logits for integer labels."""
    works = ", ".join(classifiers())
    what = (f"distillation matches the student's class probabilities to the teacher's softened ones (a KL "
            f"divergence of softmax(logits / T)), so it needs a classifier whose forward takes tensors and returns "
            f"logits of shape (batch, num_classes). Distill one of: {works}; prune or quantize {plugin} instead.")
    try:
        inputs = forward_inputs(model, batch)
    except NotExportable as err:
        raise DlbenchError(f"{plugin} cannot be distilled: {err} {what}") from None
    with torch.no_grad():
        out = model(*inputs)
    labels = batch[-1] if isinstance(batch, (tuple, list)) else None
    classes = model.hparams.get("num_classes")
    ok = (isinstance(out, torch.Tensor) and out.dim() == 2 and out.is_floating_point() and classes
          and out.shape[1] == classes >= 2 and isinstance(labels, torch.Tensor) and not labels.is_floating_point())
    if not ok:
        raise DlbenchError(f"{plugin} is not a classifier: its forward returns {_shape(out)} "
                           f"({'no num_classes' if not classes else f'num_classes {classes}'}), not class logits; "
                           f"{what}")


def run_distill(args: argparse.Namespace, source: TrainedRun) -> Report:
    teacher_entry = registry.entry_for_model_class(source.model_class)
    student = registry.resolve(registry.PLUGINS, args.student or source.plugin_name).spec
    datamodule = source.load_datamodule()
    teacher = source.load_model(args.weights_only)
    batch = source.real_batch(datamodule)
    _check_classifier(teacher, batch, source.plugin_name)
    if student.name not in classifiers():
        raise DlbenchError(f"student {student.name!r} is not a classifier ({student.summary}): it cannot learn from "
                           f"the teacher's class logits. Pick one of: {', '.join(classifiers())}.")
    if teacher_entry is not None and student.data_kind != teacher_entry.spec.data_kind:
        raise DlbenchError(f"student {student.name!r} takes {student.data_kind} data but teacher "
                           f"{source.plugin_name!r} was trained on {teacher_entry.spec.data_kind} data; the student "
                           f"must learn from the teacher's own data. Pick a student of kind "
                           f"{teacher_entry.spec.data_kind!r} (e.g. {', '.join(_same_kind(teacher_entry))}).")
    root = _log_root(source)
    version = f"distilled-from-{source.plugin_name}-{source.run_dir.name if source.run_dir else source.checkpoint.stem}"
    distill = {"class_path": "dlbench.tools.compress.Distillation",
               "init_args": {"teacher": str(source.checkpoint.resolve()), "temperature": args.temperature,
                             "alpha": args.alpha}}
    trainer: dict[str, Any] = {"logger": _logger(root, student.name, version), "callbacks": [distill]}
    if args.epochs:
        trainer["max_epochs"] = args.epochs
    config = {"data": {"class_path": source.data_class, "init_args": source.data_args}, "trainer": trainer}
    run_dir = _fit(["--model", student.name, *args.fit_args], config)
    student_source = TrainedRun.open(run_dir)
    after = student_source.load_model()
    inputs = _inputs(teacher, batch, source.plugin_name, "measured on a tensor batch")
    row_before = measure("before", teacher, datamodule, inputs, args.threads, args.repeats)
    row_after = measure("after", after, datamodule, inputs, args.threads, args.repeats)
    output = _output_dir(args, run_dir / "compress")
    (output / "model.pt").write_bytes(file_sizes(after)[0])
    metric, mode = _metric_name(source, row_before.metrics)
    notes = [f"before: teacher {source.plugin_name} {source.checkpoint}",
             f"after: student {student.name} {student_source.checkpoint} (run {run_dir}), trained with "
             f"alpha {args.alpha} * T^2 * KL(teacher || student at T={args.temperature}) + {1 - args.alpha:g} * "
             f"its own loss",
             "file: the state dict saved with torch.save; gzip: the same bytes gzipped"]
    if row_after.params >= row_before.params:
        notes.append(f"the student has {row_after.params:,} parameters, no fewer than the teacher: make it smaller "
                     f"with model overrides after --, e.g. -- --model.hidden_sizes '[32]'")
    return Report("distill", metric, mode, _batch_text(inputs), args.threads, args.repeats, row_before, row_after,
                  notes, str(output))


def _same_kind(entry: registry.Entry) -> list[str]:
    return [name for name in classifiers() if registry.plugin(name).data_kind == entry.spec.data_kind]


def _batch_text(inputs: tuple) -> str:
    shapes = [list(t.shape) for t in inputs]
    return f"batch {shapes[0][0]}" if shapes and shapes[0] else "batch"


def _output_dir(args: argparse.Namespace, default: Path) -> Path:
    output = Path(args.output) if args.output else default
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DlbenchError(f"cannot write to {output}: {err.strerror}. Choose another --output.") from None
    return output


def write_report(report: Report) -> None:
    output = Path(report.output)
    (output / "compression.md").write_text(report.markdown())
    (output / "compression.json").write_text(json.dumps(asdict(report), indent=2) + "\n")


def compress(args: argparse.Namespace) -> Report:
    """Run one method on ``args.path``; see the module docstring."""
    if args.threads < 1 or args.repeats < 1:
        raise DlbenchError("--threads and --repeats must be at least 1.")
    if not 0 < args.amount < 1:
        raise DlbenchError(f"--amount is the fraction of weights to zero, between 0 and 1; got {args.amount}.")
    if args.temperature <= 0 or not 0 <= args.alpha <= 1:
        raise DlbenchError(f"--temperature must be > 0 and --alpha in [0, 1]; got {args.temperature} and "
                           f"{args.alpha}.")
    if args.epochs is not None and args.epochs < 1:
        raise DlbenchError(f"--epochs must be at least 1, got {args.epochs}.")
    source = TrainedRun.open(args.path, args.weights_only)
    checkpoint = source.saved
    if args.method == "quantize":
        report = run_quantize(args, source)
    elif args.method == "prune":
        report = run_prune(args, source, checkpoint)
    else:
        report = run_distill(args, source)
    write_report(report)
    return report


def cmd_compress(args: argparse.Namespace) -> int:
    if args.fit_args and args.method == "quantize":
        raise DlbenchError("quantize trains nothing, so it takes no fit arguments after --. Leave them out.")
    report = compress(args)
    print(f"\n{report.text()}\nwritten to {report.output}/compression.md and compression.json")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("path", help="run directory (lightning_logs/<plugin>/version_N) or .ckpt file of a trained model")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="prune: zero the smallest weights and fine-tune (a new run); quantize: int8 Linear/LSTM/GRU "
                        "weights (no training); distill: train a smaller student on the teacher's logits (a new run)")
    p.add_argument("--amount", type=float, default=0.5, help="prune: fraction of weights to zero (default 0.5)")
    p.add_argument("--scope", choices=("global", "local"), default="global",
                   help="prune: rank weights across all layers (global, default) or zero --amount of each layer")
    p.add_argument("--epochs", type=int, help="prune: fine-tuning epochs (default 3); distill: the student's epochs "
                                              "(default: the student plugin's)")
    p.add_argument("--dtype", choices=("qint8", "float16"), default="qint8", help="quantize: weight type")
    p.add_argument("--student", metavar="PLUGIN", help="distill: the student plugin (default: the teacher's; make it "
                                                       "smaller with -- --model.* overrides)")
    p.add_argument("--temperature", type=float, default=4.0, help="distill: softmax temperature T (default 4)")
    p.add_argument("--alpha", type=float, default=0.9,
                   help="distill: weight of the teacher's soft targets; 1 - alpha weighs the student's own loss")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the latency measurement (default 1)")
    p.add_argument("--repeats", type=int, default=50, help="timed forward passes; the median is reported")
    p.add_argument("--output", "-o", metavar="DIR", help="where the table and model.pt go (default: <new run>/compress "
                                                         "or <run>/compress/quantize)")
    p.add_argument("--weights_only", type=parse_bool, default=True,
                   help="load checkpoints without running code (default true; false only for files you trust)")
    p.set_defaults(func=cmd_compress, fit_args=[])
    return p


def parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        prog="dlbench compress",
        usage="dlbench compress RUN_DIR_OR_CKPT --method prune|quantize|distill [options] [-- FIT_ARGS]",
        description="Prune, quantize or distill a trained model and print one table of its test metric, parameters, "
                    "file size and CPU latency before and after, measured in the same process.",
        epilog="Arguments after -- go to the training run of prune and distill, as to dlbench fit: "
               "-- --trainer.max_time 00:00:05:00 or, for the student, -- --model.hidden_sizes '[32]'."))


def run(argv: list[str]) -> int:
    """``dlbench compress ARGS``; a DlbenchError goes to the caller."""
    fit_args: list[str] = []
    if "--" in argv:  # split by hand: argparse would not give a positional after options the words after --
        i = argv.index("--")
        argv, fit_args = argv[:i], argv[i + 1 :]
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    args.fit_args = fit_args
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """``python -m dlbench.tools.compress ...``: the subcommand on its own."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except DlbenchError as err:
        print(f"dlbench: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
