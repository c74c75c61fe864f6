"""Reference result of the `audio` plugin: Free Spoken Digit Dataset test accuracy against the ~95% of a small CNN on
log-mel or MFCC features.

Runs the real command, ``dlbench fit --model audio --data fsdd --data.root ROOT --trainer.max_epochs 15
--seed_everything S``, once per seed (in this process, so torch is imported once), with the plugin's default
Conv1D (3 layers of 64 channels over 100 frames x 40 log-mel bands), and reads ``test/acc`` (the best-``val/acc``
checkpoint on the 300 recordings of the standard test split, takes 0-4) and ``test/acc_majority`` back from each
run's TensorBoard events. FSDD is small (2,700 training clips of at most a second): the full recipe runs in a few
minutes on a CPU.

    python benchmarks/reference_audio.py --root /path/to/fsdd/recordings
    DLBENCH_TEST_DATA=/work/shared/data python benchmarks/reference_audio.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = 0.95  # a small CNN on log-mel / MFCC features of FSDD, standard split (see the shared data README)


def run_once(root: str, seed: int, epochs: int, extra: list[str], log_dir: Path) -> tuple[dict, float, list[str]]:
    from dlbench.cli import main
    from dlbench.runs import last_scalars

    args = ["fit", "--model", "audio", "--data", "fsdd", "--data.root", root, "--trainer.max_epochs", str(epochs),
            "--seed_everything", str(seed), *extra,
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    os.environ["DLBENCH_LOG_DIR"] = str(log_dir)
    start = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - start
    if code != 0:
        sys.exit(f"dlbench fit exited with {code}")
    (run_dir,) = sorted((log_dir / "audio").glob("version_*"))
    return last_scalars(run_dir), seconds, args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = os.path.join(os.environ["DLBENCH_TEST_DATA"], "fsdd", "recordings") \
        if "DLBENCH_TEST_DATA" in os.environ else None
    parser.add_argument("--root", default=default_root, help="folder of the FSDD WAV files "
                        "(default: $DLBENCH_TEST_DATA/fsdd/recordings)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("extra", nargs="*", help="more dlbench overrides, after --, e.g. -- --data.augment true")
    args = parser.parse_args()
    if args.root is None:
        sys.exit("give --root or set DLBENCH_TEST_DATA")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    accs, times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            scalars, seconds, command = run_once(args.root, seed, args.epochs, args.extra, Path(tmp) / f"seed{seed}")
            accs.append(scalars["test/acc"])
            times.append(seconds)
            print(f"seed {seed}: test/acc {scalars['test/acc']:.4f} (majority class {scalars['test/acc_majority']:.4f},"
                  f" best val/acc {scalars['val/acc_best']:.4f})  {seconds:.1f} s", flush=True)
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"\nfsdd: test/acc {statistics.mean(accs):.4f} +- {spread:.4f} (mean +- std over {len(accs)} seeds; "
          f"min {min(accs):.4f}, max {max(accs):.4f})")
    print(f"reference: >= {REFERENCE:.2f} (small CNN on log-mel or MFCC features, standard split)")
    print(f"wall time per run: {statistics.mean(times):.1f} s (mean), total {sum(times):.1f} s")
    from dlbench.core.machine import describe  # called last: its load average then covers the measurement
    print(f"hardware: {describe()}", flush=True)
    print("command per seed: dlbench " + " ".join(command).replace(f"--seed_everything {args.seeds[-1]}",
                                                                   "--seed_everything S"))


if __name__ == "__main__":
    main()
