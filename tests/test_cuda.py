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
