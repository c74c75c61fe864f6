"""Helpers for tests that check what a command does to runs made before it: tiny real runs built once a test
session (shared by the pytest-xdist workers through a file lock), a hook module that stops a run at a known step,
and snapshots of a run's files (path -> sha256) compared before and after a command."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from dlbench.core.conventions import DERIVED_DIRS, EVENTS_PREFIX

Snapshot = dict[str, str]

SIGNAL_AT = '''
import os
import signal
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SignalAt(Callback):
    """Sends this process ``signum`` once, when training has taken ``step`` steps (a user's Ctrl-C, or a kill -9,
    at a known batch however loaded the machine is). ``marker`` records that it was sent, so the same config resumed
    is not stopped again. Before a SIGKILL it waits until the run's last.ckpt is on disk (checkpoints are written on a
    background thread), so the killed run has a checkpoint to resume, evaluate and export."""

    def __init__(self, step: int, signum: int, marker: str) -> None:
        self.step, self.signum, self.marker = step, signum, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step or self.marker.exists():
            return
        self.marker.touch()
        if self.signum == int(signal.SIGKILL):
            last = Path(trainer.log_dir) / "checkpoints" / "last.ckpt"
            deadline = time.time() + 60
            while not last.exists() and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
        os.kill(os.getpid(), self.signum)
'''


def shared_root(tmp_path_factory, worker_id: str) -> Path:
    """A folder every xdist worker of this session sees (the session's base temp folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@contextmanager
def locked(path: Path) -> Iterator[None]:
    with FileLock(str(path) + ".lock", timeout=1200):
        yield


def build_once(root: Path, name: str, build: Callable[[Path], dict]) -> tuple[Path, dict]:
    """``build(folder)`` run once a session in ``root/name`` (whichever worker asks first builds, the others wait);
    returns the folder and the JSON-able record ``build`` returned. A build that failed is not retried: its error is
    raised again from the record."""
    folder, record_file = root / name, root / f"{name}.json"
    with locked(root / name):
        if not record_file.exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            try:
                record = {"ok": True, **build(folder)}
            except BaseException as err:  # recorded so the other worker fails the same way, not by rebuilding
                record = {"ok": False, "error": f"{type(err).__name__}: {err}"}
            record_file.write_text(json.dumps(record))
        record = json.loads(record_file.read_text())
    if not record["ok"]:
        raise AssertionError(f"building {name} failed: {record['error']}")
    return folder, record


def hook_dir(root: Path) -> Path:
    """A folder holding the ``dlbench_signal_at`` module (put it on PYTHONPATH of every command on such a run:
    the run's config.yaml names the callback)."""
    hook = root / "hook"
    with locked(hook):
        hook.mkdir(exist_ok=True)
        module = hook / "dlbench_signal_at.py"
        if not module.exists():
            module.write_text(SIGNAL_AT)
    return hook


def signal_callback(step: int, signum: int, marker: Path) -> str:
    return json.dumps([{"class_path": "dlbench_signal_at.SignalAt",
                        "init_args": {"step": step, "signum": int(signum), "marker": str(marker)}}])


def hook_env(hook: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}


def run_dlbench(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``conftest.dlbench`` (same environment: runs land under ``cwd`` unless ``env`` says otherwise), but in a
    process group killed as a whole on timeout, so a command that wrongly starts training (sweep trials, bench
    runs) leaves no process behind. A timeout comes back as return code 124 with what was printed so far."""
    full_env = {k: v for k, v in os.environ.items() if k != "DLBENCH_LOG_DIR"}
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    process = subprocess.Popen([sys.executable, "-m", "dlbench", *args], cwd=cwd, env=full_env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        code, err = 124, err + f"\n[test: killed after {timeout} s]"
    return subprocess.CompletedProcess(process.args, code, out, err)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_derived(relative: Path) -> bool:
    """Whether a path inside a run directory lies in a folder that commands reading the run may write."""
    return bool(relative.parts) and relative.parts[0] in DERIVED_DIRS


def snapshot(run: Path) -> Snapshot:
    """Every file of a run outside its derived folders, as relative path -> sha256."""
    return {str(p.relative_to(run)): sha256(p) for p in sorted(run.rglob("*"))
            if p.is_file() and not is_derived(p.relative_to(run))}


def snapshot_tree(path: Path) -> Snapshot:
    """Every file under ``path`` (or ``path`` itself, a file), as relative path -> sha256."""
    if path.is_file():
        return {".": sha256(path)}
    return {str(p.relative_to(path)): sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    return ([f"changed: {k}" for k in changed] + [f"appeared: {k}" for k in sorted(after.keys() - before.keys())]
            + [f"disappeared: {k}" for k in sorted(before.keys() - after.keys())])


def run_dirs(folder: Path) -> list[Path]:
    """The run directories under ``folder``: folders with a config.yaml, status.json, checkpoints/ or event files,
    not counting the folders inside a run's derived folders (an evaluation's own config.yaml)."""
    found = set()
    for p in folder.rglob("*"):
        if p.name in ("config.yaml", "status.json", "checkpoints") or p.name.startswith(EVENTS_PREFIX):
            found.add(p.parent)
    runs = []
    for run in sorted(found, key=lambda r: len(r.parts)):
        if not any(r in run.parents and is_derived(run.relative_to(r)) for r in runs):
            runs.append(run)
    return sorted(runs)


def copy_run(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, symlinks=True)
    return target


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
