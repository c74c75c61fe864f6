"""Start-up time: ``dlbench list`` against ``python -c "import torch"``, and ``dlbench fit`` to its first training step.

* ``dlbench list`` must not import torch, so it should take well under the time of importing torch alone (goal:
  < 0.3x). Both commands run ``--runs`` times, alternated, as fresh processes; medians are compared.
* Time to first step: from starting ``dlbench fit --model lstm`` (as a user types it, plus ``--trainer.max_steps 1
  --test_after_fit false``, which only shorten what comes after the first step) to the start of its first training
  batch. A tiny callback, added on the command line with ``--trainer.callbacks``, writes the wall-clock time of
  ``on_train_batch_start`` to a file; everything before it counts: interpreter, imports, argument parsing, data
  set-up, model summary, the sanity check on validation batches. It is compared with ``python -c "import torch,
  lightning"``, the floor of any Lightning-based command, run after each fit run (alternated).

    python benchmarks/startup.py
    python benchmarks/startup.py --runs 9 --fit-runs 5 --model mlp
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_LIST = 0.3
CALLBACK = '''
import os
import time

from lightning.pytorch.callbacks import Callback


class FirstStep(Callback):
    """Writes the wall-clock time at which the first training batch starts."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        path = os.environ.get("DLBENCH_FIRST_STEP_FILE")
        if path and not os.path.exists(path):
            with open(path, "w") as f:
                f.write(repr(time.time()))
'''


def dlbench_command() -> list[str]:
    """The installed ``dlbench`` console script next to this interpreter (what a user runs), else ``-m dlbench``."""
    script = Path(sys.executable).with_name("dlbench")
    if script.is_file():
        return [str(script)]
    found = shutil.which("dlbench")
    return [found] if found else [sys.executable, "-m", "dlbench"]


def wall(command: list[str], cwd: str, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def alternate(commands: dict[str, list[str]], runs: int, cwd: str) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in commands}
    for command in commands.values():  # one untimed run each: file-system caches warm for both alike
        wall(command, cwd)
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(wall(command, cwd))
    return times


def first_step(model: str, runs: int, cwd: str, floor: list[str]) -> tuple[list[float], list[float]]:
    """Seconds from launching ``dlbench fit --model MODEL`` to the start of its first training batch, per run, and
    the seconds of the ``floor`` command run after each (alternated, so that load falls on both alike)."""
    hook_dir = Path(cwd) / "hook"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "dlbench_first_step.py").write_text(CALLBACK)
    command = [*dlbench_command(), "fit", "--model", model, "--trainer.max_steps", "1", "--test_after_fit", "false",
               "--trainer.callbacks", '[{"class_path": "dlbench_first_step.FirstStep"}]']
    seconds, floor_seconds = [], []
    for i in range(runs):
        marker = Path(cwd) / f"first_step_{i}"
        env = {**os.environ, "DLBENCH_FIRST_STEP_FILE": str(marker), "DLBENCH_LOG_DIR": str(Path(cwd) / "logs"),
               "PYTHONPATH": os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")])}
        start = time.time()
        result = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        if result.returncode != 0 or not marker.exists():
            raise SystemExit(f"{shlex.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
        seconds.append(float(marker.read_text()) - start)
        floor_seconds.append(wall(floor, cwd))
    return seconds, floor_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each short command (alternated)")
    parser.add_argument("--fit-runs", type=int, default=3, help="runs of dlbench fit to its first step")
    parser.add_argument("--model", default="lstm", help="plugin for the time to first step")
    opts = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as cwd:
        py = sys.executable
        short = alternate({"dlbench list": [*dlbench_command(), "list"],
                           "import torch": [py, "-c", "import torch"],
                           "import torch, lightning": [py, "-c", "import torch, lightning"],
                           "python -c pass": [py, "-c", "pass"]}, opts.runs, cwd)
        fit, floor = first_step(opts.model, opts.fit_runs, cwd, [py, "-c", "import torch, lightning"])

    med = {name: statistics.median(t) for name, t in short.items()}
    ratio = med["dlbench list"] / med["import torch"]
    fit_med = statistics.median(fit)
    print(f"Start-up, median of {opts.runs} alternated runs (fresh processes):")
    for name, t in short.items():
        print(f"  {name:<26} {med[name]:7.3f} s   (runs: {', '.join(f'{x:.2f}' for x in t)})")
    verdict = "ok" if ratio < GOAL_LIST else "MISSED"
    print(f"  dlbench list / import torch: {ratio:.2f}x (goal < {GOAL_LIST}x: {verdict})")
    print(f"\nTime from 'dlbench fit --model {opts.model}' to its first training step, median of {opts.fit_runs}: "
          f"{fit_med:.2f} s (runs: {', '.join(f'{x:.2f}' for x in fit)})")
    floor_med = statistics.median(floor)
    print(f"  = {fit_med / floor_med:.2f}x 'import torch, lightning' timed alternately with it ({floor_med:.2f} s; "
          f"runs: {', '.join(f'{x:.2f}' for x in floor)})")
    from dlbench.core.machine import describe  # called last: its load average then covers the measurement
    print(f"\nHardware/software: {describe()}")
    print(f"Command: python {shlex.join(['benchmarks/startup.py', *(sys.argv[1:] if argv is None else argv)])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
