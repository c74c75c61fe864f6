"""One line that says what a measurement ran on: the CPU model, cores, torch threads, load, the GPU and versions.
Every benchmark prints it beside its numbers, and ``dlbench bench`` writes it into its report."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """``CPU, N cores available, torch threads T, load average 1/5/15 min; GPU NAME (CUDA V); Python, torch,
    lightning and dlbench versions`` (the GPU part only where CUDA sees one). Call it when a measurement ends, so that
    the load averages cover it."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cpu_name()}, {cores} cores available, torch threads {torch.get_num_threads()}"
    if hasattr(os, "getloadavg"):
        text += ", load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return (f"{text}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"lightning {_version('lightning')}, dlbench {_version('dlbench')}")
