"""Batching in-memory tensors: every sample once an epoch, reproducible shuffles, equal DDP shards, and the automatic
choice between batching on the device and a DataLoader (overridable with DLBENCH_DATA_PATH)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from dlbench.core.errors import DlbenchError
from dlbench.data import batches
from dlbench.data.batches import PATH_ENV, TensorLoader, data_path, tensor_loader


def _ids(loader) -> list[int]:
    return [i for batch in loader for i in batch[0].tolist()]


def _datamodule(device: str = "cpu", rank: int = 0, world_size: int = 1) -> SimpleNamespace:
    strategy = SimpleNamespace(root_device=torch.device(device))
    trainer = SimpleNamespace(strategy=strategy, global_rank=rank, world_size=world_size, current_epoch=0)
    return SimpleNamespace(trainer=trainer)


@pytest.mark.parametrize("n", [1, 37, 64])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_comes_exactly_once_an_epoch_with_its_own_label(n, shuffle):
    x, y = torch.arange(n), torch.arange(n) * 10
    loader = TensorLoader(x, y, batch_size=8, shuffle=shuffle, seed=3)
    for _ in range(2):
        batches_ = list(loader)
        assert len(batches_) == len(loader) == -(-n // 8)
        assert all(len(b[0]) == 8 for b in batches_[:-1])
        assert sorted(_ids(batches_)) == list(range(n))
        assert all(torch.equal(bx * 10, by) for bx, by in batches_)  # rows of all tensors stay together


def test_shuffles_differ_between_epochs_and_repeat_for_the_same_seed():
    x = torch.arange(100)
    first, second = TensorLoader(x, batch_size=10, shuffle=True, seed=7), TensorLoader(x, batch_size=10, shuffle=True,
                                                                                        seed=7)
    epochs_a = [_ids(first) for _ in range(3)]
    epochs_b = [_ids(second) for _ in range(3)]
    assert epochs_a == epochs_b
    assert epochs_a[0] != epochs_a[1] != epochs_a[2]
    assert _ids(TensorLoader(x, batch_size=10, shuffle=True, seed=8)) != epochs_a[0]


def test_without_shuffle_the_order_is_the_data_order():
    assert _ids(TensorLoader(torch.arange(23), batch_size=5)) == list(range(23))


@pytest.mark.parametrize(("n", "world_size", "batch_size"), [(100, 2, 8), (37, 2, 5), (37, 3, 4), (5, 4, 1)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_ddp_shards_partition_the_data_with_equal_batch_counts(n, world_size, batch_size, shuffle):
    x = torch.arange(n)
    shards = [_ids(TensorLoader(x, batch_size=batch_size, shuffle=shuffle, seed=1, rank=r, world_size=world_size))
              for r in range(world_size)]
    lengths = {len(TensorLoader(x, batch_size=batch_size, rank=r, world_size=world_size)) for r in range(world_size)}
    per_rank = -(-n // world_size)
    assert lengths == {-(-per_rank // batch_size)}  # no rank waits in an all-reduce the others never reach
    assert all(len(s) == per_rank for s in shards)
    everything = [i for s in shards for i in s]
    assert set(everything) == set(range(n))
    assert len(everything) - n == per_rank * world_size - n  # only the wrap-around padding repeats


def test_ddp_shards_agree_on_one_permutation_per_epoch():
    x = torch.arange(40)
    loaders = [TensorLoader(x, batch_size=4, shuffle=True, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(2):  # two epochs: the ranks shuffle alike, so their shards stay disjoint
        first, second = _ids(loaders[0]), _ids(loaders[1])
        assert not set(first) & set(second) and len(first) + len(second) == 40


@pytest.mark.parametrize(("n", "world_size"), [(37, 1), (37, 2), (40, 1)])
def test_drop_last_yields_only_full_batches(n, world_size):
    loaders = [TensorLoader(torch.arange(n), batch_size=8, drop_last=True, rank=r, world_size=world_size)
               for r in range(world_size)]
    for loader in loaders:
        sizes = [len(b[0]) for b in loader]
        assert sizes == [8] * len(loader) and len(loader) == -(-n // world_size) // 8


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TensorLoader(torch.arange(3), batch_size=0)
    with pytest.raises(ValueError, match="differ in length"):
        TensorLoader(torch.arange(3), torch.arange(4), batch_size=1)


def test_on_cpu_auto_keeps_the_data_on_the_device_and_shards_by_the_trainer(monkeypatch):
    monkeypatch.delenv(PATH_ENV, raising=False)
    loader = tensor_loader(_datamodule(rank=1, world_size=2), torch.arange(10), batch_size=2)
    assert isinstance(loader, TensorLoader) and (loader.rank, loader.world_size) == (1, 2)
    assert _ids(loader) == [1, 3, 5, 7, 9]


@pytest.mark.parametrize("trainer", [True, False])
def test_the_override_picks_a_dataloader_with_the_same_length_and_samples(monkeypatch, trainer):
    monkeypatch.setenv(PATH_ENV, "dataloader")
    x, y = torch.arange(37), torch.arange(37) * 2
    datamodule = _datamodule() if trainer else SimpleNamespace()
    for shuffle, drop_last in [(True, False), (False, True)]:
        loader = tensor_loader(datamodule, x, y, batch_size=8, shuffle=shuffle, drop_last=drop_last)
        assert isinstance(loader, DataLoader) and loader.num_workers == batches.LOADER_WORKERS
        assert not loader.pin_memory  # pinning is for copies to a GPU only
        reference = TensorLoader(x, y, batch_size=8, shuffle=shuffle, drop_last=drop_last)
        assert len(loader) == len(reference)
        got = list(loader)
        assert all(torch.equal(bx * 2, by) for bx, by in got)
        assert sorted(_ids(got)) == sorted(_ids(reference))


def test_device_override_and_bad_values(monkeypatch):
    monkeypatch.setenv(PATH_ENV, "device")
    assert isinstance(tensor_loader(_datamodule(), torch.arange(4), batch_size=2), TensorLoader)
    monkeypatch.setenv(PATH_ENV, "gpu")
    with pytest.raises(DlbenchError, match="DLBENCH_DATA_PATH='gpu'.*auto, device, dataloader"):
        tensor_loader(_datamodule(), torch.arange(4), batch_size=2)


@pytest.mark.parametrize(("free_bytes", "expected"), [(10**9, "device"), (4 * 400 * 8 - 1, "dataloader")])
def test_on_a_gpu_auto_moves_the_data_only_when_it_fits_the_budget(monkeypatch, free_bytes, expected):
    """400 int64 values are 3,200 bytes: they go to the GPU when a quarter of its free memory holds them."""
    monkeypatch.delenv(PATH_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_bytes, 2 * free_bytes))
    tensors = (torch.arange(400),)
    assert data_path(tensors, torch.device("cuda", 0)) == expected
    loader = tensor_loader(_datamodule("cuda"), *tensors, batch_size=16, shuffle=True)
    assert isinstance(loader, TensorLoader if expected == "device" else DataLoader)
    if expected == "dataloader":
        assert loader.pin_memory  # host-to-GPU copies from pinned memory can overlap with compute


def test_a_real_fit_on_the_dataloader_path_trains(monkeypatch, tmp_path):
    """The override through a whole ``fit``: Lightning takes the DataLoader as it comes, and training works."""
    from dlbench.testing import QUIET, build

    monkeypatch.setenv(PATH_ENV, "dataloader")
    model, datamodule, trainer = build("lstm", "--model.hidden_size", "4", "--trainer.max_epochs", "1",
                                       "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
                                       "--test_after_fit", "false", *QUIET, log_dir=tmp_path)
    before = model.head.weight.detach().clone()
    trainer.fit(model, datamodule=datamodule)
    assert isinstance(trainer.train_dataloader, DataLoader)
    assert trainer.global_step == 3 and not torch.equal(before, model.head.weight)
