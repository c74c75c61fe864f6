"""Reference result of the `tabular` plugin: breast cancer test AUROC, aiming at >= 0.98.

Runs the real command, ``dlbench fit --model tabular --data.seed S --seed_everything S``, once per seed (in this
process, so torch is imported once): each seed draws both a different stratified split and a different
initialisation. Reads ``test/auroc``, ``test/ap`` and the best-single-feature baseline ``test/auroc_best_feature``
back from each run's TensorBoard events and prints mean and spread over the seeds. The data ships with
scikit-learn, so nothing needs to be downloaded.

    python benchmarks/reference_tabular.py --seeds 0 1 2 3 4
    python benchmarks/reference_tabular.py -- --data tabular_csv --data.path creditcard.csv --data.batch_size 2048
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REFERENCE_AUROC = 0.98
METRICS = ("test/auroc", "test/ap", "test/auroc_best_feature", "test/ap_prevalence")


def run_once(seed: int, extra: list[str], log_dir: Path) -> tuple[dict[str, float], float, list[str]]:
    from dlbench.cli import main
    from dlbench.runs import last_scalars

    args = ["fit", "--model", "tabular", "--data.seed", str(seed), "--seed_everything", str(seed), *extra,
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    os.environ["DLBENCH_LOG_DIR"] = str(log_dir)
    start = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - start
    if code != 0:
        sys.exit(f"dlbench fit exited with {code}")
    (run_dir,) = sorted((log_dir / "tabular").glob("version_*"))
    scalars = last_scalars(run_dir)
    return {m: scalars[m] for m in METRICS}, seconds, args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("extra", nargs="*", help="more dlbench overrides, after --, e.g. -- --trainer.max_epochs 30")
    args = parser.parse_args()


    results, times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            scores, seconds, command = run_once(seed, args.extra, Path(tmp) / f"seed{seed}")
            results.append(scores)
            times.append(seconds)
            print(f"seed {seed}: " + "  ".join(f"{m} {v:.4f}" for m, v in scores.items()) + f"  ({seconds:.1f} s)",
                  flush=True)
    print()
    for m in METRICS:
        values = [r[m] for r in results]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{m:<24} {statistics.mean(values):.4f} +- {spread:.4f} (mean +- std over {len(values)} seeds; "
              f"min {min(values):.4f})")
    print(f"reference: test/auroc >= {REFERENCE_AUROC} on breast cancer")
    print(f"wall time per run: {statistics.mean(times):.1f} s (mean), total {sum(times):.1f} s")
    from dlbench.core.machine import describe  # called last: its load average then covers the measurement
    print(f"hardware: {describe()}", flush=True)
    line = " ".join(command)
    for flag in ("--data.seed", "--seed_everything"):
        line = line.replace(f"{flag} {args.seeds[-1]}", f"{flag} S")
    print(f"command per seed: dlbench {line}")


if __name__ == "__main__":
    main()
