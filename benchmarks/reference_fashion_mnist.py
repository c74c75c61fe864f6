"""Reference results of the `resnet` plugin on Fashion-MNIST (test accuracy against 92%) and the `vit` plugin on MNIST.

Runs the real command in this process (torch is imported once), e.g.

    dlbench fit --model resnet --data fashion_mnist --data.root ROOT --data.augment true --trainer.max_epochs 15
        --trainer.accelerator auto

with the plugin's default architecture (the ResNet-18 shape at a quarter of its width, 16-32-64-128 channels,
SGD with momentum and a one-cycle schedule) and random translations of up to 3 pixels, and reads ``test/acc`` (the
best-``val/acc`` checkpoint on the official 10,000 test images) and ``test/acc_majority`` back from each run's
TensorBoard events, with the seconds each epoch took (the wall-clock gaps between per-epoch ``train/loss`` events).

The full recipe is 15 epochs of ResNet on Fashion-MNIST (reference: >= 92%, the small-CNN result of Fashion-MNIST's
benchmark, which a ResNet should at least match) and 10 epochs of ViT on MNIST (reference: >= 98%, what an MLP
reaches; a small ViT without convolutions is not expected to match a CNN's 99%). On a slow CPU run a shortened
version: fewer epochs (``--resnet-epochs 2``) and/or a fraction of each training epoch
(``--limit-train-batches 0.25``); every row then also prints the time the full recipe would take at the measured
speed. With a GPU (``--trainer.accelerator auto`` picks it) the full recipe takes a few minutes.

    python benchmarks/reference_fashion_mnist.py --root /path/to/fashion-mnist --mnist-root /path/to/mnist
    DLBENCH_TEST_DATA=/work/shared/data python benchmarks/reference_fashion_mnist.py --resnet-epochs 2 \\
        --vit-epochs 1 --limit-train-batches 0.25 --threads 1
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    model: str
    data: str
    full_epochs: int
    reference: float
    args: tuple[str, ...]
    """Overrides beyond the plugin's defaults, part of the recipe."""


ROWS = {
    "resnet": Row("resnet", "fashion_mnist", 15, 0.92, ("--data.augment", "true")),
    "vit": Row("vit", "mnist", 10, 0.98, ("--data.augment", "true")),
}


@dataclass
class Result:
    row: Row
    epochs: int
    fraction: float
    acc: float
    majority: float
    seconds: float
    epoch_seconds: float
    cpu_seconds: float
    """CPU time of the whole fit (all threads): on a CPU shared with other jobs, wall time says more about the
    neighbours than about the model; with one thread, CPU time is the wall time an idle core would take."""
    command: list[str]

    def full_minutes(self, per_epoch: float) -> float:
        """Minutes the full recipe would take at ``per_epoch`` seconds per (possibly shortened) epoch; validation
        time is scaled with the training fraction too, so this is an upper bound."""
        return self.row.full_epochs * per_epoch / self.fraction / 60


