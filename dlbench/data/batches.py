"""Batching of in-memory tensors on the training device.

For data that fits in memory, a DataLoader costs a worker hand-off, per-sample indexing and a collate for every
batch. :class:`TensorLoader` instead keeps the whole dataset as tensors on the training device (moved once) and
yields batches by indexing with one random permutation per epoch.

:func:`tensor_loader` picks the path. On CPU the tensors are already where training happens, so it is always a
:class:`TensorLoader`. On a GPU it is one only when the tensors fit in a fraction (:data:`DEVICE_BUDGET`) of the
device's free memory; larger data stays in host memory and is served by a ``DataLoader`` over a ``TensorDataset``
with pinned memory and two worker processes. The environment variable ``DLBENCH_DATA_PATH`` overrides the choice:
``auto`` (the default), ``device`` (always a TensorLoader) or ``dataloader`` (always a DataLoader), e.g.
``DLBENCH_DATA_PATH=dataloader dlbench fit --model cnn`` to compare the two.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, TensorDataset

from dlbench.core.errors import DlbenchError

PATH_ENV = "DLBENCH_DATA_PATH"
PATHS = ("auto", "device", "dataloader")
DEVICE_BUDGET = 0.25
"""Fraction of a GPU's free memory one loader's tensors may take and still be moved there: a datamodule makes three
loaders (train, validation, test), and the model's activations need the rest."""
LOADER_WORKERS = 2


class Steps(list):
    """Several consecutive batches handed to a model's ``training_step`` in one call, one optimiser step each (see
    :class:`dlbench.train.steps.StepsPerCall`)."""


class TensorLoader:
    """An iterable of batches ``(t1[idx], t2[idx], ...)`` over tensors that share their first dimension.

    With ``steps_per_call`` K above 1 it yields :class:`Steps` of K consecutive batches instead (the last one of an
    epoch may hold fewer): the same batches in the same order, K to an item.

    Under a distributed strategy each rank reads its own shard; as with ``DistributedSampler``, the index list is
    padded by wrapping around so that every rank sees the same number of batches (a rank that ran out early would
    leave the others waiting in an all-reduce).
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 device: torch.device | str | None = None, rank: int = 0, world_size: int = 1,
                 seed: int | None = None, trainer=None) -> None:
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = torch.device(device) if device is not None else None
        self.rank, self.world_size = rank, world_size
        self.seed = torch.initial_seed() if seed is None else seed
        self.trainer = trainer
        self.epoch = 0
        self.steps_per_call = 1
        self._restored = False

    @property
    def _per_rank(self) -> int:
        return math.ceil(len(self.tensors[0]) / self.world_size)

    @property
    def batches(self) -> int:
        """Batches an epoch (on this rank)."""
        per_rank = self._per_rank
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.batches / self.steps_per_call)

    def _indices(self, epoch: int) -> torch.Tensor:
        n = len(self.tensors[0])
        if self.shuffle:
            g = torch.Generator().manual_seed((self.seed + epoch) % 2**63)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            total = self._per_rank * self.world_size
            order = torch.cat([order, order[: total - n]]) if total > n else order
            order = order[self.rank : total : self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.device is not None and self.tensors[0].device != self.device:
            self.tensors = tuple(t.to(self.device, non_blocking=True) for t in self.tensors)
        # Under a trainer the permutation is a function of (seed, trainer epoch), so a resumed process shuffles
        # exactly as the one that stopped.
        epoch = self.trainer.current_epoch if self.trainer is not None else self.epoch
        order = self._indices(epoch).to(self.tensors[0].device)
        self.epoch += 1
        skip = 0
        if self._restored and self.trainer is not None:
            # Resuming mid-epoch: skip the batches the stopped run had trained on in this epoch (Lightning counts
            # the items it was handed, K batches each).
            skip = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed * self.steps_per_call
        self._restored = False
        batches = (tuple(t[order[start : start + self.batch_size]] for t in self.tensors)
                   for start in range(skip * self.batch_size, self.batches * self.batch_size, self.batch_size))
        if self.steps_per_call == 1:
            yield from batches
            return
        group = Steps()
        for batch in batches:
            group.append(batch)
            if len(group) == self.steps_per_call:
                yield group
                group = Steps()
        if group:
            yield group

    # With these two methods Lightning treats the loader as resumable: it restores the checkpoint's loop progress
    # and leaves skipping the already-trained batches of a stopped epoch to the loader (see __iter__).
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._restored = True


def _nbytes_to_move(tensors: tuple[torch.Tensor, ...], device: torch.device) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t.device != device)


def data_path(tensors: tuple[torch.Tensor, ...], device: torch.device) -> str:
    """``"device"`` (batch on the device with a :class:`TensorLoader`) or ``"dataloader"``, as ``DLBENCH_DATA_PATH``
    asks, or, for ``auto``, by whether the tensors fit in :data:`DEVICE_BUDGET` of the device's free memory."""
    requested = os.environ.get(PATH_ENV, "auto").strip().lower() or "auto"
    if requested not in PATHS:
        raise DlbenchError(f"{PATH_ENV}={requested!r} is not a data path; use one of {', '.join(PATHS)} (auto: keep "
                           f"the data on the device when it fits).")
    if requested != "auto":
        return requested
    if device.type != "cuda":  # CPU: the data is where training happens; other accelerators: no free-memory query
        return "device"
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if _nbytes_to_move(tensors, device) <= DEVICE_BUDGET * free else "dataloader"


def _dataloader(tensors: tuple[torch.Tensor, ...], batch_size: int, shuffle: bool, drop_last: bool,
                device: torch.device) -> DataLoader:
    # Under a distributed strategy Lightning replaces the sampler with a DistributedSampler (one shard a rank).
    return DataLoader(TensorDataset(*(t.cpu() for t in tensors)), batch_size=batch_size, shuffle=shuffle,
                      drop_last=drop_last, num_workers=LOADER_WORKERS, persistent_workers=True,
                      pin_memory=device.type == "cuda")


def tensor_loader(datamodule, *tensors: torch.Tensor, batch_size: int, shuffle: bool = False,
                  drop_last: bool = False) -> TensorLoader | DataLoader:
    """Batches of ``tensors`` for ``datamodule``'s trainer: a :class:`TensorLoader` on the trainer's device and shard
    when the data fits there, else a ``DataLoader`` from host memory (see the module docstring and
    ``DLBENCH_DATA_PATH``). Without a trainer: a TensorLoader on the tensors' device, one shard."""
    trainer = getattr(datamodule, "_trainer", None) or getattr(datamodule, "trainer", None)
    device = trainer.strategy.root_device if trainer is not None else tensors[0].device if tensors else None
    if device is not None and data_path(tensors, device) == "dataloader":
        return _dataloader(tensors, batch_size, shuffle, drop_last, device)
    if trainer is None:
        return TensorLoader(*tensors, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
    return TensorLoader(*tensors, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                        device=trainer.strategy.root_device, rank=trainer.global_rank, world_size=trainer.world_size,
                        trainer=trainer)


def in_trainer_precision(datamodule, data):
    """``data`` with its floating tensors in the trainer's precision under ``bf16-true``, ``16-true`` or
    ``64-true``; returned unchanged under ``32-true`` or a mixed precision, or without a trainer.

    Lightning converts a batch to that precision before moving it to the device; a datamodule that makes new
    floating tensors after the move (uint8 images normalised on the device) calls this on them."""
    trainer = getattr(datamodule, "_trainer", None) or getattr(datamodule, "trainer", None)
    return data if trainer is None else trainer.precision_plugin.convert_input(data)
