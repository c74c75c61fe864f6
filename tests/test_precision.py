"""Mixed precision: every plugin trains under ``--trainer.precision bf16-mixed`` on CPU (and ``16-mixed`` and
``bf16-mixed`` on CUDA, when there is a device), and layers without a reduced-precision kernel run in float32
through :mod:`dlbench.train.precision`."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlbench.core import registry
from dlbench.testing import QUIET, build
from dlbench.train.precision import FullPrecision, full_precision, reduced_precision_hint

PLUGINS = [e.name for e in registry.entries(registry.PLUGINS) if not e.broken]
ONEDNN_LSTM = ("could not create a primitive descriptor for the LSTM forward propagation primitive. Run workload "
               "with environment variable ONEDNN_VERBOSE=all to get additional diagnostic information.")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _first_tensor(batch):
    if isinstance(batch, torch.Tensor):
        return batch
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return getattr(batch, "x", None)  # a torch_geometric Data object


def _two_steps_keep_the_loss_finite(name: str, precision: str, accelerator: str, tmp_path) -> list[torch.device]:
    """Two training steps of plugin ``name`` at ``precision``; asserts every loss is finite and returns the devices
    the batches reached the training step on."""
    spec = registry.plugin(name)
    model, datamodule, trainer = build(name, *spec.tiny_args, "--trainer.fast_dev_run", "2", "--trainer.precision",
                                       precision, "--trainer.accelerator", accelerator, "--trainer.devices", "1",
                                       *QUIET, log_dir=tmp_path)
    losses: list[torch.Tensor] = []
    devices: list[torch.device] = []
    original = model.training_step

    def recording_step(batch, *args, **kwargs):
        first = _first_tensor(batch)
        if first is not None:
            devices.append(first.device)
        out = original(batch, *args, **kwargs)
        loss = out["loss"] if isinstance(out, dict) else out
        if isinstance(loss, torch.Tensor):
            losses.append(loss.detach().float())
        return out

    model.training_step = recording_step
    trainer.fit(model, datamodule=datamodule)
    assert trainer.precision_plugin.precision == precision
    assert trainer.strategy.root_device.type == accelerator
    if not losses:  # manual optimisation (e.g. a GAN) may return nothing; its logged loss must then be finite
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if "loss" in k and v.numel() == 1}
        assert logged, f"{name}: no loss returned or logged"
        assert all(math.isfinite(v) for v in logged.values()), f"{name}: non-finite loss {logged}"
    else:
        assert 1 <= len(losses) <= 2  # one when the training split is a single batch (a whole graph)
        assert all(torch.isfinite(loss).all() for loss in losses), f"{name}: non-finite loss {losses}"
    return devices


@pytest.mark.parametrize("name", PLUGINS)
def test_two_bf16_mixed_steps_on_cpu_keep_the_loss_finite(name, tmp_path):
    _two_steps_keep_the_loss_finite(name, "bf16-mixed", "cpu", tmp_path)


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
@pytest.mark.parametrize("name", PLUGINS)
def test_two_true_precision_steps_on_cpu_keep_the_loss_finite(name, precision, tmp_path):
    # The whole model in that dtype: batches made on the device (uint8 images normalised there) must follow it.
    _two_steps_keep_the_loss_finite(name, precision, "cpu", tmp_path)


@CUDA
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("name", PLUGINS)
def test_two_mixed_precision_steps_on_cuda_keep_the_loss_finite(name, precision, tmp_path):
    devices = _two_steps_keep_the_loss_finite(name, precision, "cuda", tmp_path)
    assert devices and all(d.type == "cuda" for d in devices), f"{name}: batches reached the step on {devices}"


def test_an_lstm_under_cpu_bf16_autocast_runs_in_float32_and_trains():
    lstm, x = nn.LSTM(3, 8, num_layers=2, batch_first=True), torch.randn(4, 5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        try:  # the failure full_precision avoids, on CPUs whose oneDNN has no bf16 LSTM (CPUs with AMX have one)
            lstm(x)
        except RuntimeError as error:
            assert "primitive descriptor" in str(error)
        out, (h, c) = full_precision(lstm, x.bfloat16())
        head = nn.Linear(8, 1)(out[:, -1])
    assert out.dtype == h.dtype == torch.float32
    assert head.dtype == torch.bfloat16  # the rest of the model stays in reduced precision
    head.float().sum().backward()
    assert lstm.weight_ih_l0.grad is not None and torch.isfinite(lstm.weight_ih_l0.grad).all()


def test_full_precision_is_a_no_op_without_autocast_or_on_devices_not_named():
    lstm, x = nn.LSTM(2, 4, batch_first=True), torch.randn(3, 6, 2)
    expected, _ = lstm(x)
    torch.testing.assert_close(full_precision(lstm, x)[0], expected)
    linear = nn.Linear(2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert full_precision(linear, x, device_types=("cuda",)).dtype == torch.bfloat16
        assert full_precision(linear, x).dtype == torch.float32


def test_full_precision_casts_nested_inputs_and_keeps_non_floating_ones():
    lstm, x = nn.LSTM(2, 4, batch_first=True), torch.randn(3, 6, 2)
    state = (torch.zeros(1, 3, 4, dtype=torch.bfloat16), torch.zeros(1, 3, 4, dtype=torch.bfloat16))
    embedding = nn.Embedding(5, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = full_precision(lstm, x.bfloat16(), state)
        ids = full_precision(embedding, torch.tensor([1, 2]))
    assert out.dtype == torch.float32 and ids.dtype == torch.float32


def test_the_wrapper_works_inside_sequential_and_names_its_parameters_under_module():
    net = nn.Sequential(FullPrecision(nn.GRU(2, 4, batch_first=True)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = net(torch.randn(3, 6, 2))
    assert out.dtype == torch.float32
    assert "0.module.weight_ih_l0" in net.state_dict()


@pytest.mark.parametrize(("message", "precision", "hinted"), [
    (ONEDNN_LSTM, "bf16-mixed", True),
    ("\"addmm_impl_cpu_\" not implemented for 'Half'", "16-mixed", True),
    (ONEDNN_LSTM, "32-true", False),  # full precision: the hint would be wrong
    ("CUDA out of memory", "bf16-mixed", False),  # another problem entirely
])
def test_a_reduced_precision_failure_gets_a_hint_naming_the_fix(message, precision, hinted):
    hint = reduced_precision_hint(RuntimeError(message), precision)
    assert (hint is not None) == hinted
    if hinted:
        assert "--trainer.precision 32-true" in hint and "full_precision" in hint
