"""Reading runs back: scalars, hyperparameters and status of run directories, through TensorBoard's own reader.

A run directory is what ``dlbench fit`` writes, ``lightning_logs/<plugin>/version_N/``: event files, ``hparams.yaml``,
``config.yaml``, ``status.json`` (see :class:`dlbench.train.callbacks.RunStatus`), ``checkpoints/`` and, from
``dlbench validate|test|predict --run``, ``evaluations/<stage>_N/`` (see
:class:`dlbench.train.logger.EvaluationLogger`). Reading imports TensorBoard but never torch; only
:func:`checkpoint_params`, the fallback for runs that did not log their parameter count, loads torch.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from dlbench.core.conventions import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EVALUATIONS_DIR,
    EVENTS_PREFIX,
    HPARAMS_FILE,
    PARAMS_TAG,
    STATUS_FILE,
)
from dlbench.core.errors import DlbenchError
from dlbench.runs.directory import process_gone, read_status

RUN_FILES = (STATUS_FILE, HPARAMS_FILE, CONFIG_FILE)
_VERSION_DIR = re.compile(r"^version_\d+$")

# Lower is better for these metric names, higher for the second list; matched against the last part of a tag
# ("val/rmse" -> "rmse"), also as a prefix or suffix ("loss_recon", "top1_acc").
_LOWER = ("loss", "rmse", "mse", "mae", "mape", "fid", "error", "err", "nll", "perplexity", "ppl", "bpd", "wer",
          "cer", "kl", "seconds", "memory")
_HIGHER = ("acc", "accuracy", "f1", "auroc", "auc", "ap", "map", "bleu", "precision", "recall", "iou", "r2", "psnr",
           "ssim", "samples_per_second", "score")


class Point(NamedTuple):
    step: int
    wall_time: float
    value: float


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a run as ``[(step, value), ...]`` in step order, merged over all its event files."""
    return {tag: [(p.step, p.value) for p in points] for tag, points in _load_events(Path(run_dir))[0].items()}


def last_scalars(run_dir: str | Path) -> dict[str, float]:
    """The last logged value of every scalar tag."""
    return {tag: points[-1][1] for tag, points in read_scalars(run_dir).items() if points}


def metric_mode(tag: str, plugin: str | None = None) -> str:
    """``"min"`` or ``"max"``: which way ``tag`` improves. The plugin's spec decides for its own monitor metric (and
    the same metric of another stage: ``test/acc`` goes the way of ``val/acc``); otherwise the name does."""
    name = tag.rpartition("/")[2].removesuffix("_best").lower()
    spec = _plugin_spec(plugin) if plugin else None
    if spec is not None and spec.monitor.rpartition("/")[2] == name:
        return spec.mode
    for mode, words in (("max", _HIGHER), ("min", _LOWER)):
        if name in words or any(name.startswith(w + "_") or name.endswith("_" + w) for w in words):
            return mode
    return "min"


def _plugin_spec(name: str):  # -> dlbench.Plugin | None, without failing on unknown, broken or ambiguous names
    from dlbench.core import registry

    found = [e.spec for e in registry.entries(registry.PLUGINS) if e.name == name and e.spec is not None]
    return found[0] if found else None


@dataclass
class Evaluation:
    """One ``dlbench validate|test|predict`` of a run: ``RUN_DIR/evaluations/<stage>_N/`` (older layouts: a
    ``version_N`` directory of its own, see :attr:`Run.evaluates`)."""

    path: Path
    stage: str
    checkpoint: str | None = None
    """The checkpoint it evaluated, as given on its command line."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The last value of every metric it logged."""
    status: str = ""
    """How it ended as Lightning said (``success``, ``failed``, ...); empty when it did not say."""

    @property
    def name(self) -> str:
        return self.path.name


