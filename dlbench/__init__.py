"""dlbench: deep-learning architectures as pip-installable Lightning plugins, run and compared from one command.

This namespace is the stable API for plugin authors: the spec (:class:`Plugin`, :class:`Dataset`, :data:`DATA_KINDS`),
:class:`DlbenchError`, and the building blocks a plugin's LightningModule uses (:class:`LossMean`, ...), which are
imported on first use. Importing ``dlbench`` imports no torch, so plugin specs and discovery stay fast. Beside it,
``dlbench.data`` (data helpers) and ``dlbench.testing`` (the plugin checks) are public too; every other module is
dlbench's own and may move (see "Architecture" in the README).
"""

from __future__ import annotations

import importlib
from typing import Any

from dlbench.core import moved
from dlbench.core.conventions import VERSION as __version__
from dlbench.core.errors import DlbenchError
from dlbench.core.spec import DATA_KINDS, Dataset, Plugin

# Public names that need torch: imported the first time they are asked for.
_LAZY = {
    "LossMean": "dlbench.train.metrics",
    "MajorityAccuracy": "dlbench.train.metrics",
    "PictureBudget": "dlbench.train.pictures",
    "full_precision": "dlbench.train.precision",
    "FeatureNet": "dlbench.train.fid",
    "FrechetDistance": "dlbench.train.fid",
    "train_feature_net": "dlbench.train.fid",
}

__all__ = ["DATA_KINDS", "Dataset", "DlbenchError", "Plugin", "__version__", *_LAZY]

moved.install()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dlbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
