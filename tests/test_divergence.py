"""FiniteLossGuard stops a run whose training loss diverges (grows by orders of magnitude over its first steps and
stays there), as it stops one whose loss turns NaN: before a checkpoint of the broken weights is written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import dlbench

from dlbench.testing import QUIET, build
from dlbench.train.callbacks import DivergingLoss, FiniteLossGuard, NonFiniteLoss

STEPS = 7  # training steps an epoch of the lstm plugin's default data
TINY = ("--model.hidden_size", "8", "--model.num_layers", "2", "--test_after_fit", "false", *QUIET)


def _scale_loss_from(model, step: int, factor: float) -> None:
    """From optimiser step ``step`` + 1 on (1-based, as the guard numbers them), the model's training loss is
    ``factor`` times what it computes: a loss that grows by exactly that much, however the weights learn."""
    original = model.training_step

    def training_step(batch, batch_idx):
        loss = original(batch, batch_idx)
        return loss * factor if model.trainer.global_step >= step else loss

    model.training_step = training_step


def _checkpoints(run: Path) -> dict[str, tuple[int, int]]:
    """Each checkpoint file of a run: its (epoch, global step), read as a resume reads it."""
    found = {}
    for ckpt in sorted((run / "checkpoints").glob("*.ckpt")):
        state = torch.load(ckpt, weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point()), ckpt
        found[ckpt.name] = (state["epoch"], state["global_step"])
    return found


def _guard(trainer) -> FiniteLossGuard:
    return next(c for c in trainer.callbacks if isinstance(c, FiniteLossGuard))


# --- real runs -----------------------------------------------------------------------------------------------------

def test_a_learning_rate_of_1e12_stops_the_run_with_the_diverged_steps(tmp_path):
    # Today's loss goes from 0.94 to ~1e26 at the second step and stays there (it never becomes NaN).
    result = dlbench("fit", "--model", "lstm", "--model.lr", "1e12", "--trainer.max_epochs", "2",
                     "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert result.returncode != 0, result.stderr  # (the CLI picks the code and the advice after the message)
    assert "training loss diverged: it grew from 0.94 (its first steps) to " in result.stderr, result.stderr
    assert "and stayed above 9.4e+02 for 5 steps running (steps 2-6, epoch 0)" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    run = tmp_path / "lightning_logs" / "lstm" / "version_0"
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and status["steps"] == STEPS and "DivergingLoss" in status["error"]
    assert _checkpoints(run) == {}  # stopped before the first epoch's checkpoint


@pytest.mark.parametrize("factor", [10.0, 1e4])
def test_a_loss_ten_times_its_start_trains_on_and_one_ten_thousand_times_stops(tmp_path, factor):
    model, datamodule, trainer = build("lstm", *TINY, "--trainer.max_epochs", "2", log_dir=tmp_path)
    _scale_loss_from(model, 5, factor)  # steps 1-5 as computed: the reference; from step 6 on, scaled
    guard = _guard(trainer)
    run = Path(trainer.logger.log_dir)
    if factor == 10.0:
        trainer.fit(model, datamodule=datamodule)
        assert trainer.global_step == 2 * STEPS and not trainer.interrupted
        assert guard.reference is not None and 0.1 < guard.reference < 10
        return
    with pytest.raises(DivergingLoss) as raised:
        trainer.fit(model, datamodule=datamodule)
    err = raised.value
    # Steps 6 and 7 end epoch 0 above the threshold; the run carries into epoch 1 and reaches 5 steps at step 10.
    assert (err.first_step, err.step, err.epoch, err.run) == (6, 10, 1, 5)
    assert err.reference == guard.reference and err.threshold == 1e3 * err.reference
    assert err.value > err.threshold and isinstance(err, NonFiniteLoss)
    assert str(err) == (f"training loss diverged: it grew from {err.reference:.2g} (its first steps) to "
                        f"{err.value:.2g} and stayed above {err.threshold:.2g} for 5 steps running (steps 6-10, "
                        f"epoch 1)")
    # Stopped at epoch 1's end, before its checkpoint: the files on disk are epoch 0's, whole, finite.
    assert _checkpoints(run) and set(_checkpoints(run).values()) == {(0, STEPS)}
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["FiniteLossGuard"]
    assert saved == {"reference": guard.reference, "head": [], "head_steps": [], "run": 2, "run_start": 6}
    assert json.loads((run / "status.json").read_text())["status"] == "failed"


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory) -> tuple[Path, float]:
    """An ordinary first epoch of lstm: its last.ckpt and its guard's reference."""
    root = tmp_path_factory.mktemp("first_epoch")
    model, datamodule, trainer = build("lstm", *TINY, "--trainer.max_epochs", "1", log_dir=root)
    trainer.fit(model, datamodule=datamodule)
    return Path(trainer.logger.log_dir) / "checkpoints" / "last.ckpt", _guard(trainer).reference


