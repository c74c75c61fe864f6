"""Layers that must run in full precision under mixed precision on some devices.

With ``--trainer.precision bf16-mixed`` (or ``16-mixed``) Lightning runs every step under ``torch.autocast``, which
casts each op's inputs to the reduced type where the op has such a kernel. Some layers have none on some devices:
on CPU, oneDNN's LSTM rejects bfloat16 inputs with "could not create a primitive descriptor for the LSTM forward
propagation primitive". Run such a layer through :func:`full_precision` (or wrap it in :class:`FullPrecision`):
on the devices named, autocast is switched off for that one call and its floating inputs are cast to float32; the
rest of the model keeps running in reduced precision. On other devices (CUDA, whose cuDNN RNNs take fp16 and bf16)
nothing changes::

    from dlbench.train.precision import full_precision

    def forward(self, x):
        out, _ = full_precision(self.lstm, x)  # float32 on CPU under bf16-mixed, reduced precision on CUDA
        return self.head(out[:, -1])
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

FULL_PRECISION_DEVICES = ("cpu",)
"""Device types on which :func:`full_precision` switches autocast off by default: oneDNN (CPU) has no bf16 LSTM."""


def _first_device_type(value: Any) -> str | None:
    if isinstance(value, torch.Tensor):
        return value.device.type
    if isinstance(value, (list, tuple)):
        return next((t for t in map(_first_device_type, value) if t is not None), None)
    if isinstance(value, dict):
        return _first_device_type(list(value.values()))
    return None


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


def full_precision(module: nn.Module, *args: Any, device_types: tuple[str, ...] = FULL_PRECISION_DEVICES,
                   **kwargs: Any) -> Any:
    """``module(*args, **kwargs)``, in float32 if autocast is on for the inputs' device and that device is one of
    ``device_types``; unchanged otherwise (no autocast, or a device whose kernels handle reduced precision).

    The module's own parameters stay float32 under mixed precision, so only the inputs need casting. Outputs are
    float32; the next layer under autocast casts them down again as it needs.
    """
    device_type = _first_device_type((args, kwargs))
    if device_type is None or device_type not in device_types or not torch.is_autocast_enabled(device_type):
        return module(*args, **kwargs)
    with torch.autocast(device_type, enabled=False):
        return module(*_to_float32(args), **_to_float32(kwargs))


class FullPrecision(nn.Module):
    """A module wrapper that runs ``module`` through :func:`full_precision`, for use inside ``nn.Sequential``.

    Its parameters are those of ``module`` under the prefix ``module.`` in the state dict; to keep a layer's
    existing parameter names, call :func:`full_precision` in ``forward`` instead.
    """

    def __init__(self, module: nn.Module, device_types: tuple[str, ...] = FULL_PRECISION_DEVICES) -> None:
        super().__init__()
        self.module = module
        self.device_types = tuple(device_types)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return full_precision(self.module, *args, device_types=self.device_types, **kwargs)


_NO_REDUCED_KERNEL = re.compile(r"could not create a primitive descriptor|\"\w+\" not implemented for 'BFloat16'|"
                                r"\"\w+\" not implemented for 'Half'|expected scalar type (BFloat16|Half|Float)|"
                                r"found dtype (BFloat16|Half|Float)|mat1 and mat2 must have the same dtype")


def reduced_precision_hint(err: BaseException, precision: str | None) -> str | None:
    """For an error raised during a mixed-precision run that looks like a layer without a reduced-precision kernel
    (oneDNN's "could not create a primitive descriptor", "not implemented for 'BFloat16'", dtype mismatches), a
    sentence saying what to do; None for any other error or a full-precision run."""
    if not str(precision).startswith(("16", "bf16")):
        return None
    if not _NO_REDUCED_KERNEL.search(str(err)):
        return None
    return (f"a layer of this model has no {precision} kernel on this device. Train in full precision "
            f"(--trainer.precision 32-true), or, in the plugin, run that layer through "
            f"dlbench.train.precision.full_precision (e.g. out, _ = full_precision(self.lstm, x))")
