"""Module paths of dlbench before its subpackages (0.1), kept importable.

Saved ``config.yaml`` files name classes by module path (``dlbench.tensorboard.RunLogger``, the prune run's
``dlbench.compress.OneShotPruning``), and plugins written against the flat layout import ``dlbench.metrics`` or
``dlbench.plugin``. Each old path below is an alias of the module that holds the code now: the same module object,
so classes compare equal and checkpoints load either way. Importing an old path warns once (DeprecationWarning)
with the new home; plugin authors should import from ``dlbench`` itself (see its docstring).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "dlbench.plugin": "dlbench.core.spec",
    "dlbench.registry": "dlbench.core.registry",
    "dlbench.errors": "dlbench.core.errors",
    "dlbench.machine": "dlbench.core.machine",
    "dlbench.runner": "dlbench.train.target",
    "dlbench.lightning_cli": "dlbench.train.lightning_cli",
    "dlbench.callbacks": "dlbench.train.callbacks",
    "dlbench.checkpoint_io": "dlbench.train.checkpoint_io",
    "dlbench.tensorboard": "dlbench.train.logger",
    "dlbench.monitor": "dlbench.train.monitor",
    "dlbench.precision": "dlbench.train.precision",
    "dlbench.pictures": "dlbench.train.pictures",
    "dlbench.metrics": "dlbench.train.metrics",
    "dlbench.fid": "dlbench.train.fid",
    "dlbench.compare": "dlbench.runs.compare",
    "dlbench.bench": "dlbench.runs.bench",
    "dlbench.sweep": "dlbench.tools.sweep",
    "dlbench.pruning": "dlbench.tools.pruning",
    "dlbench.export": "dlbench.tools.export",
    "dlbench.compress": "dlbench.tools.compress",
    "dlbench.scaffold": "dlbench.tools.scaffold",
    "dlbench.info": "dlbench.cli.info",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and hands back the module at its new path, already imported."""

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a placeholder module; exec_module puts the real one in its place

    def exec_module(self, module: ModuleType) -> None:
        # The import system hands back whatever sys.modules holds under the old name once this returns, so the
        # module at the new path stays as it is (its own name and spec) and is the one the old name gives.
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; import it from there (or the public names from dlbench)",
                      DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
