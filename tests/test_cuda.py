"""On a CUDA device (skipped without one; CI has none): every plugin's learning preset, run end to end by the real
command in bf16 mixed precision, beats its baseline. This goes beyond the two-step precision checks: validation,
test with the best checkpoint, pictures and embeddings all run with the model and its states on the GPU, which is
where host/device mix-ups show."""

from __future__ import annotations

import pytest
import torch

from dlbench.core import registry
from dlbench.testing import check_learns

PLUGINS = [e.name for e in registry.entries(registry.PLUGINS) if not e.broken]

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", PLUGINS)
def test_learns_on_cuda_in_bf16_mixed(name, tmp_path):
    check_learns(name, tmp_path, "--trainer.accelerator", "cuda", "--trainer.devices", "1",
                 "--trainer.precision", "bf16-mixed")


def test_cuda_graphs_of_the_training_step_learn_as_eager(tmp_path):
    """--compile true --compile_mode reduce-overhead: forward and backward replayed as CUDA graphs, and the model
    still beats its baseline (cnn on digits; the last, smaller batch of an epoch records a graph of its own)."""
    scalars = check_learns("cnn", tmp_path, "--trainer.accelerator", "cuda", "--trainer.devices", "1",
                           "--compile", "true", "--compile_mode", "reduce-overhead")
    assert scalars["train/compile_seconds"] > 0


def test_steps_per_call_on_cuda_in_16_mixed_equals_one_step_a_call(tmp_path):
    """The grad scaler path of --trainer.steps_per_call: K=4 gives K=1's test accuracy."""
    cuda = ("--trainer.accelerator", "cuda", "--trainer.devices", "1", "--trainer.precision", "16-mixed")
    one = check_learns("mlp", tmp_path / "one", *cuda)
    four = check_learns("mlp", tmp_path / "four", *cuda, "--trainer.steps_per_call", "4")
    assert four["test/acc"] == pytest.approx(one["test/acc"], abs=1e-6)
