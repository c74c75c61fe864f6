"""Several optimiser steps a ``training_step`` call: Lightning's per-batch cost paid once for K steps.

Lightning spends about 0.8 ms a training batch here on its own bookkeeping (some 70 hook calls, each in a profiler
context), which is most of a small model's step on the CPU. With ``--trainer.steps_per_call K`` (as Keras's
``steps_per_execution``) the training loader hands the model K consecutive batches at a time (``Steps``), and one
call of ``training_step`` takes K full optimiser steps over them: the plugin's own step on each batch, backward,
gradient clipping as the trainer asks, the optimiser, the step-interval learning-rate schedulers, the step counter.
Lightning's loop, its hooks and dlbench's callbacks run once a call.

The results are those of K=1: the same batches in the same order, the same number of optimiser steps, the same
``global_step`` and logging step, the same learning-rate schedule (epoch-interval and plateau schedulers step at the
epoch's end, after its validation, as Lightning steps them) and the same checkpoints. What counts calls, not steps:
the progress bar, ``limit_train_batches`` and an integer ``val_check_interval`` (in calls of K batches).

Needs a model with automatic optimisation, one optimiser, no gradient accumulation, and data batched by dlbench's
:class:`~dlbench.data.batches.TensorLoader` (in-memory data); anything else ends in a clear error before training.
Resume a run with the K it was started with (its config.yaml keeps it).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from dlbench.core.errors import DlbenchError
from dlbench.data.batches import Steps, TensorLoader


class StepsPerCall(Callback):
    """Makes every ``training_step`` call of the model take ``steps`` optimiser steps (see the module docstring)."""

    def __init__(self, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps}")
        self.steps = steps
        self.batches_per_epoch: int | None = None
        """Batches (not calls) in a training epoch, known once the training loader exists."""
        self._due_epoch = 0
        """The number of the epoch whose end the epoch-interval schedulers still have to step for; 0: none."""

    # --- before training: the loader groups batches, the model steps itself ---

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not pl_module.automatic_optimization:
            raise DlbenchError(f"--trainer.steps_per_call {self.steps} needs a model whose optimiser steps Lightning "
                               f"takes (automatic optimisation); {type(pl_module).__name__} steps its own optimisers. "
                               f"Leave steps_per_call at 1 for it.")
        if trainer.accumulate_grad_batches != 1:
            raise DlbenchError(f"--trainer.steps_per_call {self.steps} does not go with "
                               f"--trainer.accumulate_grad_batches {trainer.accumulate_grad_batches}: each batch "
                               f"is its own optimiser step. Use one of the two.")
        if trainer.world_size > 1:
            raise DlbenchError(f"--trainer.steps_per_call {self.steps} runs on one process: under DDP every step's "
                               f"gradients are averaged inside Lightning's own step. Leave it at 1 with "
                               f"{trainer.world_size} processes.")
        datamodule = trainer.datamodule
        if datamodule is None:
            raise DlbenchError("--trainer.steps_per_call needs the plugin's data module (its training loader groups "
                               "the batches).")
        self._group_loader(datamodule)
        for owner in (datamodule, pl_module):  # per-batch hooks of the data see one batch at a time, as with K=1
            for hook in ("on_before_batch_transfer", "on_after_batch_transfer"):
                _per_batch(owner, hook)

    def _group_loader(self, datamodule: L.LightningDataModule) -> None:
        make = datamodule.train_dataloader

        def train_dataloader():
            loader = make()
            if not isinstance(loader, TensorLoader):
                raise DlbenchError(f"--trainer.steps_per_call needs in-memory data batched by dlbench's TensorLoader; "
                                   f"{type(datamodule).__name__} trains from a {type(loader).__name__}. Leave "
                                   f"steps_per_call at 1 for this data (or set DLBENCH_DATA_PATH=device).")
            loader.steps_per_call = self.steps
            self.batches_per_epoch = loader.batches
            return loader

        datamodule.train_dataloader = train_dataloader

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise DlbenchError(f"--trainer.steps_per_call needs one optimiser; {type(pl_module).__name__} has "
                               f"{len(trainer.optimizers)}. Leave steps_per_call at 1 for it.")
        # Only now, after configure_optimizers: Lightning read the schedulers (interval, monitor, plateau) as for
        # automatic optimisation, which this class then steps as Lightning would have.
        pl_module.automatic_optimization = False
        pl_module.training_step = self._training_step(trainer, pl_module, pl_module.training_step)

    # --- a call: K optimiser steps ---

    def _training_step(self, trainer: L.Trainer, pl_module: L.LightningModule, step):
        epoch_loop = trainer.fit_loop.epoch_loop
        counter = epoch_loop.manual_optimization.optim_step_progress
        scaler = getattr(trainer.precision_plugin, "scaler", None)

        def training_step(batch: Any, batch_idx: int, *args: Any, **kwargs: Any):
            group = batch if isinstance(batch, Steps) else [batch]
            optimizer = trainer.optimizers[0]
            losses = []
            for j, one in enumerate(group):
                if 0 < trainer.max_steps <= trainer.global_step:
                    break
                index = batch_idx * self.steps + j  # the batch's index in the epoch, as K=1 numbers it
                out = step(one, index, *args, **kwargs)
                loss = out["loss"] if isinstance(out, dict) else out
                (scaler.scale(loss) if scaler is not None else loss).backward()
                if trainer.gradient_clip_val:
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    pl_module.clip_gradients(optimizer, gradient_clip_val=trainer.gradient_clip_val,
                                             gradient_clip_algorithm=trainer.gradient_clip_algorithm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad()
                counter.increment_ready()
                counter.increment_completed()
                self._step_schedulers(trainer, pl_module, "step", index + 1)
                losses.append(loss.detach())
            # Lightning counts one stepped batch for the call; the logging step must count every step, as with K=1.
            epoch_loop._batches_that_stepped += max(len(losses) - 1, 0)
            return torch.stack(losses) if losses else None

        return training_step

    # Lightning steps epoch-interval schedulers, plateau ones included, after every on_train_epoch_end hook, the
    # checkpoint callback's too (it runs last): so here they step at the next epoch's start, or when training ends.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._due_epoch = trainer.current_epoch + 1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer, pl_module)

    def _flush(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due_epoch:
            self._step_schedulers(trainer, pl_module, "epoch", self._due_epoch)
            self._due_epoch = 0

    def state_dict(self) -> dict:
        return {"due_epoch": self._due_epoch}  # a checkpoint of an epoch's end is written before its step

    def load_state_dict(self, state_dict: dict) -> None:
        self._due_epoch = int(state_dict.get("due_epoch", 0))

    @staticmethod
    def _step_schedulers(trainer: L.Trainer, pl_module: L.LightningModule, interval: str, count: int) -> None:
        for config in trainer.lr_scheduler_configs:
            if config.interval != interval or count % config.frequency:
                continue
            metric = None
            if config.reduce_on_plateau:
                metric = trainer.callback_metrics.get(config.monitor)
                if metric is None:
                    if config.strict:
                        raise DlbenchError(f"the learning-rate scheduler monitors {config.monitor!r}, which the model "
                                           f"did not log before it was due to step.")
                    continue
            pl_module.lr_scheduler_step(config.scheduler, metric)


def _per_batch(owner: Any, hook: str) -> None:
    """Make ``owner.hook(batch, dataloader_idx)`` take a :class:`Steps` apart and run on each batch of it."""
    original = getattr(owner, hook, None)
    if original is None:
        return

    def each(batch: Any, dataloader_idx: int = 0):
        if isinstance(batch, Steps):
            return Steps(original(b, dataloader_idx) for b in batch)
        return original(batch, dataloader_idx)

    setattr(owner, hook, each)
