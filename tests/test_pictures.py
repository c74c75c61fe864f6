"""Epoch-end pictures cost at most their share of the run: first and last epoch always, in between by time."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from dlbench.train.pictures import PictureBudget


def _trainer(epoch: int, max_epochs: int | None = 100, sanity: bool = False, stop: bool = False):
    return SimpleNamespace(sanity_checking=sanity, max_epochs=max_epochs, current_epoch=epoch, should_stop=stop)


def test_first_and_last_epochs_are_drawn_and_the_sanity_check_never():
    budget = PictureBudget(share=0.05)
    assert not budget.due(_trainer(0, sanity=True))
    assert budget.due(_trainer(0))
    with budget.drawing():
        time.sleep(0.05)  # a drawing of 50 ms: the next one is due ~0.95 s later
    assert not budget.due(_trainer(1))
    assert budget.due(_trainer(99))  # the last epoch
    assert budget.due(_trainer(1, stop=True))  # early stopping ends the run here


def test_drawing_takes_at_most_its_share_of_the_time():
    budget, drawn, start = PictureBudget(share=0.2), 0, time.perf_counter()
    for epoch in range(400):  # 400 epochs of 2 ms; each drawing 10 ms
        time.sleep(0.002)
        if budget.due(_trainer(epoch, max_epochs=None)):
            with budget.drawing():
                time.sleep(0.01)
                drawn += 1
    elapsed = time.perf_counter() - start
    assert 1 < drawn < 400
    assert drawn * 0.01 <= 0.2 * elapsed + 0.01  # within one drawing of the share


def test_share_must_be_a_fraction():
    with pytest.raises(ValueError, match="share"):
        PictureBudget(share=0)