def test_a_resumed_run_keeps_comparing_with_its_first_steps(tmp_path, first_epoch):
    last, reference = first_epoch
    state = torch.load(last, weights_only=True)["callbacks"]["FiniteLossGuard"]  # plain floats: weights_only loads
    assert state["reference"] == reference and isinstance(state["reference"], float)
    before = last.read_bytes()
    model, datamodule, trainer = build("lstm", *TINY, "--trainer.max_epochs", "3", log_dir=tmp_path)
    # Every step of the resumed run is 10^4 times the loss: its own first steps would make that the reference.
    _scale_loss_from(model, 0, 1e4)
    with pytest.raises(DivergingLoss) as raised:
        trainer.fit(model, datamodule=datamodule, ckpt_path=last)
    err = raised.value
    assert err.reference == reference == _guard(trainer).reference
    assert (err.first_step, err.step, err.epoch) == (STEPS + 1, STEPS + 5, 1)
    assert last.read_bytes() == before  # the checkpoint resumed from is untouched


# --- the run-length logic, without a Trainer --------------------------------------------------------------------

class Feed:
    """Hands a guard losses as Lightning's training loop would, one ``on_train_batch_end`` a call."""

    def __init__(self, guard: FiniteLossGuard, steps_per_call: int = 1) -> None:
        self.guard = guard
        self.trainer = SimpleNamespace(global_step=0, current_epoch=0, world_size=1, sanity_checking=False,
                                       steps_per_call=steps_per_call)

    def steps(self, *losses: float) -> None:
        for loss in losses:
            self.trainer.global_step += 1
            self.guard.on_train_batch_end(self.trainer, None, {"loss": torch.tensor(loss)}, None, 0)

    def call(self, *losses: float) -> None:  # one call of K steps (--trainer.steps_per_call K)
        self.trainer.global_step += len(losses)
        self.guard.on_train_batch_end(self.trainer, None, torch.tensor(losses), None, 0)

    def epoch_end(self) -> None:
        self.guard.on_train_epoch_end(self.trainer, None)
        self.trainer.current_epoch += 1


HEAD = (1.0, 1.2, 0.8, 1.1, 0.9)  # median 1.0: the threshold is 1000


def test_the_run_of_diverged_steps_is_carried_across_folds_and_checks(monkeypatch):
    monkeypatch.setattr(FiniteLossGuard, "FOLD", 3)
    guard = FiniteLossGuard()
    feed = Feed(guard)
    feed.steps(*HEAD, 2000.0)  # steps 1-6; folded at steps 3 and 6: the reference comes from two folds
    assert guard.reference == 1.0 and guard.threshold == 1000.0
    feed.steps(2000.0, 2000.0, 5.0)  # steps 7-9: a run of 3, broken at step 9
    feed.steps(2000.0, 3000.0)  # steps 10-11
    feed.epoch_end()  # a check: folds steps 10-11 (a run of 2 so far), nothing to stop for
    feed.steps(*[-2500.0] * 2)  # steps 12-13: a magnitude over the threshold counts either way
    assert guard.state_dict()["run"] == 4 and guard.state_dict()["run_start"] == 10
    feed.steps(500.0, *[4000.0] * 4)  # step 14 breaks the run; 15-18: four above, not five
    feed.epoch_end()
    feed.steps(7000.0)  # step 19 is the fifth, in a fold of its own, after a check
    with pytest.raises(DivergingLoss) as raised:
        feed.epoch_end()
    err = raised.value
    assert (err.step, err.first_step, err.epoch, err.reference, err.value, err.threshold) == (19, 15, 2, 1.0,
                                                                                             7000.0, 1000.0)
    assert str(err) == ("training loss diverged: it grew from 1 (its first steps) to 7e+03 and stayed above 1e+03 "
                        "for 5 steps running (steps 15-19, epoch 2)")


def test_a_run_spanning_a_fold_inside_an_epoch_stops_at_its_fifth_step(monkeypatch):
    monkeypatch.setattr(FiniteLossGuard, "FOLD", 4)
    feed = Feed(FiniteLossGuard())
    feed.steps(*HEAD, 1.0, 1.0, *[1e6] * 7, 1.0)  # steps 8-14 above: folds at 4, 8, 12, 16 cut the run
    with pytest.raises(DivergingLoss) as raised:
        feed.epoch_end()
    assert (raised.value.first_step, raised.value.step, raised.value.value) == (8, 12, 1e6)


