"""Helpers for tests that check what a command does to runs made before it: tiny real runs built once a test
session (shared by the pytest-xdist workers through a file lock), a hook module that stops a run at a known step,
and snapshots of a run's files (path -> sha256) compared before and after a command."""

from __future__ import annotations

import gc
import hashlib
import importlib
import io
import json
import locale
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
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


# Running a command in the test process ------------------------------------------------------------------------------
#
# ``dlbench.cli.main(argv)`` is what ``python -m dlbench`` runs: it returns the exit code for dlbench's own errors and
# lets anything else escape (the traceback a user would see). ``run_in_process`` calls it as a fresh process would
# run it, without paying for importing torch and Lightning again: the working directory and environment the
# subprocess would get, stdout and stderr captured at the file descriptors (what C code writes too), Python's default
# warning filters with warnings printed to stderr (pytest would otherwise record them out of sight), and logging as
# it is in a process where nothing configured the root logger (pytest's capture handlers taken off it, so records go
# where a user sees them). Everything is restored afterwards.

PYTHON_DEFAULT_FILTERS = (  # warnings.filters of a fresh interpreter without -W or PYTHONWARNINGS (non-debug build)
    ("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""), ("ignore", ResourceWarning, ""))
ROOT_DEPENDENT_LOGGERS = ("lightning.pytorch", "lightning.fabric")
"""Loggers that Lightning gives their own stderr handler (and stops propagating) at import only when the root logger
has no handler, as in a fresh ``dlbench`` process; imported under pytest they propagate to pytest's handlers."""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python's own way of showing a warning, written to the stderr of the moment (the captured one)."""
    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


@contextmanager
def _default_warnings() -> Iterator[None]:
    with warnings.catch_warnings():  # also starts every 'show once per location' registry afresh
        warnings.resetwarnings()
        for action, category, module in PYTHON_DEFAULT_FILTERS:
            warnings.filterwarnings(action, category=category, module=module, append=True)
        warnings.showwarning = _show_warning
        yield


@contextmanager
def _fresh_logging() -> Iterator[None]:
    root = logging.getLogger()
    root_handlers, root_level = root.handlers[:], root.level
    swapped: list[tuple[logging.StreamHandler, object]] = []
    added: list[tuple[logging.Logger, logging.Handler, bool]] = []
    try:
        for handler in root_handlers:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        for logger in [v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)]:
            for handler in logger.handlers:
                if type(handler) is logging.StreamHandler:  # a library's console handler: to the captured stream
                    old = handler.stream
                    wants_out = old is sys.__stdout__ or getattr(old, "name", None) == "<stdout>"
                    swapped.append((handler, handler.setStream(sys.stdout if wants_out else sys.stderr)))
        for name in ROOT_DEPENDENT_LOGGERS:
            logger = logging.getLogger(name)
            if not any(type(h) is logging.StreamHandler for h in logger.handlers):
                handler = logging.StreamHandler(sys.stderr)
                logger.addHandler(handler)
                added.append((logger, handler, logger.propagate))
                logger.propagate = False
        yield
    finally:
        for logger, handler, propagate in added:
            logger.removeHandler(handler)
            if not logger.handlers:  # else Lightning was imported during the command and set the logger up itself
                logger.propagate = propagate
        for handler, old in swapped:
            handler.setStream(old)
        for handler in root_handlers:
            root.addHandler(handler)
        root.setLevel(root_level)


@contextmanager
def _captured_output() -> Iterator[Callable[[], tuple[str, str]]]:
    """stdout and stderr (Python's objects and file descriptors 1 and 2) into temporary files; yields a function that
    returns what was written to each, decoded as the parent of a subprocess would decode it."""
    encoding = locale.getpreferredencoding(False)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    with ExitStack() as stack:
        files = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(2)]
        saved = [os.dup(1), os.dup(2)]
        streams = [io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=encoding, errors=errors,
                                    write_through=True) for fd, errors in ((1, "strict"), (2, "backslashreplace"))]
        old_streams = sys.stdout, sys.stderr
        os.dup2(files[0].fileno(), 1)
        os.dup2(files[1].fileno(), 2)
        sys.stdout, sys.stderr = streams

        def read() -> tuple[str, str]:
            for s in streams:
                s.flush()
            texts = []
            for f in files:
                f.seek(0)
                texts.append(f.read().decode(encoding, errors="replace"))
            return texts[0], texts[1]

        try:
            yield read
        finally:
            for s in streams:
                s.flush()
            sys.stdout, sys.stderr = old_streams
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            # The two streams stay open: a handler made during the command (optuna's, on first use) may still hold
            # one; it writes to file descriptor 2 again, pytest's capture.


def run_in_process(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``run_dlbench`` without a new process: ``dlbench.cli.main(args)`` in the working folder ``cwd`` with the
    environment ``run_dlbench`` would give (``DLBENCH_LOG_DIR`` unset unless ``env`` sets it; a ``PYTHONPATH`` in
    ``env`` also goes on ``sys.path``, as the interpreter would put it). An exception escaping ``main`` is what
    ``python -m dlbench`` would show: its traceback on stderr and exit code 1; ``SystemExit`` gives its code.
    The returned object also lists what the command left behind in this process (``left_behind``): a signal handler
    it installed and did not restore (put back here), a non-daemon thread still alive 10 s after ``main`` returned (a
    ``dlbench`` process would wait for it before exiting). A command run here must leave nothing, or it belongs in a
    process of its own."""
    from dlbench.cli import main

    env = {"PYTHONUNBUFFERED": "1", **(env or {})}
    saved_env, saved_cwd, saved_path = dict(os.environ), os.getcwd(), sys.path[:]
    threads, handlers = set(threading.enumerate()), _signal_handlers()
    try:
        os.environ.pop("DLBENCH_LOG_DIR", None)
        os.environ.update(env)
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
        if extra:
            sys.path[:0] = extra
            importlib.invalidate_caches()
        os.chdir(cwd)
        with _captured_output() as read, _default_warnings(), _fresh_logging():
            try:
                code = main(list(args))
            except SystemExit as exit_:  # what `raise SystemExit(main())` in dlbench/__main__.py would end with
                code = exit_.code
                if code is not None and not isinstance(code, int):
                    print(code, file=sys.stderr)
                    code = 1
                code = code or 0
            except Exception:  # noqa: BLE001 - a user's traceback: the test sees it as one
                traceback.print_exc()
                code = 1
            out, err = read()
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
        changed = {s: (h, signal.getsignal(s)) for s, h in handlers.items() if signal.getsignal(s) != h}
        for signum, (handler, _) in changed.items():
            signal.signal(signum, handler)
    left_behind = [f"its {signal.Signals(s).name} handler {new!r} (now put back)" for s, (_, new) in changed.items()]
    gc.collect()  # what the command made and dropped (a trainer's checkpoint writer) lets its threads end
    deadline = time.monotonic() + 10
    left = [t for t in threading.enumerate() if t not in threads and t.is_alive() and not t.daemon]
    while left and time.monotonic() < deadline:
        left[0].join(deadline - time.monotonic())
        left = [t for t in left if t.is_alive()]
    result = subprocess.CompletedProcess(["dlbench", *args], code, out, err)
    result.left_behind = left_behind + [f"thread {t.name!r} running" for t in left]
    return result


def _signal_handlers() -> dict[int, object]:
    """The Python-level handler of every signal that has one (SIGKILL and SIGSTOP cannot)."""
    handlers = {}
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            handlers[signum] = signal.getsignal(signum)
        except (ValueError, OSError):
            continue
    return handlers


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

