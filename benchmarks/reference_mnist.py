"""Reference results of the `cnn`, `mlp` and `rnn` plugins on MNIST: test accuracy against 99.0% (small CNN), 97.5%
(MLP) and 98% (LSTM reading rows).

Runs the real command, ``dlbench fit --model cnn --data mnist --data.root ROOT --trainer.max_epochs N``, with the
plugins' default architectures and data settings (no augmentation), in this process so torch is imported once, and
reads ``test/acc`` (the best-``val/acc`` checkpoint on the official 10,000 test images) and ``test/acc_majority``
back from each run's TensorBoard events, together with the seconds each epoch took (the wall-clock times of the
per-epoch ``train/loss`` events). The full recipe is 5 epochs for the cnn, 20 for the mlp and 10 for the rnn
(``--rows rnn:mnist``), with the learning rate decayed to zero over the run; on a slow CPU run fewer epochs
(``--cnn-epochs 3``): each row then also prints the time the full recipe would take at the measured speed.
``--fashion`` adds the cnn on Fashion-MNIST (reference ~91-93%).

    python benchmarks/reference_mnist.py --root /path/to/mnist          # the four IDX files, gzipped or not
    DLBENCH_TEST_DATA=/work/shared/data python benchmarks/reference_mnist.py --cnn-epochs 3 --mlp-epochs 5 --fashion
    python benchmarks/reference_mnist.py --rows cnn:fashion_mnist --cnn-epochs 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FULL_EPOCHS = {"cnn": 5, "mlp": 20, "rnn": 10}
# rnn: an LSTM reading the 28 rows one per step; published row-by-row LSTMs reach ~98-99%.
REFERENCE = {("cnn", "mnist"): 0.990, ("mlp", "mnist"): 0.975, ("rnn", "mnist"): 0.98, ("cnn", "fashion_mnist"): 0.91}


@dataclass
class Result:
    model: str
    data: str
    epochs: int
    acc: float
    majority: float
    seconds: float
    epoch_seconds: float
    command: list[str]


def epoch_seconds(run_dir: Path) -> float:
    """Median seconds between consecutive epochs' ``train/loss`` events (training plus validation of one epoch)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    events.Reload()
    times = [e.wall_time for e in events.Scalars("train/loss")]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return statistics.median(gaps) if gaps else float("nan")


def run_once(model: str, data: str, root: str, epochs: int, seed: int, extra: list[str], log_dir: Path) -> Result:
    from dlbench.cli import main
    from dlbench.runs import last_scalars

    args = ["fit", "--model", model, "--data", data, "--data.root", root, "--trainer.max_epochs", str(epochs),
            "--seed_everything", str(seed), *extra,
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    print(f"running: dlbench {shlex.join(args)}", file=sys.stderr, flush=True)
    os.environ["DLBENCH_LOG_DIR"] = str(log_dir)
    start = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - start
    if code != 0:
        sys.exit(f"dlbench fit exited with {code}")
    (run_dir,) = sorted((log_dir / model).glob("version_*"))
    scalars = last_scalars(run_dir)
    return Result(model, data, epochs, scalars["test/acc"], scalars["test/acc_majority"], seconds,
                  epoch_seconds(run_dir), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    test_data = os.environ.get("DLBENCH_TEST_DATA")
    parser.add_argument("--root", default=os.path.join(test_data, "mnist") if test_data else None,
                        help="folder holding MNIST's four IDX files (default: $DLBENCH_TEST_DATA/mnist)")
    parser.add_argument("--fashion-root", default=os.path.join(test_data, "fashion-mnist") if test_data else None,
                        help="Fashion-MNIST's folder, for --fashion (default: $DLBENCH_TEST_DATA/fashion-mnist)")
    parser.add_argument("--rows", nargs="+", default=["cnn:mnist", "mlp:mnist"],
                        choices=[f"{m}:{d}" for m, d in REFERENCE], help="model:data pairs to run")
    parser.add_argument("--fashion", action="store_true", help="also train the cnn on Fashion-MNIST")
    parser.add_argument("--cnn-epochs", type=int, default=FULL_EPOCHS["cnn"])
    parser.add_argument("--mlp-epochs", type=int, default=FULL_EPOCHS["mlp"])
    parser.add_argument("--rnn-epochs", type=int, default=FULL_EPOCHS["rnn"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one run per seed (default: 42)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); on a CPU shared with other jobs, 1 "
                             "avoids threads spinning while they wait for each other")
    parser.add_argument("extra", nargs="*", help="more dlbench overrides, after --, e.g. -- --data.augment true")
    args = parser.parse_args()
    if args.root is None:
        sys.exit("give --root or set DLBENCH_TEST_DATA")
    if args.fashion and "cnn:fashion_mnist" not in args.rows:
        args.rows.append("cnn:fashion_mnist")
    if "cnn:fashion_mnist" in args.rows and args.fashion_root is None:
        sys.exit("give --fashion-root or set DLBENCH_TEST_DATA")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    roots = {"mnist": args.root, "fashion_mnist": args.fashion_root}
    rows = [(model, data, roots[data]) for model, data in (row.split(":") for row in args.rows)]
    epochs = {"cnn": args.cnn_epochs, "mlp": args.mlp_epochs, "rnn": args.rnn_epochs}
    results: list[list[Result]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, data, root) in enumerate(rows):
            results.append([run_once(model, data, root, epochs[model], seed, args.extra, Path(tmp) / f"{i}-{seed}")
                            for seed in args.seeds])

    print(f"\nMNIST reference benchmark ({len(args.seeds)} run(s) per row, seeds {args.seeds})")
    header = f"{'model':<5} {'data':<14} {'epochs':>6} {'test acc':>9} {'reference':>9} {'majority':>9} " \
             f"{'s/epoch':>8} {'wall s':>7} {'full recipe':>14}"
    print(header)
    print("-" * len(header))
    for runs in results:
        first = runs[0]
        acc = statistics.mean(r.acc for r in runs)
        per_epoch = statistics.mean(r.epoch_seconds for r in runs)
        wall = statistics.mean(r.seconds for r in runs)
        full = FULL_EPOCHS[first.model]
        estimate = "(this run)" if first.epochs == full else f"~{full * per_epoch / 60:.1f} min/{full} ep"
        reference = REFERENCE[(first.model, first.data)]
        verdict = "ok" if acc >= reference else "BELOW"
        print(f"{first.model:<5} {first.data:<14} {first.epochs:>6} {acc:>9.4f} {reference:>9.3f} "
              f"{first.majority:>9.4f} {per_epoch:>8.1f} {wall:>7.0f} {estimate:>14}  {verdict}")
        if len(runs) > 1:
            print(f"      per seed: {', '.join(f'{r.acc:.4f}' for r in runs)}")
    from dlbench.core.machine import describe  # called last: its load average then covers the measurement
    print(f"\nhardware: {describe()}")
    print(f"benchmark: python {shlex.join(sys.argv)}")
    for runs in results:
        print(f"command:   dlbench {shlex.join(runs[0].command)}")


if __name__ == "__main__":
    main()
