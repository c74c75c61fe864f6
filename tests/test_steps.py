"""``--trainer.steps_per_call K``: K optimiser steps a training_step call, with the results of K=1 to the bit, through
the real ``dlbench fit`` command."""

from __future__ import annotations

import pytest
import torch
from conftest import dlbench

from dlbench.runs import read_scalars

QUIET = ("--trainer.enable_model_summary", "false", "--test_after_fit", "false")


def _fit(tmp_path, model: str, k: int, *args: str):
    result = dlbench("fit", "--model", model, "--trainer.steps_per_call", str(k), *QUIET, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = sorted((tmp_path / "lightning_logs" / model).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return runs[-1]


def _same_run(one, many):
    names = sorted(p.name for p in (one / "checkpoints").glob("*.ckpt"))
    assert names == sorted(p.name for p in (many / "checkpoints").glob("*.ckpt"))  # same best epoch and step
    a = torch.load(one / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(many / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] > 0
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for x, y in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(),
                    strict=True):
        assert all(torch.equal(x[key], y[key]) for key in x)
    scalars_one, scalars_many = read_scalars(one), read_scalars(many)
    speed = {"train/epoch_seconds", "train/samples_per_second"}
    assert set(scalars_one) == set(scalars_many)
    for tag in set(scalars_one) - speed:
        assert scalars_one[tag] == scalars_many[tag], tag  # same steps, same values
    samples = [v for _, v in scalars_many["train/samples_per_second"]]
    assert all(v > 0 for v in samples)
    return a


@pytest.mark.parametrize("model, args", [
    ("mlp", ("--trainer.max_epochs", "3")),                                  # AdamW, cosine schedule a step
    ("lstm", ("--trainer.max_epochs", "8", "--model.hidden_size", "16")),    # Adam, plateau schedule an epoch
    ("mlp", ("--trainer.max_epochs", "2", "--trainer.gradient_clip_val", "0.05")),  # clipping in every step
])
def test_k_steps_a_call_give_the_results_of_one(tmp_path, model, args):
    one = _fit(tmp_path, model, 1, *args)
    many = _fit(tmp_path, model, 4, *args)
    _same_run(one, many)


def test_max_steps_is_met_exactly_inside_a_call(tmp_path):
    run = _fit(tmp_path, "mlp", 4, "--trainer.max_steps", "10")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 10


@pytest.mark.parametrize("args, must_say", [
    (["--model", "gan"], "steps its own optimisers"),
    (["--model", "mlp", "--trainer.accumulate_grad_batches", "2"], "does not go with"),
])
def test_what_it_cannot_do_is_a_clear_error(tmp_path, args, must_say):
    result = dlbench("fit", *args, "--trainer.steps_per_call", "2", "--trainer.max_epochs", "1", cwd=tmp_path)
    assert result.returncode == 2 and must_say in result.stderr and "Traceback" not in result.stderr
