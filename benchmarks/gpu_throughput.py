"""GPU training throughput of the image plugins on MNIST-size data, and the wall time of ``cnn`` to 99% on MNIST.

On one CUDA device, for each of ``cnn``, ``resnet`` and ``vit`` (their default sizes, 28x28 grey images, batch 512):
training samples per second through the real ``dlbench fit`` path (``dlbench.cli.main``), for every combination of

* data path: ``tensor`` (the data held on the GPU and batched there, dlbench's default when it fits) or
  ``dataloader`` (a ``DataLoader`` over host tensors with pinned memory and two workers: ``DLBENCH_DATA_PATH``);
* precision: ``32-true`` or ``bf16-mixed`` (``--trainer.precision``);
* ``eager`` or compiled (``--compile true``: ``torch.compile`` of the model's forward).

A callback passed with ``--trainer.callbacks`` times ``--steps`` training batches after ``--warmup`` batches (which
include compilation), synchronising the device at both ends, all within the first epoch (no validation or
checkpoint inside the window). Each rate is also shown relative to the same model's tensor/fp32/eager rate.

Then ``cnn`` trains on MNIST (``--data mnist``, the reference recipe: default model, batch 128, 5 epochs at most) in
fp32 and bf16-mixed; after every epoch a callback measures test accuracy (that evaluation's time is left out of the
clock) and stops the run at 99%. The time reported runs from the start of training (after data loading, model set-up
and the sanity check) to the end of the first epoch that reaches 99%, validation included; the whole command's time
is shown beside it.

Needs CUDA; without it the script says so and exits 0. ``--cpu-dry-run`` runs every code path on the CPU with tiny
sizes instead (digits data, the plugins' tiny presets, a few batches, torch.compile with dynamo's ``eager`` backend
so no C++ compiler is needed) to check the script itself; its numbers mean nothing.

    python benchmarks/gpu_throughput.py --root /path/to/mnist       # or DLBENCH_TEST_DATA=/path/with/mnist/
    python benchmarks/gpu_throughput.py --cpu-dry-run
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

MODELS = ("cnn", "resnet", "vit")
PATHS = ("tensor", "dataloader")
PRECISIONS = ("32-true", "bf16-mixed")
TARGET_ACC = 0.99


class Throughput(Callback):
    """Times ``steps`` training batches after ``warmup`` ones, then stops training; appends the result to
    :attr:`results`."""

    results: list[dict] = []

    def __init__(self, warmup: int = 10, steps: int = 50) -> None:
        self.warmup, self.steps = warmup, steps
        self._start = 0.0
        self._last = 0

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Stay inside the first epoch: an epoch end brings validation and checkpoints into the window.
        self._last = min(self.warmup + self.steps, int(trainer.num_training_batches)) - 1
        if self._last < self.warmup:
            raise ValueError(f"an epoch has {trainer.num_training_batches} batches: too few for {self.warmup} warm-up "
                             f"batches and a measurement; lower --warmup or --batch-size")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.warmup:
            self._sync(trainer)
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.current_epoch != 0 or batch_idx != self._last:
            return
        self._sync(trainer)
        seconds = time.perf_counter() - self._start
        batch_size = len(batch[0])
        steps = self._last - self.warmup + 1
        Throughput.results.append({"samples_per_s": steps * batch_size / seconds, "steps": steps,
                                   "batch_size": batch_size, "seconds": seconds})
        trainer.should_stop = True


class StopAtAccuracy(Callback):
    """After each training epoch, measures test accuracy (time left out of the clock); stops at ``target``."""

    results: list[dict] = []

    def __init__(self, target: float = TARGET_ACC) -> None:
        self.target = target
        self._start = 0.0
        self._eval_seconds = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    @torch.no_grad()
    def test_accuracy(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        datamodule = trainer.datamodule
        datamodule.setup("test")
        was_training = pl_module.training
        pl_module.eval()
        hits = total = 0
        device = trainer.strategy.root_device
        with trainer.precision_plugin.forward_context():
            for batch in datamodule.test_dataloader():
                x, y = datamodule.on_after_batch_transfer([t.to(device) for t in batch], 0)
                hits += int((pl_module(x).argmax(-1) == y).sum())
                total += len(y)
        pl_module.train(was_training)
        return hits / total

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        begin = time.perf_counter()
        seconds = begin - self._start - self._eval_seconds  # training (and validation) so far, no test passes
        acc = self.test_accuracy(trainer, pl_module)
        self._eval_seconds += time.perf_counter() - begin
        StopAtAccuracy.results.append({"epoch": trainer.current_epoch + 1, "test_acc": acc, "train_seconds": seconds})
        if acc >= self.target:
            trainer.should_stop = True


@dataclass
class Setup:
    device: str
    data: list[str]
    batch_size: int
    accuracy_batch_size: int
    warmup: int
    steps: int
    max_epochs: int
    tiny: bool


def _callback(cls: type[Callback], **init_args) -> str:
    return json.dumps([{"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}])


def _fit(model: str, setup: Setup, path: str, extra: list[str], callback: str, batch_size: int | None = None) -> int:
    """``dlbench fit`` in this process with the data path chosen by ``DLBENCH_DATA_PATH``; its exit code."""
    from dlbench.cli import main
    from dlbench.core import registry

    spec = registry.plugin(model)
    args = ["fit", "--model", model, *setup.data, "--data.batch_size", str(batch_size or setup.batch_size),
            "--trainer.accelerator", setup.device, "--trainer.devices", "1", "--test_after_fit", "false",
            "--trainer.callbacks", callback, *(spec.tiny_args if setup.tiny else ()), *extra]
    os.environ["DLBENCH_DATA_PATH"] = "device" if path == "tensor" else "dataloader"
    try:
        return main(args)
    finally:
        os.environ.pop("DLBENCH_DATA_PATH", None)
        gc.collect()
        if setup.device == "cuda":
            torch.cuda.empty_cache()


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def throughput(model: str, setup: Setup, path: str, precision: str, compiled: bool) -> tuple[float | str, int]:
    """Samples per second (or why there is none), and the number of graphs torch.compile captured in the run."""
    Throughput.results.clear()
    callback = _callback(Throughput, warmup=setup.warmup, steps=setup.steps)
    # No model summary: its FLOP count calls forward under a torch dispatch mode before training, and dynamo then
    # marks a compiled forward "skip" for good, so --compile would silently measure eager mode.
    extra = ["--trainer.precision", precision, "--compile", str(compiled).lower(), "--trainer.max_epochs", "1",
             "--trainer.enable_model_summary", "false"]
    torch._dynamo.reset()  # compile from scratch: no code cached by an earlier run of the same model class
    graphs = _graphs_compiled()
    code = _fit(model, setup, path, extra, callback)
    graphs = _graphs_compiled() - graphs
    if code != 0 or not Throughput.results:
        return f"failed (exit code {code})", graphs
    return Throughput.results[-1]["samples_per_s"], graphs


def time_to_accuracy(setup: Setup, precision: str) -> dict:
    StopAtAccuracy.results.clear()
    start = time.perf_counter()
    code = _fit("cnn", setup, "tensor", ["--trainer.precision", precision, "--trainer.max_epochs",
                                         str(setup.max_epochs)], _callback(StopAtAccuracy, target=TARGET_ACC),
                batch_size=setup.accuracy_batch_size)
    total = time.perf_counter() - start
    epochs = list(StopAtAccuracy.results)  # a copy: the next run clears the class's list
    reached = next((e for e in epochs if e["test_acc"] >= TARGET_ACC), None)
    return {"code": code, "epochs": epochs, "reached": reached, "command_seconds": total}


def _setup(opts: argparse.Namespace) -> Setup:
    if opts.cpu_dry_run:
        return Setup(device="cpu", data=["--data", "digits"], batch_size=16, accuracy_batch_size=16, warmup=1, steps=3,
                     max_epochs=1,
                     tiny=True)
    root = opts.root or (str(Path(os.environ["DLBENCH_TEST_DATA"]) / "mnist") if os.environ.get("DLBENCH_TEST_DATA")
                         else None)
    data = ["--data", "mnist"] + (["--data.root", root] if root else [])
    return Setup(device="cuda", data=data, batch_size=opts.batch_size,
                 accuracy_batch_size=opts.accuracy_batch_size, warmup=opts.warmup, steps=opts.steps,
                 max_epochs=opts.max_epochs, tiny=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="folder with the MNIST IDX files (default: "
                                                      "$DLBENCH_TEST_DATA/mnist, else downloaded)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=15, help="batches before timing (compilation happens here)")
    parser.add_argument("--steps", type=int, default=80, help="timed batches (at most the rest of one epoch)")
    parser.add_argument("--max-epochs", type=int, default=5, help="epochs at most for cnn to reach 99%%")
    parser.add_argument("--accuracy-batch-size", type=int, default=128,
                        help="batch size of the cnn's run to 99%% (its reference recipe's; default 128)")
    parser.add_argument("--skip-time-to-accuracy", action="store_true", help="throughput rows only")
    parser.add_argument("--cpu-dry-run", action="store_true", help="check every code path on the CPU, tiny sizes")
    opts = parser.parse_args(argv)
    if not opts.cpu_dry_run and not torch.cuda.is_available():
        print("skipped: no CUDA device (run on a machine with a GPU, or check the script with --cpu-dry-run)")
        return 0
    setup = _setup(opts)
    if opts.cpu_dry_run:  # dynamo's graph capture without inductor's C++ code generation: a check, not a speed
        torch.compile = functools.partial(torch.compile, backend="eager")

    with tempfile.TemporaryDirectory() as logs:
        os.environ["DLBENCH_LOG_DIR"] = logs
        rows = []
        for model in opts.models:
            base = None
            for path in PATHS:
                for precision in PRECISIONS:
                    for compiled in (False, True):
                        rate, graphs = throughput(model, setup, path, precision, compiled)
                        if (path, precision, compiled) == ("tensor", "32-true", False) and isinstance(rate, float):
                            base = rate  # the reference of the last column; a failed reference run leaves it out
                        mode = f"compiled ({graphs} graphs)" if compiled else "eager"
                        rows.append((model, path, precision, mode, rate, base))
        accuracy = {} if opts.skip_time_to_accuracy else {p: time_to_accuracy(setup, p) for p in PRECISIONS}

    print(f"\nTraining throughput, samples/s over {setup.steps} batches of {setup.batch_size} after {setup.warmup} "
          f"warm-up batches ({'CPU DRY RUN: tiny sizes, numbers mean nothing' if opts.cpu_dry_run else 'MNIST'})")
    header = ("model", "data path", "precision", "mode", "samples/s", "vs tensor/fp32/eager")
    print("  {:<8} {:<11} {:<11} {:<21} {:>12} {:>22}".format(*header))
    for model, path, precision, mode, rate, base in rows:
        shown = f"{rate:12.0f}" if isinstance(rate, float) else f"{rate:>12}"
        rel = f"{rate / base:21.2f}x" if isinstance(rate, float) and base else f"{'-':>22}"
        print(f"  {model:<8} {path:<11} {precision:<11} {mode:<21} {shown} {rel}")
    data_name = setup.data[1]
    model_size = "tiny preset" if setup.tiny else "default model"
    if accuracy:
        print(f"\ncnn on {data_name} to {TARGET_ACC:.0%} test accuracy ({model_size}, batch "
              f"{setup.accuracy_batch_size}, at most {setup.max_epochs} epochs, tensor path):")
    for precision, result in accuracy.items():
        epochs = ", ".join(f"{e['test_acc']:.4f}" for e in result["epochs"])
        if result["reached"]:
            r = result["reached"]
            print(f"  {precision:<11} reached in {r['train_seconds']:.1f} s of training (epoch {r['epoch']}); whole "
                  f"command {result['command_seconds']:.1f} s; test accuracy per epoch: {epochs}")
        else:
            print(f"  {precision:<11} not reached (exit code {result['code']}); test accuracy per epoch: {epochs}")
    from dlbench.core.machine import describe  # called last: its load average then covers the measurement
    print(f"\nHardware/software: {describe()}")
    print(f"Command: python {shlex.join(['benchmarks/gpu_throughput.py', *(sys.argv[1:] if argv is None else argv)])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
