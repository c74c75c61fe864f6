"""The run logger: Lightning's TensorBoardLogger with run directories that never collide, an HParams entry that
points at real metric curves instead of a placeholder, and the model's computation graph where it can be traced."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import warnings
from typing import Any

import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


class RunLogger(TensorBoardLogger):
    """Writes ``<save_dir>/<name>/version_N`` like TensorBoardLogger, with three differences.

    * The version directory is claimed with an atomic ``mkdir``, so processes started at the same moment in the same
      directory get distinct runs (Lightning's own numbering lists the folder, then creates it later: a race).
    * ``log_hyperparams`` writes the session summaries of TensorBoard's HParams plugin but no experiment summary.
      TensorBoard uses the first experiment summary it finds for the whole log directory, so one run's summary would
      hide the hyperparameters and metrics of runs of other plugins; without one, it builds the experiment from every
      run's hyperparameters and scalar tags, and shows the real last value of each metric (no placeholder values).
    * ``log_graph`` (on by default) traces the model once per run on its ``example_input_array``, in eval mode,
      without gradients and without touching the run's random state; a model that cannot be traced costs one line
      of warning, never the run.
    """

    def __init__(self, save_dir: str = "lightning_logs", name: str = "run", version: int | str | None = None,
                 log_graph: bool = True, default_hp_metric: bool = False, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, name=name, version=version, log_graph=log_graph,
                         default_hp_metric=default_hp_metric, **kwargs)
        self.graph_enabled = log_graph
        self.run_params: dict[str, Any] = {}
        self._graph_tried = False

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
        _, ssi, sei = hparams(flat, {})  # no experiment summary: see the class docstring
        writer = self.experiment._get_file_writer()
        for summary in (ssi, sei):
            writer.add_summary(summary, step)
        if metrics:
            self.log_metrics(metrics, step)

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning calls this at the start of every fit/validate/test/predict; one graph a run is enough, and a
        # resumed run (purge_step set) already has its graph.
        if not self.graph_enabled or self._graph_tried or self._kwargs.get("purge_step") is not None:
            return
        self._graph_tried = True
        example = model.example_input_array if input_array is None else input_array
        if example is None:
            return
        name = type(model).__name__
        if not isinstance(example, (torch.Tensor, tuple)):
            log.warning(f"dlbench: computation graph of {name} not logged: its example_input_array is a "
                        f"{type(example).__name__}; tracing takes a tensor or a tuple of tensors.")
            return
        try:
            with _quiet_trace(model) as trace_model:
                inputs = _graph_inputs(model, example)
                self.experiment.add_graph(trace_model, inputs, use_strict_trace=False)
        except Exception as err:  # any model may fail to trace; the run must go on
            first = (str(err).strip().splitlines() or [""])[0][:200]
            why = f"{type(err).__name__}: {first}" if first else type(err).__name__
            log.warning(f"dlbench: computation graph of {name} not logged: tracing failed ({why}). Turn graphs off "
                        f"with --log_graph false.")

    @staticmethod
    def _flatten_dict(params: dict[str, Any]) -> dict[str, Any]:
        from lightning.fabric.utilities.logger import _flatten_dict

        return _flatten_dict(params)


def _graph_inputs(model: Any, example: Any) -> Any:
    """The example input as a batch reaches forward in the training loop: converted to the dtype of a true-precision
    run (mixed precision traces in float32, as autocast is only on inside steps), then through the data hooks and
    onto the model's device."""
    trainer = model._trainer
    if trainer is not None:
        example = trainer.precision_plugin.convert_input(example)
    return model._apply_batch_transfer_handler(model._on_before_batch_transfer(example))


@contextlib.contextmanager
def _quiet_trace(model: Any):
    """Eval mode, no gradients, the random state and every submodule's train/eval flag restored afterwards, the
    original forward of a ``torch.compile``d one, and none of the tracer's printing and warnings."""
    import lightning.pytorch as pl

    modes = {m: m.training for m in model.modules()}
    compiled = model.__dict__.get("forward")
    original = getattr(compiled, "_torchdynamo_orig_callable", None)
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    try:
        if original is not None:
            model.forward = original  # tracing the compiled function would compile it again for the example shape
        with torch.random.fork_rng(devices=devices), torch.no_grad(), warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()), pl.core.module._jit_is_scripting():
            warnings.simplefilter("ignore")
            model.eval()
            yield model
    finally:
        if original is not None:
            model.forward = compiled
        for module, training in modes.items():
            module.training = training


def _plain(params: Any) -> dict[str, Any]:
    from lightning.fabric.utilities.logger import _convert_params

    return _convert_params(params) or {}


class EvaluationLogger(CSVLogger):
    """The logger of ``dlbench validate|test|predict``: an evaluation is not a training run, so it writes no
    TensorBoard events (TensorBoard and ``dlbench compare`` would list it as a run of its own) and never touches the
    run it evaluates. Its files go to ``<save_dir>/<stage>_N`` (``RUN_DIR/evaluations/test_0``; the folder is claimed
    with an atomic ``mkdir``): Lightning's ``metrics.csv`` and ``hparams.yaml``, the evaluation's ``config.yaml``
    (which repeats it) and ``evaluation.json``, one object with the stage, the checkpoint, the last value of every
    metric and how it ended."""

    def __init__(self, save_dir: str, stage: str = "test", checkpoint: str | None = None, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, name="", **kwargs)
        self.stage, self.checkpoint = stage, checkpoint
        self.metrics: dict[str, float] = {}

    def _get_next_version(self) -> str:
        root = self.root_dir
        n = 0
        if rank_zero_only.rank > 0:  # only rank zero writes; the others never create a folder
            return f"{self.stage}_{n}"
        os.makedirs(root, exist_ok=True)
        while True:
            try:
                os.mkdir(os.path.join(root, f"{self.stage}_{n}"))
                return f"{self.stage}_{n}"
            except FileExistsError:
                n += 1

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        for key, value in metrics.items():
            with contextlib.suppress(TypeError, ValueError):
                self.metrics[key] = float(value)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        record = {"stage": self.stage, "checkpoint": self.checkpoint, "status": status, "finished": time.time(),
                  "metrics": self.metrics}
        path = os.path.join(self.log_dir, "evaluation.json")
        os.makedirs(self.log_dir, exist_ok=True)
        with open(path + ".tmp", "w") as out:
            json.dump(record, out, indent=2)
        os.replace(path + ".tmp", path)
