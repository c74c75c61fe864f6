"""Saves a run's preprocessing (its data module's :class:`dlbench.data.predict.Predictor`) with the run while it
trains: ``RUN_DIR/predictor.json`` once, and the same record in every checkpoint, so ``dlbench predict`` and
``dlbench serve`` work from the run directory (or a checkpoint file) alone, without the training data."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from dlbench.data.predict import PREDICTOR_FILE, predictor_record

log = logging.getLogger(__name__)


class SavePredictor(Callback):
    """Asks the data module for its predictor when fit starts (the data is set up by then) and keeps its record."""

    def __init__(self) -> None:
        self.record: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "SavePredictor"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        make = getattr(datamodule, "predictor", None)
        if not callable(make):
            return
        try:
            self.record = predictor_record(make())
        except Exception as err:  # a plugin's predictor must never cost the training run
            log.warning(f"dlbench: the data module's predictor failed ({type(err).__name__}: {err}); this run will "
                        f"not be usable by dlbench predict without --data.")
            self.record = None
            return
        logger = trainer.logger
        if trainer.is_global_zero and logger is not None and logger.log_dir:
            path = Path(logger.log_dir) / PREDICTOR_FILE
            if not path.exists():  # a resume keeps the file its fit wrote
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(self.record, indent=1) + "\n")
                os.replace(tmp, path)

    def state_dict(self) -> dict[str, Any]:
        return {"record": self.record} if self.record is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.record = state_dict.get("record") or self.record
