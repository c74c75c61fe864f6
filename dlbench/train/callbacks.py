"""Callbacks dlbench adds to every run."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from weakref import proxy

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

# The hooks Lightning calls on every callback for every batch. Lightning's dispatcher skips an attribute that is not
# callable, and enters a profiler context for each one that is: about 5 microseconds per callback per hook here, for
# the base class's empty method as much as for a real one.
PER_BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
                   "on_before_optimizer_step", "on_before_zero_grad", "on_validation_batch_start",
                   "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start",
                   "on_predict_batch_end")


def skip_inherited_batch_hooks(callbacks: list[Callback]) -> int:
    """Sets each per-batch hook that a callback only inherits (the base class's no-op) to ``None`` on that
    instance, so Lightning does not dispatch to it on every batch; hooks a callback defines are untouched. Returns
    how many were switched off. With the eleven callbacks of an mlp run, a training step's dispatch falls
    from about 198 to 57 microseconds."""
    skipped = 0
    for callback in callbacks:
        for hook in PER_BATCH_HOOKS:
            if getattr(type(callback), hook, None) is getattr(Callback, hook) and hook not in vars(callback):
                setattr(callback, hook, None)
                skipped += 1
    return skipped


class BestMetric(Callback):
    """Logs ``<monitor>_best``, the best value of the monitored metric so far, after every validation.

    TensorBoard's HParams dashboard shows the last value of each metric it lists; listing this one gives each run's
    best value there, next to the latest.
    """

    def __init__(self, monitor: str, mode: str = "min") -> None:
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None

    @property
    def name(self) -> str:
        return f"{self.monitor}_best"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.logger is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if math.isnan(value):
            return
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = value
        if trainer.is_global_zero:
            trainer.logger.log_metrics({self.name: self.best}, step=trainer.global_step)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best")


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` really holds the last epoch, written once per epoch.

    With ``save_last=True``, Lightning 2.6 rewrites ``last.ckpt`` only in steps where it also saved a top-k
    checkpoint, so after the best epoch "last" silently stops moving. This refreshes it at every epoch end.

    When the same step has just written a new best checkpoint, ``last.ckpt`` becomes a hard link to that file
    instead of a second serialisation and write of the same state (a real file, not a symlink: it stays whole when
    the best file is later replaced and deleted). Where hard links are refused (FAT/exFAT and some network file
    systems) it is written in full, as before. Before a full write over a ``last.ckpt`` that still shares its file
    with a best checkpoint, that name is unlinked first, so no checkpoint writer (atomic or not) can write through
    it into the best file.
    """

    resuming = False
    """Set by ``dlbench fit --resume``: the directory holds the run's own checkpoints, which it continues."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self._every_n_train_steps and self._train_time_interval is None:
            # Lightning's per-batch hook only checks these two intervals: with neither set it does nothing, so it
            # is not dispatched on every batch.
            self.on_train_batch_end = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            if self.resuming:  # a resume finds its own run's checkpoints there: nothing to warn of
                warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)

    def format_checkpoint_name(self, metrics: dict, filename: str | None = None, ver: int | None = None,
                               prefix: str | None = None) -> str:
        # ``{epoch}`` in a file name counts from 1, as the epoch lines and "epoch 3/3" do: best-epoch=3 is the third
        # epoch. (The checkpoint's own "epoch" field stays Lightning's 0-based counter; older names read the same.)
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)

    @property
    def state_key(self) -> str:
        # Lightning formats this key (a repr of five settings, ~3 us) on every hook call of every batch. dlbench sets
        # monitor, mode and the saving intervals when it makes the callback and never after, so it is formatted once;
        # code that changes them later must delete ``_cached_state_key``.
        key = self.__dict__.get("_cached_state_key")
        if key is None:
            key = self.__dict__["_cached_state_key"] = super().state_key
        return key

    def state_dict(self) -> dict:
        state = super().state_dict()
        # The best file may also become last.ckpt (see above): let it name last.ckpt already, as a run resumed from
        # it must keep writing last.ckpt rather than choose a new versioned name.
        if self.save_last is True and not state.get("last_model_path") and self.dirpath:
            last = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            if not os.path.exists(last):  # else Lightning's version counter picks another name: leave it to it
                state["last_model_path"] = last
        return state

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        saved = self._last_checkpoint_saved
        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        if (self.save_last is not True or self._last_global_step_saved != trainer.global_step or not saved
                or os.path.abspath(saved) == os.path.abspath(filepath) or self._enable_version_counter
                and self.file_exists(filepath, trainer) and filepath != self.last_model_path):
            self._write_last(trainer, monitor_candidates, filepath)
            return
        linked = True
        if trainer.is_global_zero:
            linked = hard_links_work(os.path.dirname(filepath))
        linked = trainer.strategy.broadcast(linked)
        if not linked:
            self._write_last(trainer, monitor_candidates, filepath)
            return
        if trainer.is_global_zero:  # after the best file's own write, which may still be queued
            in_order(trainer, _hard_link, saved, filepath)
        previous, self.last_model_path = self.last_model_path, filepath
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:  # as after any save: loggers that upload checkpoints see the new last.ckpt
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
        if previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        with queued(trainer):  # the write may go to the background; its file is in place before anything reads it
            super()._save_checkpoint(trainer, filepath)

    def _write_last(self, trainer: L.Trainer, monitor_candidates: dict, filepath: str) -> None:
        """Lightning's full write of last.ckpt, after cutting the name loose from a best file it may share."""
        if trainer.is_global_zero:
            in_order(trainer, _unlink_if_shared, filepath)
        trainer.strategy.barrier()
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        # _should_skip_saving_checkpoint is also true when this step was saved already (then last is current).
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def in_order(trainer: L.Trainer, operation, *args) -> None:
    """Run a file operation on checkpoints after the checkpoint writes queued before it (see
    :class:`dlbench.train.checkpoint_io.AtomicCheckpointIO`), or at once with another checkpoint IO."""
    io = trainer.strategy.checkpoint_io
    if hasattr(io, "run_in_order"):
        io.run_in_order(operation, *args)
    else:
        operation(*args)


def queued(trainer: L.Trainer):
    """A block whose checkpoint saves may be written in the background (see
    :meth:`dlbench.train.checkpoint_io.AtomicCheckpointIO.queued`); with another checkpoint IO, a plain block."""
    io = trainer.strategy.checkpoint_io
    return io.queued() if hasattr(io, "queued") else contextlib.nullcontext()


_LINKS_WORK: dict[str, bool] = {}


def hard_links_work(folder: str) -> bool:
    """Whether the file system of ``folder`` makes hard links (FAT/exFAT and some network file systems refuse);
    tried once a folder, with a file of its own."""
    folder = os.path.abspath(folder)
    if folder not in _LINKS_WORK:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".link-probe.{os.getpid()}")
        try:
            with open(probe, "wb"):
                pass
            os.link(probe, probe + ".2")
            _LINKS_WORK[folder] = True
        except OSError:
            _LINKS_WORK[folder] = False
        finally:
            for name in (probe, probe + ".2"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
    return _LINKS_WORK[folder]


def _hard_link(source: str, target: str) -> None:
    """Makes ``target`` another name of the file ``source``, atomically (a temporary link renamed into place)."""
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.link")  # hidden, like AtomicCheckpointIO's partial files
    try:
        os.link(source, tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):  # rename() of two names of one file leaves both in place
            os.unlink(tmp)


def _unlink_if_shared(path: str) -> None:
    """Cut ``path`` loose from a best file it shares (a hard link) before a full write over it, so that no
    checkpoint writer, atomic or not, can write through it into the best file."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_nlink > 1:
            os.unlink(path)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, epoch: int) -> None:
        super().__init__(f"loss became NaN or infinite at step {step} (epoch {epoch})")
        self.step, self.epoch = step, epoch


class DivergingLoss(NonFiniteLoss):
    """The training loss grew by orders of magnitude over its first values and stayed there (see
    :class:`FiniteLossGuard`). A :class:`NonFiniteLoss`, so whatever handles one handles both.

    ``step`` is the step at which the loss had been above ``threshold`` for ``run`` steps running (the first of them:
    ``first_step``), ``value`` the loss's magnitude there, ``reference`` the magnitude of the run's first losses it is
    compared with.
    """

    def __init__(self, step: int, epoch: int, reference: float, value: float, threshold: float, first_step: int,
                 run: int) -> None:
        RuntimeError.__init__(self, f"training loss diverged: it grew from {reference:.2g} (its first steps) to "
                                    f"{value:.2g} and stayed above {threshold:.2g} for {run} steps running (steps "
                                    f"{first_step}-{step}, epoch {epoch})")
        self.step, self.epoch, self.reference, self.value = step, epoch, reference, value
        self.threshold, self.first_step, self.run = threshold, first_step, run


class FiniteLossGuard(Callback):
    """Stops training when the loss turns NaN or infinite, or diverges, before a checkpoint of the broken weights is
    written.

    Each step only keeps a reference to the detached loss and its step number (no tensor operation, no host
    synchronisation); the kept losses are checked together, in one stacked operation, before every validation and at
    epoch end, which is before ModelCheckpoint saves, so the last good checkpoint stays the last one on disk. Every
    :attr:`FOLD` steps they are folded on the device into the first bad step and the current run of diverged steps,
    so long epochs keep few references. A check reads back one small tensor (one host synchronisation); until the
    reference below is known (the run's first fold or two), a fold also reads back its losses and holds the first
    ones, which are judged with the fold that completes the reference.

    A loss *diverges* when its magnitude stays above ``FACTOR * max(reference, FLOOR)`` for :attr:`RUN` steps running
    (a run may span folds, checks and epochs). ``reference`` is the median magnitude of the run's first :attr:`HEAD`
    finite losses: robust to one odd batch among them. Should that median itself be over ``FACTOR`` times the first
    loss (the loss of the initial weights; floored the same way), the run blew up within those steps and the first
    loss is the reference. ``FACTOR`` = 1000 is orders of magnitude: no training that learns, however noisy, keeps its
    loss there for :attr:`RUN` steps (a loss ten times its start does not stop a run), while an overflowing
    learning rate puts it there at once. ``FLOOR`` = 1e-3 keeps a loss that starts near zero (fine-tuning a fitted
    model, a nearly solved task) from stopping the run when it rises to an ordinary value: it stops only above 1.
    The reference is part of the checkpoint (plain floats), so a resumed run keeps comparing with its first steps.

    A ``training_step`` may return a loss tensor, a dict with ``"loss"`` or nothing (a GAN stepping its own
    optimisers: nothing to check). A 1-D tensor is the losses of ``trainer.steps_per_call`` steps, one each; with one
    step a call it is a loss per sample or element, whose mean is the step's loss (non-finite when any part is).
    """

    FOLD = 1024
    FACTOR = 1e3
    FLOOR = 1e-3
    RUN = 5
    HEAD = 5
    _NONE = torch.iinfo(torch.long).max

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._steps: list[int] = []
        self._first_bad: torch.Tensor | None = None
        self.reference: float | None = None
        """The loss magnitude divergence is measured from; ``None`` until :attr:`HEAD` finite losses were seen."""
        self._head: list[float] = []  # the first finite loss magnitudes, until the reference is known
        self._head_steps: list[int] = []  # and their steps
        self._run: torch.Tensor | int = 0  # steps running above the threshold at the end of the last fold
        self._run_start: torch.Tensor | int = 0  # the first step of that run
        self._diverged: torch.Tensor | None = None  # (step, first step of its run) where a run first reached RUN
        self._diverged_value: torch.Tensor | None = None

    @property
    def threshold(self) -> float | None:
        return None if self.reference is None else self.FACTOR * max(self.reference, self.FLOOR)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach()
        step = trainer.global_step
        if loss.dim():
            count = loss.shape[0] if loss.dim() == 1 else 0
            if getattr(trainer, "steps_per_call", 1) > 1 and 0 < count <= trainer.steps_per_call:
                self._losses.append(loss)  # the losses of this call's steps, which ended at ``step``
                self._steps.extend(range(step - count + 1, step + 1))
                if len(self._steps) >= self.FOLD:
                    self._fold()
                return
            # a loss per sample or element: its mean, non-finite when any of it is
            loss = loss.mean() if loss.is_floating_point() else loss.float().mean()
        self._losses.append(loss)
        self._steps.append(step)
        if len(self._steps) >= self.FOLD:
            self._fold()

    def _fold(self) -> None:
        if not self._losses:
            return
        losses = self._losses
        if len({loss.dtype for loss in losses}) > 1:  # e.g. a mixed-precision run's losses of two dtypes
            losses = [loss.float() for loss in losses]
        if any(loss.dim() for loss in losses):
            values = torch.cat([loss.reshape(-1) for loss in losses])
        else:
            values = torch.stack(losses)
        finite = torch.isfinite(values)
        step_numbers = self._steps
        steps = torch.tensor(step_numbers, dtype=torch.long).to(finite.device, non_blocking=True)
        first = torch.where(finite, self._NONE, steps).min()
        self._first_bad = first if self._first_bad is None else torch.minimum(self._first_bad, first)
        self._losses, self._steps = [], []
        magnitudes = values.abs()
        if magnitudes.dtype in (torch.float16, torch.bfloat16):  # the threshold may be beyond float16's range
            magnitudes = magnitudes.float()
        if self.reference is None:
            earlier, earlier_steps = self._head, self._head_steps
            self._learn_reference(magnitudes, step_numbers)
            if self.reference is None:
                return
            if earlier:  # the first losses of earlier folds, held back until now: judged with this fold's
                magnitudes = torch.cat([torch.tensor(earlier, dtype=magnitudes.dtype, device=magnitudes.device),
                                        magnitudes])
                steps = torch.cat([torch.tensor(earlier_steps, dtype=torch.long, device=steps.device), steps])
        self._track(magnitudes, steps)

    def _learn_reference(self, magnitudes: torch.Tensor, steps: list[int]) -> None:
        """Collects the first :attr:`HEAD` finite magnitudes and their steps (reads this fold's losses back: a run's
        first fold or two only) and sets :attr:`reference` once it has them."""
        wanted = self.HEAD - len(self._head)
        found = [(v, s) for v, s in zip(magnitudes.tolist(), steps, strict=True) if math.isfinite(v)][:wanted]
        head = self._head + [v for v, _ in found]
        if len(head) < self.HEAD:
            self._head, self._head_steps = head, self._head_steps + [s for _, s in found]
            return
        median, first = sorted(head)[len(head) // 2], head[0]
        self.reference = first if median > self.FACTOR * max(first, self.FLOOR) else median
        self._head, self._head_steps = [], []

    def _track(self, magnitudes: torch.Tensor, steps: torch.Tensor) -> None:
        """Carries the run of steps above the threshold through this fold, on the device, and keeps the first step
        where it reached :attr:`RUN`."""
        device = magnitudes.device
        over = magnitudes > self.threshold  # NaN is not over: it ends a run (and is a NonFiniteLoss of its own)
        index = torch.arange(len(over), device=device)
        last_below = torch.cummax(torch.where(over, -1, index), dim=0).values  # -1: none yet in this fold
        carried = torch.as_tensor(self._run, device=device)
        carried_start = torch.where(carried > 0, torch.as_tensor(self._run_start, device=device), steps[0])
        within = last_below >= 0
        run = torch.where(within, index - last_below, carried + index + 1)
        start = torch.where(within, steps[(last_below + 1).clamp(max=len(over) - 1)], carried_start)
        hit = run >= self.RUN
        at = hit.to(torch.uint8).argmax()  # the first step where the run reached RUN (0 when none did)
        found = torch.stack([torch.where(hit.any(), steps[at], self._NONE), start[at]])
        if self._diverged is None:
            self._diverged, self._diverged_value = found, magnitudes[at]
        else:  # an earlier fold's finding stands
            earlier = self._diverged[0] != self._NONE
            self._diverged = torch.where(earlier, self._diverged, found)
            self._diverged_value = torch.where(earlier, self._diverged_value, magnitudes[at])
        self._run, self._run_start = run[-1], start[-1]

    def _check(self, trainer: L.Trainer) -> None:
        self._fold()
        if self._first_bad is None and self._diverged is None:
            return
        none = torch.tensor(self._NONE, device=(self._first_bad if self._first_bad is not None else
                                                self._diverged).device)
        found = torch.stack([self._first_bad if self._first_bad is not None else none,
                             self._diverged[0] if self._diverged is not None else none])
        if trainer.world_size > 1:  # every process stops at the same check, or none does
            found = trainer.strategy.reduce(found, reduce_op="min")
        bad, diverged = found.tolist()  # the one host synchronisation of a check
        if diverged < bad:
            raise self._diverging(trainer, diverged)
        if bad != self._NONE:
            raise NonFiniteLoss(bad, trainer.current_epoch)

    def _diverging(self, trainer: L.Trainer, step: int) -> DivergingLoss:
        local = self._diverged is not None and int(self._diverged[0]) == step
        first, value = (int(self._diverged[1]), float(self._diverged_value)) if local else (step, math.nan)
        if trainer.world_size > 1:  # the process that saw it tells the others its numbers
            found = torch.tensor(first if local else -1, dtype=torch.long, device=trainer.strategy.root_device)
            first = int(trainer.strategy.reduce(found, reduce_op="max"))
            value = float(trainer.strategy.reduce(torch.tensor(value if local else -math.inf,
                                                               device=trainer.strategy.root_device), reduce_op="max"))
        return DivergingLoss(step, trainer.current_epoch, self.reference, value, self.threshold, first, self.RUN)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def state_dict(self) -> dict:
        # Plain numbers, so the checkpoint still loads with weights_only=True. Folding first reads the losses of the
        # steps since the last check into the run (a checkpoint written between checks, on Ctrl-C).
        self._fold()
        return {"reference": self.reference, "head": list(self._head), "head_steps": list(self._head_steps),
                "run": int(self._run), "run_start": int(self._run_start)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.reference = state_dict.get("reference")
        self._head = list(state_dict.get("head", []))
        self._head_steps = list(state_dict.get("head_steps", []))
        self._run, self._run_start = int(state_dict.get("run", 0)), int(state_dict.get("run_start", 0))


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class RunStatus(Callback):
    """Keeps ``status.json`` in the run directory: running, finished, interrupted or failed, with times and counts.

    ``dlbench compare`` reads it; a ``running`` run whose process is gone was killed. Written atomically (a
    temporary file renamed into place), by global rank zero only: when training starts, ends or stops, after the
    first epoch, and between those at an epoch's end when :attr:`EVERY_SECONDS` have passed since the last write
    (epochs of a small data set take a tenth of a second, and a write a millisecond or two of it).
    """

    FILE = "status.json"
    EVERY_SECONDS = 1.0

    def __init__(self) -> None:
        self.state: dict = {}
        self._start: float | None = None
        self._previous_seconds = 0.0
        self._directory: Path | None = None
        self._written = -math.inf

    def _write(self, trainer: L.Trainer, **fields) -> None:
        if not trainer.is_global_zero or trainer.logger is None or not trainer.logger.log_dir:
            return
        self.state.update(fields, epochs=trainer.current_epoch, steps=trainer.global_step, updated=time.time())
        self._written = time.monotonic()
        directory = Path(trainer.logger.log_dir)
        if directory != self._directory:
            directory.mkdir(parents=True, exist_ok=True)
            self._directory = directory
        _write_json_atomic(directory / self.FILE, self.state)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.time()
        self._previous_seconds = self.state.get("train_seconds", 0.0)  # from a checkpoint when resuming
        self._write(trainer, status="running", pid=os.getpid(), host=socket.gethostname(), started=self._start,
                    error=None, train_seconds=self._previous_seconds)

    def _elapsed(self) -> float:
        return self._previous_seconds + (time.time() - self._start if self._start is not None else 0.0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        first = trainer.current_epoch == 0  # the first epoch's time tells a reader how long epochs take
        if first or time.monotonic() - self._written >= self.EVERY_SECONDS:
            self._write(trainer, train_seconds=self._elapsed())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, status="finished", train_seconds=self._elapsed())

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        self._write(trainer, status="interrupted" if interrupted else "failed", train_seconds=self._elapsed(),
                    error=None if interrupted else f"{type(exception).__name__}: {exception}")

    def state_dict(self) -> dict:
        return {"train_seconds": self._elapsed()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.state["train_seconds"] = state_dict.get("train_seconds", 0.0)


class GracefulStop(Callback):
    """Ctrl-C or SIGTERM stops training after the current batch and writes ``last.ckpt`` there.

    Lightning already turns SIGTERM into a stop at the next batch boundary; the first Ctrl-C is routed the same way
    (a second one aborts at once). The checkpoint written on the way out holds the loops' progress and the batch
    position of dlbench's in-memory loaders, so ``dlbench fit --resume RUN_DIR`` continues exactly there.
    """

    def __init__(self) -> None:
        self._previous_handler = None
        self.checkpoint_path: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def first_interrupt(signum, frame) -> None:
            trainer._signal_connector.received_sigterm = True
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C aborts immediately
            print("\ndlbench: stopping after this batch and saving a checkpoint (Ctrl-C again to abort at once)",
                  file=sys.stderr)

        self._previous_handler = signal.signal(signal.SIGINT, first_interrupt)

    def _restore(self) -> None:
        if self._previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.save_last and checkpoint.dirpath:
            checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))
            self.checkpoint_path = checkpoint.last_model_path


class RngState(Callback):
    """Saves the random number generators' states in every checkpoint and restores them on resume, so a resumed
    run draws the same dropout masks and noise as one that never stopped."""

    def state_dict(self) -> dict:
        # Plain types and tensors only, so the checkpoint still loads with weights_only=True.
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        random.setstate(state_dict["python"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class CompileTimer(Callback):
    """Separates torch.compile's one-off cost from training time: the first training batch (which compiles) minus a
    typical later one, logged once as ``train/compile_seconds`` and printed."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if len(self.durations) < 4:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if len(self.durations) >= 4:
            return
        self.durations.append(time.perf_counter() - self._t0)
        if len(self.durations) == 4 or (len(self.durations) >= 2 and trainer.num_training_batches <= 2):
            later = sorted(self.durations[1:])[len(self.durations[1:]) // 2]
            seconds = max(self.durations[0] - later, 0.0)
            if trainer.logger is not None:
                trainer.logger.log_metrics({"train/compile_seconds": seconds}, step=trainer.global_step)
            if trainer.is_global_zero:
                print(f"dlbench: torch.compile took {seconds:.1f} s (first batch {self.durations[0]:.2f} s, "
                      f"then {later * 1000:.1f} ms a batch)", file=sys.stderr)
            self.durations.append(float("nan"))  # done: stop measuring
