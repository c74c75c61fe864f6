"""Reference result of the `detector` plugin: mAP@0.5 on the generated shapes against 0.8.

Runs the real command, ``dlbench fit --model detector --seed_everything S`` (the plugin's defaults: 3,000 generated
64x64 training images, an 8x8 grid, 8 epochs), once per seed in this process, and reads ``test/map50``,
``test/map`` (mAP@[.5:.95]) and the baseline ``test/map50_prior`` (each class's mean training box at every image)
back from each run's TensorBoard events; the test images are the best-``val/map50`` checkpoint's, 300 of them, the
same for every seed. The generated data is the detector's standard dataset: no real detection data ships offline.

    python benchmarks/reference_detector.py
    python benchmarks/reference_detector.py --seeds 0 1 2 -- --trainer.max_epochs 12
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = 0.8  # mAP@0.5 on the generated shapes (the target)


def run_once(seed: int, extra: list[str], log_dir: Path) -> tuple[dict, float, list[str]]:
    from dlbench.cli import main
    from dlbench.runs import last_scalars

    args = ["fit", "--model", "detector", "--seed_everything", str(seed), *extra,
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    os.environ["DLBENCH_LOG_DIR"] = str(log_dir)
    start = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - start
    if code != 0:
        sys.exit(f"dlbench fit exited with {code}")
    (run_dir,) = sorted((log_dir / "detector").glob("version_*"))
    return last_scalars(run_dir), seconds, args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("extra", nargs="*", help="more dlbench overrides, after --, e.g. -- --trainer.max_epochs 12")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    maps, times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            scalars, seconds, command = run_once(seed, args.extra, Path(tmp) / f"seed{seed}")
            maps.append(scalars["test/map50"])
            times.append(seconds)
            print(f"seed {seed}: test/map50 {scalars['test/map50']:.4f}, test/map {scalars['test/map']:.4f} "
                  f"(prior baseline map50 {scalars['test/map50_prior']:.4f})  {seconds:.1f} s", flush=True)
    spread = statistics.stdev(maps) if len(maps) > 1 else 0.0
    print(f"\nshapes: test/map50 {statistics.mean(maps):.4f} +- {spread:.4f} (mean +- std over {len(maps)} seeds; "
          f"min {min(maps):.4f}, max {max(maps):.4f})")
    print(f"reference: >= {REFERENCE:.2f} mAP@0.5")
    print(f"wall time per run: {statistics.mean(times):.1f} s (mean), total {sum(times):.1f} s")
    from dlbench.core.machine import describe  # called last: its load average then covers the measurement
    print(f"hardware: {describe()}", flush=True)
    print("command per seed: dlbench " + " ".join(command).replace(f"--seed_everything {args.seeds[-1]}",
                                                                   "--seed_everything S"))


if __name__ == "__main__":
    main()