def read_evaluation(folder: Path) -> Evaluation:
    """``evaluation.json`` of an evaluation folder, else the last values of its ``metrics.csv`` (one that stopped
    before it could write its record)."""
    try:
        record = json.loads((folder / "evaluation.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = {}
    record = record if isinstance(record, dict) else {}
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else _last_csv_values(folder)
    return Evaluation(path=folder, stage=str(record.get("stage") or folder.name.rpartition("_")[0] or "evaluation"),
                      checkpoint=record.get("checkpoint"), status=str(record.get("status") or ""),
                      metrics={k: float(v) for k, v in metrics.items()
                               if k not in ("epoch", "step") and isinstance(v, (int, float))})


def _last_csv_values(folder: Path) -> dict[str, float]:
    values: dict[str, float] = {}
    with contextlib.suppress(OSError, UnicodeDecodeError, csv.Error), open(folder / "metrics.csv", newline="") as file:
        for row in csv.DictReader(file):
            for key, text in row.items():
                with contextlib.suppress(TypeError, ValueError):  # an empty cell: not logged on this row
                    values[key] = float(text)
    return values


@dataclass
class Run:
    """One run directory read back: what it logged, how it was configured and how it ended."""

    path: Path
    status: str
    """finished, interrupted, running, killed, failed, corrupt, empty or unknown (no status.json)."""
    problem: str = ""
    """One line saying why the run failed or cannot be read completely; empty otherwise."""
    hparams: dict[str, Any] = field(default_factory=dict)
    """Flat hyperparameters as logged (``model/hidden_size``, ``data/batch_size``, ``seed``, ``plugin``, ...)."""
    scalars: dict[str, list[Point]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    """The metric tags of the run's HParams summary; the first is the checkpoint monitor."""
    info: dict[str, Any] = field(default_factory=dict)
    """``status.json`` as written by :class:`dlbench.train.callbacks.RunStatus`."""
    config_monitor: str | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    """Its ``evaluations/<stage>_N`` folders, in order."""
    evaluates: Path | None = None
    """Older layouts only, where validate/test wrote a ``version_N`` of their own: the run directory whose checkpoint
    this one evaluated (as its config named it: relative paths are relative to where the evaluation ran)."""

    @property
    def plugin(self) -> str:
        return str(self.hparams.get("plugin") or self.path.parent.name)

    @property
    def spec(self):  # -> dlbench.Plugin | None: the plugin's spec when it is installed
        return _plugin_spec(self.plugin)

    @property
    def linked_keys(self) -> set[str]:
        """The model arguments its plugin links from the datamodule: sizes and statistics of the data, no settings."""
        spec = self.spec
        return {f"model/{name}" for name in spec.link_names} if spec is not None else set()

    @property
    def data(self) -> str:
        """The dataset by the name a person knows it: its registry name (``sunspots``) or file (``prices.csv``)."""
        if self.hparams.get("dataset"):
            return str(self.hparams["dataset"])
        from dlbench.core.registry import dataset_label

        # Runs before the ``dataset`` hyperparameter: TensorBoard's HParams summary keeps None as the text "None".
        data = {k[5:]: None if v == "None" else v for k, v in self.hparams.items() if k.startswith("data/")}
        return dataset_label(str(self.hparams.get("data/class") or ""), data)

    @property
    def monitor(self) -> str | None:
        if self.metrics:
            return self.metrics[0]
        if self.config_monitor:
            return self.config_monitor
        spec = self.spec
        return spec.monitor if spec is not None else None

    def mode(self, tag: str) -> str:
        return metric_mode(tag, self.plugin)

    def final(self, tag: str | None) -> Point | None:
        points = self.scalars.get(tag or "")
        return points[-1] if points else None

    def best(self, tag: str | None) -> Point | None:
        """The first point at which ``tag`` reached its best value (NaN never counts)."""
        points = [p for p in self.scalars.get(tag or "", []) if not math.isnan(p.value)]
        if not points:
            return None
        pick = min if self.mode(tag) == "min" else max
        return pick(points, key=lambda p: p.value)  # min/max keep the first of equal values

    @property
    def epochs(self) -> int | None:
        if "epochs" in self.info:
            return int(self.info["epochs"])
        epoch = self.scalars.get("epoch")
        return int(max(p.value for p in epoch)) + 1 if epoch else None

    @property
    def steps(self) -> int | None:
        if "steps" in self.info:
            return int(self.info["steps"])
        steps = [p.step for points in self.scalars.values() for p in points]
        return max(steps) if steps else None

    @property
    def seconds(self) -> float | None:
        """Training wall time: ``train_seconds`` of status.json, else the span of the logged events."""
        if self.info.get("train_seconds") is not None:
            return float(self.info["train_seconds"])
        times = [p.wall_time for points in self.scalars.values() for p in points]
        return max(times) - min(times) if times else None

    @property
    def started(self) -> float | None:
        if self.info.get("started") is not None:
            return float(self.info["started"])
        times = [p.wall_time for points in self.scalars.values() for p in points]
        return min(times) if times else None

    @property
    def logged_params(self) -> int | None:
        point = self.final(PARAMS_TAG)
        return int(point.value) if point is not None else None

    def as_evaluation(self) -> Evaluation:
        """This run, an evaluation written in the older layout (:attr:`evaluates`), as an :class:`Evaluation`."""
        stages = {tag.partition("/")[0] for tag in self.scalars}
        stage = "test" if "test" in stages else "validate" if "val" in stages else "evaluation"
        checkpoint = _read_yaml(self.path / CONFIG_FILE).get("ckpt_path")
        metrics = {tag: points[-1].value for tag, points in self.scalars.items() if points and tag != "epoch"}
        return Evaluation(self.path, stage, checkpoint, metrics)


def is_run_dir(path: Path) -> bool:
    """A directory that dlbench (or any TensorBoard writer) logged a run into, or a claimed but empty version_N."""
    if not path.is_dir():
        return False
    if _VERSION_DIR.match(path.name):
        return True
    try:
        return any(f.name.startswith(EVENTS_PREFIX) or f.name in RUN_FILES for f in path.iterdir() if f.is_file())
    except OSError:
        return False


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories in or under each path (a log directory, a plugin directory or a run directory), in natural
    order (version_2 before version_10), each once."""
    found: dict[Path, None] = {}
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise DlbenchError(f"{root} does not exist. Give a log directory (lightning_logs), a plugin directory "
                               f"(lightning_logs/lstm) or a run directory (lightning_logs/lstm/version_0).")
        for run in sorted(_walk_runs(root), key=_natural):
            found.setdefault(run.resolve(), None)
    return list(found)


def _walk_runs(root: Path) -> Iterator[Path]:
    if is_run_dir(root):
        yield root
        return
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            if name.startswith(".") or name == "checkpoints" or name == EVALUATIONS_DIR:
                continue
            if is_run_dir(here / name):
                yield here / name
            else:
                keep.append(name)
        dirnames[:] = keep


class _DataLossLog(logging.Handler):
    """Collects TensorBoard's report of a damaged record. Its reader stops at the first truncated or corrupt record
    of a file and says so only in a debug log message, whose arguments are the file and the DataLossError."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.damaged: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        errors = [a for a in args if type(a).__name__ == "DataLossError"]
        if errors and args:
            message = str(errors[0]).replace(str(args[0]), "").strip() or type(errors[0]).__name__
            self.damaged.setdefault(str(args[0]), message)


@contextlib.contextmanager
def _capture_data_loss() -> Iterator[_DataLossLog]:
    logger = logging.getLogger("tensorboard")
    handler, level = _DataLossLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _load_events(run_dir: Path) -> tuple[dict[str, list[Point]], dict[str, bytes], dict[str, str]]:
    """Scalars, HParams plugin contents and damaged files of ``run_dir``'s event files, read by TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import (
        AUDIO,
        COMPRESSED_HISTOGRAMS,
        HISTOGRAMS,
        IMAGES,
        SCALARS,
        TENSORS,
        EventAccumulator,
    )

    # Keep every scalar; keep as little as possible of the bulky kinds, which compare never shows.
    guidance = {SCALARS: 0, IMAGES: 1, AUDIO: 1, HISTOGRAMS: 1, COMPRESSED_HISTOGRAMS: 1, TENSORS: 1}
    acc = EventAccumulator(str(run_dir), size_guidance=guidance)
    with _capture_data_loss() as log:
        acc.Reload()
    scalars = {tag: [Point(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)]
               for tag in acc.Tags().get(SCALARS, [])}
    try:
        hparams = dict(acc.PluginTagToContent("hparams"))
    except KeyError:  # no HParams summary in these files
        hparams = {}
    return scalars, hparams, log.damaged


def _parse_hparams(contents: dict[str, bytes]) -> tuple[dict[str, Any], list[str]]:
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    values: dict[str, Any] = {}
    metrics: list[str] = []
    raw = contents.get(metadata.SESSION_START_INFO_TAG)
    if raw:
        info = plugin_data_pb2.HParamsPluginData.FromString(raw).session_start_info
        for key, value in info.hparams.items():
            kind = value.WhichOneof("kind")
            values[key] = getattr(value, kind) if kind in ("number_value", "string_value", "bool_value") else None
    raw = contents.get(metadata.EXPERIMENT_TAG)
    if raw:
        experiment = plugin_data_pb2.HParamsPluginData.FromString(raw).experiment
        metrics = [m.name.tag for m in experiment.metric_infos]
    return values, metrics


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run(run_dir: str | Path) -> Run:
    """Everything :func:`find_runs` found in one run directory. Never raises for a damaged run: what cannot be read
    is reported in ``status`` and ``problem``."""
    path = Path(run_dir)
    info, status_problem = read_status(path / STATUS_FILE)
    run = Run(path=path, status=str(info.get("status") or "unknown"), info=info, problem=status_problem)
    if run.status == "running" and process_gone(info):
        run.status, run.problem = "killed", f"process {info.get('pid')} is gone; the run never finished"
    elif run.status == "failed":
        run.problem = str(info.get("error") or "")
    damaged: dict[str, str] = {}
    try:
        run.scalars, contents, damaged = _load_events(path)
        run.hparams, run.metrics = _parse_hparams(contents)
    except Exception as err:  # a reader failure must never stop a table of many runs
        run.status, run.problem = "corrupt", f"{type(err).__name__}: {err}"
    if not run.hparams and (path / HPARAMS_FILE).is_file():
        run.hparams = _flatten(_read_yaml(path / HPARAMS_FILE))
    config = _read_yaml(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else {}
    checkpoint_cfg = config.get("checkpoint")
    if not run.metrics and isinstance(checkpoint_cfg, dict) and isinstance(checkpoint_cfg.get("monitor"), str):
        run.config_monitor = checkpoint_cfg["monitor"]  # the monitor, for runs without an HParams summary
    run.evaluates = _evaluated_run(path, config, run)
    if run.evaluates is not None and run.status == "unknown":
        run.status = "evaluation"
    if (path / EVALUATIONS_DIR).is_dir():
        run.evaluations = [read_evaluation(p) for p in sorted((path / EVALUATIONS_DIR).iterdir(), key=_natural)
                           if p.is_dir()]
    if damaged and run.status != "running":  # a running run's last record may be half written: that is normal
        file, reason = next(iter(damaged.items()))
        run.status, run.problem = "corrupt", f"{Path(file).name}: {reason}"
    elif not run.scalars and not run.hparams and run.status == "unknown":
        run.status = "empty"
    return run


def _evaluated_run(path: Path, config: dict, run: Run) -> Path | None:
    """Older layouts wrote a validate/test as a ``version_N`` of its own: no status.json, no training scalars, and a
    config whose ``ckpt_path`` lies in another run's ``checkpoints/``. That other run, else None."""
    ckpt = config.get("ckpt_path")
    if not isinstance(ckpt, str) or (path / STATUS_FILE).exists() or any(t.startswith("train/") for t in run.scalars):
        return None
    folder = Path(ckpt).parent
    if folder.name != CHECKPOINT_DIR or folder.parent.resolve() == path.resolve():
        return None
    return folder.parent


def loose_evaluations(paths: Iterable[str | Path]) -> list[Evaluation]:
    """Evaluations written beside runs rather than inside one, under ``<log dir>/<plugin>/evaluations/`` (of a
    checkpoint outside any run, or of a run directory that could not be written)."""
    found: dict[Path, Evaluation] = {}
    for given in paths:
        for record in sorted(Path(given).glob(f"**/{EVALUATIONS_DIR}/**/evaluation.json"), key=_natural):
            folder = record.parent.resolve()
            holder = next(p for p in folder.parents if p.name == EVALUATIONS_DIR).parent
            if folder not in found and not is_run_dir(holder):
                found[folder] = read_evaluation(folder)
    return list(found.values())


def attach_evaluations(runs: list[Run], loose: Sequence[Evaluation] = ()) -> list[Run]:
    """Evaluations go under the run they evaluated: an older layout's ``version_N`` evaluation (then no longer a run
    of its own) and an evaluation written beside the runs, when that run is among ``runs``. Returns the runs left."""
    by_path = {run.path.resolve(): run for run in runs}

    def owner(run_dir: Path) -> Run | None:  # the evaluation may have run elsewhere: else match plugin/version_N
        found = by_path.get(run_dir.resolve())
        tail = [r for r in runs if r.path.parts[-2:] == run_dir.parts[-2:]] if found is None else [found]
        return tail[0] if len(tail) == 1 else None

    kept = []
    for run in runs:
        target = owner(run.evaluates) if run.evaluates is not None else None
        if target is not None and target is not run and target.evaluates is None:
            target.evaluations.append(run.as_evaluation())
        else:
            kept.append(run)
    for evaluation in loose:
        checkpoints = Path(evaluation.checkpoint or "").parent
        target = owner(checkpoints.parent) if checkpoints.name == CHECKPOINT_DIR else None
        if target is not None:
            target.evaluations.append(evaluation)
    return kept


def checkpoint_params(run_dir: str | Path) -> int | None:
    """Number of values in the state_dict of the run's last (else newest) checkpoint: parameters and buffers.

    Imports torch; the checkpoint is memory-mapped, so only its index is read, however large it is.
    """
    ckpts = Path(run_dir) / "checkpoints"
    candidates = [ckpts / "last.ckpt"] if (ckpts / "last.ckpt").is_file() else \
        sorted(ckpts.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True) if ckpts.is_dir() else []
    if not candidates:
        return None
    import torch

    try:
        checkpoint = torch.load(candidates[0], map_location="cpu", weights_only=True, mmap=True)
        state = checkpoint["state_dict"]
        return int(sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor)))
    except Exception:  # a corrupt or foreign checkpoint only means the count is unknown
        return None


def params_of(run: Run, allow_checkpoint: bool = True) -> tuple[int | None, str]:
    """The run's parameter count and where it came from: ``"logged"`` (the model/params scalar) or
    ``"checkpoint"`` (state_dict numel, buffers included), or ``(None, "")``."""
    if run.logged_params is not None:
        return run.logged_params, "logged"
    if allow_checkpoint:
        count = checkpoint_params(run.path)
        if count is not None:
            return count, "checkpoint"
    return None, ""