def epoch_seconds(run_dir: Path) -> float:
    """Median seconds between consecutive epochs' ``train/loss`` events (training plus validation of one epoch);
    NaN with a single epoch."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    events.Reload()
    times = [e.wall_time for e in events.Scalars("train/loss")]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return statistics.median(gaps) if gaps else float("nan")


def run_once(row: Row, root: str, epochs: int, fraction: float, extra: list[str], log_dir: Path) -> Result:
    from dlbench.cli import main
    from dlbench.runs import last_scalars

    args = ["fit", "--model", row.model, "--data", row.data, "--data.root", root, *row.args,
            "--trainer.max_epochs", str(epochs), "--trainer.accelerator", "auto", *extra]
    if fraction < 1:
        args += ["--trainer.limit_train_batches", str(fraction)]
    print(f"running: dlbench {shlex.join(args)}", file=sys.stderr, flush=True)
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    os.environ["DLBENCH_LOG_DIR"] = str(log_dir)
    start, cpu_start = time.perf_counter(), time.process_time()
    code = main(args + quiet)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if code != 0:
        sys.exit(f"dlbench fit exited with {code}")
    run_dir = max((log_dir / row.model).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    scalars = last_scalars(run_dir)
    per_epoch = epoch_seconds(run_dir)
    if math.isnan(per_epoch):  # one epoch: no gap between epochs to measure
        per_epoch = seconds / epochs
    return Result(row, epochs, fraction, scalars["test/acc"], scalars["test/acc_majority"], seconds, per_epoch,
                  cpu_seconds, args)


def report(results: list[Result]) -> None:

    print("\nFashion-MNIST / MNIST reference benchmark")
    header = (f"{'model':<6} {'data':<14} {'epochs':>6} {'of epoch':>8} {'test acc':>9} {'reference':>9} "
              f"{'majority':>9} {'s/epoch':>8} {'wall s':>7} {'cpu s':>7} {'full recipe (wall, cpu)':>24}")
    print(header)
    print("-" * len(header))
    for r in results:
        full = r.epochs == r.row.full_epochs and r.fraction == 1
        cpu_per_epoch = r.cpu_seconds / r.epochs
        estimate = "(this run)" if full else \
            f"~{r.full_minutes(r.epoch_seconds):.0f}, {r.full_minutes(cpu_per_epoch):.0f} min/{r.row.full_epochs} ep"
        verdict = "ok" if r.acc >= r.row.reference else ("BELOW" if full else "below (shortened run)")
        print(f"{r.row.model:<6} {r.row.data:<14} {r.epochs:>6} {r.fraction:>8.2f} {r.acc:>9.4f} "
              f"{r.row.reference:>9.3f} {r.majority:>9.4f} {r.epoch_seconds:>8.1f} {r.seconds:>7.0f} "
              f"{r.cpu_seconds:>7.0f} {estimate:>24}  {verdict}")
    from dlbench.core.machine import describe  # called last: its load average then covers the measurement
    print(f"\nhardware: {describe()}")
    print(f"benchmark: python {shlex.join(sys.argv)}")
    for r in results:
        print(f"command:   dlbench {shlex.join(r.command)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    test_data = os.environ.get("DLBENCH_TEST_DATA")
    parser.add_argument("--root", default=os.path.join(test_data, "fashion-mnist") if test_data else None,
                        help="Fashion-MNIST's folder, four IDX files (default: $DLBENCH_TEST_DATA/fashion-mnist)")
    parser.add_argument("--mnist-root", default=os.path.join(test_data, "mnist") if test_data else None,
                        help="MNIST's folder, for the vit row (default: $DLBENCH_TEST_DATA/mnist)")
    parser.add_argument("--models", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--resnet-epochs", type=int, default=ROWS["resnet"].full_epochs)
    parser.add_argument("--vit-epochs", type=int, default=ROWS["vit"].full_epochs)
    parser.add_argument("--limit-train-batches", type=float, default=1.0,
                        help="fraction of each training epoch to run (a shortened run on a slow machine)")
    parser.add_argument("--log-dir", default=None,
                        help="keep the runs (TensorBoard logs, checkpoints) in this folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); on a CPU shared with other jobs, 1 "
                             "avoids threads spinning while they wait for each other")
    parser.add_argument("--resnet-args", default="", help="more dlbench overrides for the resnet row, e.g. "
                        "'--model.widths [64,128,256,512] --trainer.precision bf16-mixed'")
    parser.add_argument("--vit-args", default="", help="more dlbench overrides for the vit row, e.g. '--model.dim 128'")
    args = parser.parse_args()
    roots = {"resnet": args.root, "vit": args.mnist_root}
    for model in args.models:
        if roots[model] is None:
            sys.exit(f"give --{'root' if model == 'resnet' else 'mnist-root'} or set DLBENCH_TEST_DATA")
    if not 0 < args.limit_train_batches <= 1:
        sys.exit(f"--limit-train-batches must be in (0, 1], got {args.limit_train_batches}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = {"resnet": args.resnet_epochs, "vit": args.vit_epochs}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        log_root = Path(args.log_dir) if args.log_dir else Path(tmp)
        for model in args.models:
            extra = shlex.split(getattr(args, f"{model}_args"))
            results.append(run_once(ROWS[model], roots[model], epochs[model], args.limit_train_batches, extra,
                                    log_root))
    report(results)


if __name__ == "__main__":
    main()
