"""Shared fixtures: throwaway installed distributions, and running the real ``dlbench`` command."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dlbench.core import registry

ROOT = Path(__file__).resolve().parents[1]

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:  # each worker (and the dlbench processes it starts) takes its share of the cores, not all of them
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


def write_dist(site: Path, name: str, version: str, entry_points: dict[str, dict[str, str]],
               modules: dict[str, str]) -> None:
    """A real installed distribution: a ``.dist-info`` folder with METADATA and entry_points.txt, plus modules,
    in a directory that goes on ``sys.path``. importlib.metadata finds it exactly as it finds pip-installed ones."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for filename, source in modules.items():
        (site / filename).write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh site directory on sys.path (and PYTHONPATH for subprocesses), registry cache cleared around use."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]))
    registry.entries.cache_clear()
    yield path
    registry.entries.cache_clear()


def dlbench(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``dlbench`` command as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k != "DLBENCH_LOG_DIR"}  # runs land under cwd unless env says
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "dlbench", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
