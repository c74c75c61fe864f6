"""Reference result of the `gcn` plugin: Cora test accuracy against Kipf & Welling's 81.5%.

Runs the real command, ``dlbench fit --model gcn --data cora --data.root ROOT --seed_everything S``, once per seed
(in this process, so torch is imported once) and reads ``test/acc`` (the best-``val/acc`` checkpoint on the 1,000
public test nodes) back from each run's TensorBoard events. Cora trains in seconds to a minute on a CPU, so the
full 200-epoch setting runs here; print mean and spread over the seeds.

    python benchmarks/reference_gcn.py --root /path/to/planetoid        # holds Cora/raw/ind.cora.*
    DLBENCH_TEST_DATA=/work/shared/data python benchmarks/reference_gcn.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = {"cora": 0.815, "citeseer": 0.703, "pubmed": 0.790}  # Kipf & Welling (2017), Table 2


def run_once(data: str, root: str, seed: int, extra: list[str], log_dir: Path) -> tuple[float, float, list[str]]:
    from dlbench.cli import main
    from dlbench.runs import last_scalars

    args = ["fit", "--model", "gcn", "--data", data, "--data.root", root, "--seed_everything", str(seed), *extra,
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    os.environ["DLBENCH_LOG_DIR"] = str(log_dir)
    start = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - start
    if code != 0:
        sys.exit(f"dlbench fit exited with {code}")
    (run_dir,) = sorted((log_dir / "gcn").glob("version_*"))
    return last_scalars(run_dir)["test/acc"], seconds, args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = os.path.join(os.environ["DLBENCH_TEST_DATA"], "planetoid") if "DLBENCH_TEST_DATA" in os.environ \
        else None
    parser.add_argument("--root", default=default_root, help="folder holding <Name>/raw/ind.<name>.* "
                        "(default: $DLBENCH_TEST_DATA/planetoid)")
    parser.add_argument("--data", default="cora", choices=sorted(REFERENCE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("extra", nargs="*", help="more dlbench overrides, after --, e.g. -- --trainer.max_epochs 100")
    args = parser.parse_args()
    if args.root is None:
        sys.exit("give --root or set DLBENCH_TEST_DATA")


    accs, times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            acc, seconds, command = run_once(args.data, args.root, seed, args.extra, Path(tmp) / f"seed{seed}")
            accs.append(acc)
            times.append(seconds)
            print(f"seed {seed}: test/acc {acc:.4f}  ({seconds:.1f} s)", flush=True)
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"\n{args.data}: test/acc {statistics.mean(accs):.4f} +- {spread:.4f} (mean +- std over {len(accs)} seeds; "
          f"min {min(accs):.4f}, max {max(accs):.4f})")
    print(f"reference: {REFERENCE[args.data]:.3f} (Kipf & Welling 2017, 2-layer GCN, public split)")
    print(f"wall time per run: {statistics.mean(times):.1f} s (mean), total {sum(times):.1f} s")
    from dlbench.core.machine import describe  # called last: its load average then covers the measurement
    print(f"hardware: {describe()}", flush=True)
    print("command per seed: dlbench " + " ".join(command).replace(f"--seed_everything {args.seeds[-1]}",
                                                                   "--seed_everything S"))


if __name__ == "__main__":
    main()