def test_steps_per_call_losses_count_one_step_each(monkeypatch):
    monkeypatch.setattr(FiniteLossGuard, "FOLD", 4)
    feed = Feed(FiniteLossGuard(), steps_per_call=3)
    feed.call(*HEAD[:3])
    feed.call(*HEAD[3:], 1.0)
    feed.call(1e6, 1e6, 1e6)  # steps 7-9
    feed.call(1e6, 1e6)  # steps 10-11: the last call of an epoch may be shorter
    with pytest.raises(DivergingLoss) as raised:
        feed.epoch_end()
    assert (raised.value.first_step, raised.value.step) == (7, 11)


def test_a_blow_up_within_the_first_steps_is_measured_from_the_first_loss():
    feed = Feed(FiniteLossGuard())
    feed.steps(0.9, *[1e20] * 5)  # the median of the first five is 1e20: the first loss is the reference
    with pytest.raises(DivergingLoss) as raised:
        feed.epoch_end()
    assert (raised.value.reference, raised.value.first_step, raised.value.step) == (pytest.approx(0.9), 2, 6)
    # The same with a check before the fifth loss (two processes' short epochs): the first losses held back at the
    # check are judged once the reference is known.
    feed = Feed(FiniteLossGuard())
    feed.steps(0.9, *[1e20] * 3)
    feed.epoch_end()
    feed.steps(*[1e20] * 2)
    with pytest.raises(DivergingLoss) as raised:
        feed.epoch_end()
    assert (raised.value.first_step, raised.value.step, raised.value.epoch) == (2, 6, 1)


def test_a_loss_starting_near_zero_is_measured_from_the_floor():
    guard = FiniteLossGuard()
    feed = Feed(guard)
    feed.steps(*[1e-6] * 5, *[0.9] * 20)  # a nearly solved task's loss rising to an ordinary value: no stop
    feed.epoch_end()
    assert guard.threshold == pytest.approx(1.0)  # FACTOR * FLOOR
    feed.steps(*[2.0] * 5)
    with pytest.raises(DivergingLoss):
        feed.epoch_end()


def test_nan_is_reported_as_nan_and_first_wins():
    feed = Feed(FiniteLossGuard())
    feed.steps(*HEAD, *[1e6] * 4, math.inf)  # the step that would make the run five is not finite
    with pytest.raises(NonFiniteLoss) as raised:
        feed.epoch_end()
    assert type(raised.value) is NonFiniteLoss and raised.value.step == 10
    assert str(raised.value) == "loss became NaN or infinite at step 10 (epoch 0)"
    feed = Feed(FiniteLossGuard())
    feed.steps(*HEAD, *[1e6] * 5, math.nan)  # diverged at step 10, NaN after it
    with pytest.raises(DivergingLoss) as raised:
        feed.epoch_end()
    assert raised.value.step == 10


def test_outputs_without_a_loss_are_ignored_and_per_sample_losses_are_averaged():
    guard = FiniteLossGuard()
    feed = Feed(guard)
    for outputs in (None, {}, {"loss": None}, {"other": torch.tensor(1.0)}):  # a GAN's manual steps return None
        feed.guard.on_train_batch_end(feed.trainer, None, outputs, None, 0)
    feed.trainer.global_step += 1
    guard.on_train_batch_end(feed.trainer, None, torch.tensor([1.0, 3.0]), None, 0)  # per sample: mean 2
    feed.steps(2.0, 2.0, 2.0, 2.0)
    feed.epoch_end()
    assert guard.reference == 2.0


def test_the_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    guard = FiniteLossGuard()
    feed = Feed(guard)
    feed.steps(*HEAD, 1.0, *[5000.0] * 3)  # steps 7-9 above: a run of 3 when the checkpoint is written
    feed.epoch_end()
    torch.save({"guard": guard.state_dict()}, tmp_path / "state.ckpt")
    assert guard.state_dict() == {"reference": 1.0, "head": [], "head_steps": [], "run": 3, "run_start": 7}
    resumed = FiniteLossGuard()
    resumed.load_state_dict(torch.load(tmp_path / "state.ckpt", weights_only=True)["guard"])
    assert resumed.reference == 1.0
    feed = Feed(resumed)
    feed.trainer.global_step, feed.trainer.current_epoch = 9, 1
    feed.steps(5000.0, 5000.0)  # steps 10-11 complete the run begun before the checkpoint
    with pytest.raises(DivergingLoss) as raised:
        feed.epoch_end()
    assert (raised.value.first_step, raised.value.step, raised.value.reference) == (7, 11, 1.0)
    # A checkpoint written within the first steps keeps them, and the resumed guard completes its reference.
    early = FiniteLossGuard()
    feed = Feed(early)
    feed.steps(*HEAD[:2])
    state = early.state_dict()
    assert state["reference"] is None and state["head_steps"] == [1, 2]
    assert state["head"] == pytest.approx(list(HEAD[:2]))
    later = FiniteLossGuard()
    later.load_state_dict(state)
    feed = Feed(later)
    feed.steps(*HEAD[2:])
    feed.epoch_end()
    assert later.reference == pytest.approx(1.0)
