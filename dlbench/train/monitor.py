"""Callbacks that log how a run trains, beside what it learns: speed, memory, learning rate, weight histograms.

All of them log once per epoch, never per step, and add no host synchronisation inside a training step: samples are
counted from tensor shapes (metadata, no device read), and on CUDA the clock waits for the device once per epoch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.nn.parameter import is_lazy

from dlbench.core.conventions import PARAMS_TAG
from dlbench.data.batches import Steps


def batch_size(batch: Any) -> int:
    """Samples in a batch, read from shapes only: the first tensor's first dimension (``(x, y)``, ``[x, ...]``,
    ``{"x": ...}``), a graph batch's ``num_graphs``; 0 when a batch says nothing about its size."""
    if isinstance(batch, Steps):  # several batches for one training_step call
        return sum(batch_size(b) for b in batch)
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    graphs = getattr(batch, "num_graphs", None)
    if isinstance(graphs, int):
        return graphs
    if isinstance(batch, Mapping):
        return batch_size(next(iter(batch.values()))) if batch else 0
    if isinstance(batch, (list, tuple)):
        return batch_size(batch[0]) if batch else 0
    return 0


def log_epoch_values(trainer: L.Trainer, pl_module: L.LightningModule, values: dict[str, float],
                     maximum: tuple[str, ...] = ()) -> None:
    """Log epoch-level values at the epoch's last step: on one process straight to the loggers, in one call
    (``self.log`` costs about a millisecond a value at each epoch end, for bookkeeping one process does not need);
    under DDP through ``self.log`` with ``sync_dist``, whose reduction across processes is the point there (the mean,
    or the largest for the names in ``maximum``)."""
    if not values:
        return
    if trainer.world_size == 1:
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
        return
    for name, value in values.items():
        pl_module.log(name, value, on_step=False, on_epoch=True, batch_size=1, sync_dist=True,
                      reduce_fx="max" if name in maximum else "mean")


def parameter_count(module: torch.nn.Module) -> int:
    """All parameters, trainable or frozen; lazy ones not yet materialised are not counted."""
    return sum(p.numel() for p in module.parameters() if not is_lazy(p))


class TrainingSpeed(Callback):
    """Logs ``train/epoch_seconds`` and ``train/samples_per_second`` at the end of every training epoch, and on CUDA
    ``train/peak_memory_mb`` (``torch.cuda.max_memory_allocated`` so far); logs the model's parameter count once as
    ``model/params`` when training starts from scratch.

    The epoch time counts training only: validation run inside the epoch is timed and left out. Samples are the
    summed first dimensions of the training batches times the number of processes (DDP shards the data evenly).
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._validation_start: float | None = None
        self._validation_seconds = 0.0
        self._samples = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:  # a resumed run logged it when it began
            for logger in trainer.loggers:
                logger.log_metrics({PARAMS_TAG: float(parameter_count(pl_module))}, step=0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples, self._validation_seconds, self._validation_start = 0, 0.0, None
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._samples += batch_size(batch)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and not trainer.sanity_checking:
            self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_start is not None:
            self._validation_seconds += time.perf_counter() - self._validation_start
            self._validation_start = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is None:
            return
        cuda = pl_module.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(pl_module.device)  # kernels still queued belong to this epoch
        seconds = max(time.perf_counter() - self._start - self._validation_seconds, 1e-9)
        self._start = None
        log = {"train/epoch_seconds": seconds}
        if self._samples:
            log["train/samples_per_second"] = self._samples * trainer.world_size / seconds
        if cuda:
            log["train/peak_memory_mb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        # Under DDP the epoch value is the mean over processes (the slowest-to-fastest spread averages out) and the
        # peak memory the largest process's.
        log_epoch_values(trainer, pl_module, log, maximum=("train/peak_memory_mb",))


class LearningRate(Callback):
    """Logs the learning rate each training epoch runs with as ``train/lr``; further parameter groups and
    optimizers (a GAN's discriminator) as ``train/lr_1``, ``train/lr_2``, ... in the order the model returns them.

    Lightning's LearningRateMonitor names the curve after the optimizer class (``lr-Adam``), which differs between
    plugins; one name lets TensorBoard overlay every run's schedule.
    """

    def __init__(self) -> None:
        self._rates: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rates = [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups]
        self._rates = {"train/lr" if i == 0 else f"train/lr_{i}": float(lr) for i, lr in enumerate(rates)}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rates:  # the rates the epoch ran with, logged at its end like every epoch value
            log_epoch_values(trainer, pl_module, self._rates)
            self._rates = {}


class WeightHistograms(Callback):
    """Writes a histogram of every parameter tensor to TensorBoard (``weights/<name>``, Histograms and
    Distributions tabs) every ``every_n_epochs`` training epochs.

    Off by default: each histogram copies the tensor to the host, which costs time and event-file space on large
    models.

    Args:
        every_n_epochs: Epochs between two sets of histograms; 1 writes one every epoch.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not writers:
            return
        for name, param in pl_module.named_parameters():
            if is_lazy(param) or param.numel() == 0:
                continue
            values = param.detach().float().cpu()
            for writer in writers:
                writer.add_histogram(f"weights/{name}", values, trainer.global_step)
