"""A run directory as one object: ``lightning_logs/<plugin>/version_N/`` and the files ``dlbench fit`` keeps there.

``config.yaml`` (the full LightningCLI config, which reproduces the run), ``hparams.yaml``, ``status.json`` (written
by :class:`dlbench.train.callbacks.RunStatus`), TensorBoard event files and ``checkpoints/`` with the best epoch on
the plugin's monitor (``best-epoch=E-step=S.ckpt``) and the last (``last.ckpt``). Everything that needs to know
where a run keeps something asks this class; only :meth:`RunDir.best_checkpoint` loads torch, to read which file
the run's checkpoint callback last called best.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlbench.core.conventions import CHECKPOINT_DIR, CONFIG_FILE, HPARAMS_FILE, LAST_CHECKPOINT, STATUS_FILE
from dlbench.core.errors import DlbenchError


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (owned by anyone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(path: Path) -> tuple[dict, str]:
    """``status.json`` as a dict, and a one-line problem when it exists but cannot be read."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, ""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {}, f"status.json unreadable: {err}"
    return (data, "") if isinstance(data, dict) else ({}, "status.json is not a JSON object")


def process_gone(info: dict) -> bool:
    """True when a run marked running was started on this host by a process that no longer exists."""
    if info.get("host") != socket.gethostname():
        return False
    try:
        return not pid_alive(int(info.get("pid", -1)))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class RunDir:
    """Where one run keeps its files, and what they say. Reading never writes."""

    path: Path

    @classmethod
    def of(cls, given: str | Path) -> RunDir:
        """The run that ``given`` names: its directory, its ``config.yaml`` or one of its checkpoint files."""
        path = Path(given)
        if path.is_file():
            path = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
        return cls(path)

    @classmethod
    def of_config(cls, config_file: str | Path) -> RunDir | None:
        """The run a config file belongs to, when it is a run's own ``config.yaml``."""
        path = Path(config_file)
        if path.name != CONFIG_FILE or not (path.parent / CHECKPOINT_DIR).is_dir():
            return None
        return cls(path.parent)

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def hparams_file(self) -> Path:
        return self.path / HPARAMS_FILE

    @property
    def status_file(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def config(self) -> dict[str, Any]:
        """``config.yaml``; a DlbenchError when it is missing or not YAML."""
        import yaml

        if not self.config_file.is_file():
            raise DlbenchError(f"{self.path} has no {CONFIG_FILE}, so it is not a dlbench run directory (or it "
                               f"stopped before training began). Give a directory such as "
                               f"lightning_logs/lstm/version_0.")
        try:
            data = yaml.safe_load(self.config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise DlbenchError(f"cannot read {self.config_file} ({str(err).splitlines()[0]}). Fix or restore the "
                               f"file.") from None
        return data if isinstance(data, dict) else {}

    def status(self) -> dict[str, Any]:
        return read_status(self.status_file)[0]

    @property
    def last_checkpoint(self) -> Path | None:
        last = self.checkpoint_dir / LAST_CHECKPOINT
        return last if last.is_file() else None

    def best_checkpoints(self) -> list[Path]:
        """The run's best-* checkpoint files, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted(self.checkpoint_dir.glob("best-*.ckpt"), key=lambda p: (p.stat().st_mtime, p.name))

    def best_checkpoint(self) -> Path | None:
        """The checkpoint the run's checkpoint callback last called best (its state in the newest checkpoint), else
        the newest best-* file."""
        files = self.best_checkpoints()
        if not files:
            return None
        recorded = self._recorded_best(self.last_checkpoint or files[-1])
        if recorded is not None:
            named = self.checkpoint_dir / Path(recorded).name
            if named.is_file():
                return named
        return files[-1]

    @staticmethod
    def _recorded_best(newest: Path) -> str | None:
        try:
            import torch

            checkpoint = torch.load(newest, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # a damaged file only means the newest best file is taken instead
            return None
        for key, state in (checkpoint.get("callbacks") or {}).items():
            if "Checkpoint" in str(key) and isinstance(state, dict) and state.get("best_model_path"):
                return str(state["best_model_path"])
        return None

    def checkpoint(self, which: str) -> Path:
        """``best`` or ``last`` of this run as a file; a DlbenchError that says what the run has instead."""
        found = self.best_checkpoint() if which == "best" else self.last_checkpoint
        if found is None:
            have = sorted(p.name for p in self.checkpoint_dir.glob("*.ckpt")) if self.checkpoint_dir.is_dir() else []
            listed = f"it has {', '.join(have)}" if have else "it has no checkpoints (it stopped before an epoch ended)"
            raise DlbenchError(f"run {self.path} has no {which} checkpoint: {listed}. Give a checkpoint file with "
                               f"--ckpt_path, or train the run first.")
        return found
