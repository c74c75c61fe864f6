"""Names that more than one part of dlbench writes or reads: where runs land, the default seed, the files of a run
directory and the tags shared by the code that logs them and the code that reads them back. Standard library only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

VERSION = "0.1.0"
LOG_DIR = "lightning_logs"
"""Where runs land, ``<LOG_DIR>/<plugin>/version_N``, unless ``$DLBENCH_LOG_DIR`` says otherwise."""
LOG_DIR_ENV = "DLBENCH_LOG_DIR"
DEBUG_ENV = "DLBENCH_DEBUG"
DEFAULT_SEED = 42

# A run directory.
CONFIG_FILE = "config.yaml"
HPARAMS_FILE = "hparams.yaml"
STATUS_FILE = "status.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best-epoch={epoch}-step={step}"
"""The best checkpoint's file name pattern (Lightning's ModelCheckpoint ``filename``), ``.ckpt`` added."""
EVENTS_PREFIX = "events.out.tfevents"
EVALUATIONS_DIR = "evaluations"
"""Inside a run directory: one folder a validate/test/predict of the run (``test_0``, ...). The fit never writes
there, and nothing else writes anywhere else in a run directory."""
DERIVED_DIRS = (EVALUATIONS_DIR, "predictions", "export", "compress")
"""Folders of a run directory that commands reading the run write their own outputs into; every other file of a run
belongs to the fit that made it (and its resume)."""

# Tags.
PARAMS_TAG = "model/params"
"""Scalar logged once by :class:`dlbench.train.monitor.TrainingSpeed`: the model's parameter count."""
SPEED_TAG = "train/samples_per_second"
GPU_MEMORY_TAG = "train/peak_memory_mb"


def log_root() -> str:
    """The directory runs land in now: ``$DLBENCH_LOG_DIR``, else ``lightning_logs`` under the working directory."""
    return os.environ.get(LOG_DIR_ENV, LOG_DIR)


@contextmanager
def using_log_root(path: str | os.PathLike) -> Iterator[None]:
    """Runs started inside land under ``path`` (``$DLBENCH_LOG_DIR`` set, and restored afterwards)."""
    old = os.environ.get(LOG_DIR_ENV)
    os.environ[LOG_DIR_ENV] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(LOG_DIR_ENV, None)
        else:
            os.environ[LOG_DIR_ENV] = old
