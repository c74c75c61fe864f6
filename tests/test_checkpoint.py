"""dlbench's Checkpoint: ``last.ckpt`` always holds the final epoch, and is a hard link to the best file (one write,
not two) when the final epoch is also the best."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.demos.boring_classes import BoringModel

from dlbench.train.callbacks import Checkpoint


class Scripted(BoringModel):
    """Logs ``val/score`` from a script, one value an epoch."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores

    def on_validation_epoch_end(self) -> None:
        self.log("val/score", self.scores[self.current_epoch])


class InPlaceIO(TorchCheckpointIO):
    """A checkpoint writer that opens the target path itself (no temporary file and rename), as a plain
    ``torch.save`` does: it writes into whatever file that name already points at."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(checkpoint, path)


def _fit(tmp_path, scores, ckpt_path=None, epochs=None, plugins=None):
    callback = Checkpoint(dirpath=tmp_path / "checkpoints", filename="best-{epoch}", monitor="val/score", mode="min",
                          save_last=True)
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=epochs or len(scores), limit_train_batches=2,
                        limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback], plugins=plugins)
    trainer.fit(Scripted(scores), ckpt_path=ckpt_path)
    return callback


def _epoch(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["epoch"]


@pytest.mark.parametrize(("scores", "best_epoch", "linked"), [
    ([3.0, 2.0, 1.0], 2, True),   # the final epoch is the best: last.ckpt is the best file under a second name
    ([3.0, 1.0, 2.0], 1, False),  # it is not: last.ckpt is its own, newer file
])
def test_last_holds_the_final_epoch_and_shares_the_file_only_with_a_best_of_the_same_step(tmp_path, scores,
                                                                                          best_epoch, linked):
    callback = _fit(tmp_path, scores)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"best-epoch={best_epoch + 1}.ckpt", "last.ckpt"])
    last, best = folder / "last.ckpt", folder / f"best-epoch={best_epoch + 1}.ckpt"
    assert not last.is_symlink()
    assert _epoch(last) == 2 and _epoch(best) == best_epoch
    assert os.path.samefile(last, best) == linked
    assert callback.last_model_path == str(last)


def test_a_full_write_of_last_never_writes_through_into_the_best_file_it_shared(tmp_path):
    _fit(tmp_path, [3.0, 1.0, 2.0], plugins=[InPlaceIO()])  # epoch 1: best, last linked; epoch 2: last written
    folder = tmp_path / "checkpoints"
    assert _epoch(folder / "best-epoch=2.ckpt") == 1 and _epoch(folder / "last.ckpt") == 2
    assert not os.path.samefile(folder / "last.ckpt", folder / "best-epoch=2.ckpt")


def test_a_run_resumed_from_a_linked_last_keeps_writing_last_ckpt(tmp_path):
    _fit(tmp_path, [3.0, 2.0, 1.0, 0.5], epochs=1)  # one epoch: its best file is also last.ckpt
    folder = tmp_path / "checkpoints"
    assert os.path.samefile(folder / "last.ckpt", folder / "best-epoch=1.ckpt")
    callback = _fit(tmp_path, [3.0, 2.0, 1.0, 0.5, 4.0], ckpt_path=folder / "last.ckpt")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["best-epoch=4.ckpt", "last.ckpt"], names  # no last-v1.ckpt, the old best removed
    last = folder / "last.ckpt"
    assert _epoch(last) == 4 and not os.path.samefile(last, folder / "best-epoch=4.ckpt")
    assert callback.best_model_path.endswith("best-epoch=4.ckpt")


def test_where_hard_links_are_refused_last_is_written_in_full(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("hard links not supported here")

    monkeypatch.setattr(os, "link", refuse)
    _fit(tmp_path, [3.0, 2.0])
    folder = tmp_path / "checkpoints"
    last = folder / "last.ckpt"
    assert _epoch(last) == 1 and not os.path.samefile(last, folder / "best-epoch=2.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch=2.ckpt", "last.ckpt"]


def test_inherited_per_batch_hooks_are_not_dispatched_and_defined_ones_still_run(tmp_path):
    from lightning.pytorch.callbacks import Callback

    from dlbench.train.callbacks import FiniteLossGuard, skip_inherited_batch_hooks

    class Counting(Callback):
        calls = 0

        def on_train_batch_end(self, *args, **kwargs):
            Counting.calls += 1

    guard, counting, plain = FiniteLossGuard(), Counting(), Callback()
    skipped = skip_inherited_batch_hooks([guard, counting, plain])
    assert plain.on_before_zero_grad is None and guard.on_before_backward is None
    assert callable(guard.on_train_batch_end) and callable(counting.on_train_batch_end)  # defined: kept
    assert skipped == 12 + 11 + 11
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[guard, counting, plain])
    trainer.fit(BoringModel())  # Lightning's dispatcher passes over the None attributes
    assert Counting.calls == 3


# --- AtomicCheckpointIO: files written on a background thread, in order ---

@pytest.mark.parametrize(("scores", "best_epoch", "linked"), [([3.0, 2.0, 1.0], 2, True), ([3.0, 1.0, 2.0], 1, False)])
def test_background_writes_leave_the_same_files_as_writes_in_place(tmp_path, scores, best_epoch, linked):
    from dlbench.train.checkpoint_io import AtomicCheckpointIO

    _fit(tmp_path, scores, plugins=[AtomicCheckpointIO(background=True)])
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"best-epoch={best_epoch + 1}.ckpt", "last.ckpt"])
    last, best = folder / "last.ckpt", folder / f"best-epoch={best_epoch + 1}.ckpt"
    assert _epoch(last) == 2 and _epoch(best) == best_epoch
    assert os.path.samefile(last, best) == linked


def test_a_background_write_holds_the_tensors_as_they_were_when_it_was_asked_for(tmp_path):
    from dlbench.train.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO(background=True)
    weights = torch.zeros(1000)
    state = {"state_dict": {"w": weights}, "nested": [{"m": weights}], "epoch": 3}
    for value in range(1, 6):  # training goes on changing the tensors while earlier writes are queued
        with io.queued():
            io.save_checkpoint(state, tmp_path / f"c{value}.ckpt")
        weights.fill_(value)
    io.teardown()
    for value in range(1, 6):
        saved = torch.load(tmp_path / f"c{value}.ckpt", weights_only=True)
        assert torch.equal(saved["state_dict"]["w"], torch.full((1000,), float(value - 1)))
        assert torch.equal(saved["nested"][0]["m"], saved["state_dict"]["w"]) and saved["epoch"] == 3
    assert not list(tmp_path.glob(".*partial"))


def test_the_callback_saves_in_the_background_and_a_save_asked_for_by_hand_is_in_place_when_it_returns(
        tmp_path, monkeypatch):
    import threading
    import time

    from dlbench.train import checkpoint_io

    writers: dict[str, str] = {}
    write = checkpoint_io.TorchCheckpointIO.save_checkpoint

    def slow_write(self, checkpoint, path, storage_options=None):
        time.sleep(0.2)  # a large model's file: a reader that did not wait would find nothing
        writers[Path(path).name.split(".ckpt")[0].lstrip(".")] = threading.current_thread().name
        write(self, checkpoint, path, storage_options)

    monkeypatch.setattr(checkpoint_io.TorchCheckpointIO, "save_checkpoint", slow_write)
    callback = Checkpoint(dirpath=tmp_path / "checkpoints", filename="best-{epoch}", monitor="val/score", mode="min")
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                        num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[callback], plugins=[checkpoint_io.AtomicCheckpointIO(background=True)])
    trainer.fit(Scripted([1.0]))
    trainer.save_checkpoint(tmp_path / "by_hand.ckpt")
    assert _epoch(tmp_path / "by_hand.ckpt") == 1  # there, whole, at once
    assert writers["best-epoch=1"].startswith("dlbench-checkpoint")
    assert writers["by_hand"] == threading.current_thread().name


def test_a_failed_background_write_stops_the_run_with_its_reason(tmp_path, monkeypatch):
    from dlbench.train import checkpoint_io

    def full_disk(self, checkpoint, path, storage_options=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_io.TorchCheckpointIO, "save_checkpoint", full_disk)
    io = checkpoint_io.AtomicCheckpointIO(background=True)
    with pytest.raises(checkpoint_io.CheckpointWriteError, match="No space left on device"):
        _fit(tmp_path, [3.0, 2.0, 1.0], plugins=[io])
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
