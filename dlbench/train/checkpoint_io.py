"""Checkpoint files that are whole or absent, written off the training thread.

Every checkpoint goes to a temporary file beside its target, is flushed to disk and renamed into place: a crash or a
``kill -9`` during the write leaves the previous file (e.g. ``last.ckpt``) untouched and no partial file a later run
could load. By default the write happens on one background thread: the training thread only takes a snapshot of the
checkpoint's tensors (a copy, so training can go on changing the originals) and queues the file work, which was most
of a small model's per-epoch checkpoint cost (serialising ~30 small tensors and an fsync: ~10 ms of a 60-170 ms
epoch of the default data sets).

Only the saves made inside :meth:`AtomicCheckpointIO.queued` go to the queue (dlbench's checkpoint callback makes
its saves there); any other save, such as a user's ``trainer.save_checkpoint(path)``, keeps Lightning's contract and
returns once its file is in place. One worker runs every file operation in the order it was asked for (writes,
removals of old best files, the hard link that makes ``last.ckpt``), so the files on disk are always a state the run
went through; anything that reads a checkpoint back through Lightning waits for the queue first, and so does the end
of every fit, validate or test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


def snapshot(value: Any) -> Any:
    """``value`` with every tensor in it copied (dicts, lists and tuples rebuilt around the copies, everything else
    shared): what a checkpoint holds at this moment, safe to serialise on another thread while training changes the
    originals. A CUDA tensor comes to host memory here, in order with the kernels that wrote it.

    Written out rather than with ``apply_to_collection``, whose generality cost 3.5 ms on an mlp's checkpoint."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True) if value.device.type != "cpu" else value.detach().clone()
    if isinstance(value, dict):
        copied = {k: snapshot(v) for k, v in value.items()}
        return copied if type(value) is dict else type(value)(copied)
    if isinstance(value, list):
        return [snapshot(v) for v in value]
    if type(value) is tuple:
        return tuple(snapshot(v) for v in value)
    return value


class CheckpointWriteError(RuntimeError):
    """A background checkpoint write failed; raised on the training thread at the next checkpoint operation."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Atomic checkpoint files (temporary file, fsync, rename), written in the background unless ``background`` is
    false. See the module docstring."""

    def __init__(self, background: bool = True) -> None:
        super().__init__()
        self.background = background
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._error: BaseException | None = None
        self._queueing = 0

    # --- the queue ---

    def run_in_order(self, operation: Callable[..., Any], *args: Any) -> None:
        """Run a file operation after every one queued before it (at once when not in the background)."""
        self._raise_failed()
        if not self.background:
            operation(*args)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlbench-checkpoint")
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._executor.submit(self._guarded, operation, *args))

    def _guarded(self, operation: Callable[..., Any], *args: Any) -> None:
        try:
            operation(*args)
        except BaseException as err:  # kept for the training thread, which raises it
            self._error = self._error or err

    def _raise_failed(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointWriteError(f"writing a checkpoint failed: {type(err).__name__}: {err}") from err

    @contextmanager
    def queued(self) -> Iterator[None]:
        """Saves made inside this block go to the background queue (when ``background``); outside it a save waits for
        the queue and writes its file before it returns."""
        self._queueing += 1
        try:
            yield
        finally:
            self._queueing -= 1

    def wait(self) -> None:
        """Block until every queued file operation is done; raise the first that failed."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()
        self._raise_failed()

    # --- CheckpointIO ---

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if self.background and self._queueing:
            self.run_in_order(self._write, snapshot(checkpoint), Path(path), storage_options)
            return
        self.wait()  # after the writes queued before it, as a reader of this file will expect
        self._write(checkpoint, Path(path), storage_options)

    def _write(self, checkpoint: dict[str, Any], path: Path, storage_options: Any) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        self.run_in_order(super().remove_checkpoint, path)

    def load_checkpoint(self, path: str | os.PathLike, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.wait()  # the file asked for may still be in the queue
        return super().load_checkpoint(path, *args, **kwargs)

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
