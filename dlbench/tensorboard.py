"""The run logger: Lightning's TensorBoardLogger with run directories that never collide and an HParams entry
that points at real metric curves instead of a placeholder."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


class RunLogger(TensorBoardLogger):
    """Writes ``<save_dir>/<name>/version_N`` like TensorBoardLogger, with two differences.

    * The version directory is claimed with an atomic ``mkdir``, so processes started at the same moment in the same
      directory get distinct runs (Lightning's own numbering lists the folder, then creates it later: a race).
    * ``log_hyperparams`` writes TensorBoard's HParams summaries naming ``metrics`` (the plugin's monitor and its best
      value) without writing a fake value for them: the HParams dashboard reads the real scalars the run logs.
    """

    def __init__(self, save_dir: str = "lightning_logs", name: str = "run", version: int | str | None = None,
                 log_graph: bool = False, default_hp_metric: bool = False, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, name=name, version=version, log_graph=log_graph,
                         default_hp_metric=default_hp_metric, **kwargs)
        self.hparam_metrics: list[str] = ["val/loss"]
        self.run_params: dict[str, Any] = {}

    def _get_next_version(self) -> int:
        if rank_zero_only.rank > 0:  # other processes of a DDP run learn rank zero's directory by broadcast
            return super()._get_next_version()
        root = self.root_dir
        os.makedirs(root, exist_ok=True)
        version = super()._get_next_version()
        while True:
            try:
                os.mkdir(os.path.join(root, f"version_{version}"))
                return version
            except FileExistsError:
                version += 1

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None) -> None:
        from torch.utils.tensorboard.summary import hparams

        # Under dlbench's CLI, run_params holds model, data and trainer arguments apart ("model/lr", "data/...");
        # Lightning's own call passes model and data hyperparameters merged flat, which loses that.
        params = dict(self.run_params) if self.run_params else _plain(params)
        # Keep hparams.yaml complete (Lightning's own bookkeeping), then write the HParams plugin's summaries.
        super().log_hyperparams(params, metrics=None, step=step)
        flat = self._sanitize_params(self._flatten_dict(params))
        names = list(dict.fromkeys([*self.hparam_metrics, *(metrics or {})]))
        exp, ssi, sei = hparams(flat, {name: 0.0 for name in names})
        writer = self.experiment._get_file_writer()
        for summary in (exp, ssi, sei):
            writer.add_summary(summary, step)
        if metrics:
            self.log_metrics(metrics, step)

    @staticmethod
    def _flatten_dict(params: dict[str, Any]) -> dict[str, Any]:
        from lightning.fabric.utilities.logger import _flatten_dict

        return _flatten_dict(params)


def _plain(params: Any) -> dict[str, Any]:
    from lightning.fabric.utilities.logger import _convert_params

    return _convert_params(params) or {}
