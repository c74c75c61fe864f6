"""The LightningCLI subclass behind ``dlbench fit|validate|test``."""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
import shlex
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden

from dlbench.core.conventions import DEFAULT_SEED, using_log_root
from dlbench.core.conventions import VERSION as __version__
from dlbench.core.errors import DlbenchError, Interrupted
from dlbench.core.registry import dataset_label
from dlbench.runs.trained import check_fits, load_checkpoint
from dlbench.train.callbacks import (
    BestMetric,
    Checkpoint,
    CompileTimer,
    FiniteLossGuard,
    GracefulStop,
    NonFiniteLoss,
    RngState,
    RunStatus,
    skip_inherited_batch_hooks,
)
from dlbench.train.logger import EvaluationLogger, RunLogger
from dlbench.train.monitor import LearningRate, TrainingSpeed, WeightHistograms
from dlbench.train.predictor_state import SavePredictor
from dlbench.train.progress import progress_bar
from dlbench.train.results import results_block, score_lines
from dlbench.train.summary import ModelLine, SummaryMode
from dlbench.train.target import (
    Target,
    argument_error_text,
    key_line,
    linked_attributes,
    model_class_of,
    parse_target,
    trainer_defaults,
)
from dlbench.train.trainer import DlbenchTrainer

_QUIET = re.compile(r"^((GPU|TPU|HPU|IPU) available: False|Trainer already configured with model summary)")


class _NoAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not text.startswith("💡 Tip") and not _QUIET.match(text)


# Lightning's rank-zero messages all go through one logger object; drop its advertisement for a cloud service and
# its lines about accelerators the machine does not have ("TPU available: False" on a laptop), and its note that
# dlbench's own summary callback took the place of its default one.
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
for _name in _RANK_ZERO_LOGGERS:
    logging.getLogger(_name).addFilter(_NoAdverts())
# "Seed set to 42" would come before a mistake's one-line message; the seed is logged with the run's hyperparameters.
logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)


_CHECKPOINT_LOADED = re.compile(r"^(Restoring states from|Loaded model weights from) the checkpoint")


class _Drop(logging.Filter):
    def __init__(self, pattern: re.Pattern) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


@contextlib.contextmanager
def _held(pattern: re.Pattern):
    """Lightning's rank-zero messages matching ``pattern`` are dropped inside the block."""
    drop = _Drop(pattern)
    loggers = [logging.getLogger(name) for name in _RANK_ZERO_LOGGERS]
    for log in loggers:
        log.addFilter(drop)
    try:
        yield
    finally:
        for log in loggers:
            log.removeFilter(drop)


class RunConfig(SaveConfigCallback):
    """Saves ``config.yaml`` as LightningCLI does. A resume (``overwrite``) rewrites its own run's file, as the
    overrides of the resume may change it, but without what pins this process alone: the version directory it
    continues, TensorBoard's purge step and the checkpoint it started from. So a resumed run's ``config.yaml``
    reproduces it as a new run, as every other run's does."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.overwrite and not self.already_saved:
            config = self.config.clone()
            config.ckpt_path = None
            init_args = getattr(config.get("trainer", {}).get("logger"), "init_args", None)
            if init_args is not None:
                for key in ("version", "purge_step"):
                    if key in init_args:
                        init_args[key] = None
            self.config = config
        super().setup(trainer, pl_module, stage)


class DlbenchCLI(LightningCLI):
    """LightningCLI with dlbench's defaults: checkpoints on the plugin's monitor, links from data to model,
    a TensorBoard run per plugin, and a test of the best checkpoint after ``fit``."""

    def __init__(self, target: Target, **kwargs: Any) -> None:
        self.target = target
        self.plugin_model_class = model_class_of(target)
        super().__init__(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        plugin = self.target.plugin
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": plugin.monitor if plugin else "val/loss",
            "checkpoint.mode": plugin.mode if plugin else "min",
            "checkpoint.save_last": True,
            "checkpoint.filename": "best-epoch={epoch}-step={step}",
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_argument("--summary", type=SummaryMode, default="line",
                            help="fit only: the model when training starts, as one line (class, parameters, size, "
                                 "FLOPs a sample), as Lightning's table of layers (full) or not at all (off)")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="fit only: test the best checkpoint on the test split when training ends")
        parser.add_argument("--weight_histograms", type=int, default=0,
                            help="write a histogram of every weight to TensorBoard every N epochs (0: never)")
        parser.add_argument("--log_graph", type=bool, default=True,
                            help="trace the model once on its example_input_array and show the computation graph in "
                                 "TensorBoard's Graphs tab (a model that cannot be traced is skipped with a warning)")
        parser.add_argument("--compile", type=bool, default=False,
                            help="compile the model's forward with torch.compile (compile time is logged apart as "
                                 "train/compile_seconds)")
        parser.add_argument("--compile_mode", type=Literal["default", "reduce-overhead", "max-autotune"],
                            default="default",
                            help="torch.compile's mode with --compile true: reduce-overhead captures forward and "
                                 "backward of each step as CUDA graphs (on a GPU: one replay instead of a launch a "
                                 "kernel; for fixed batch shapes)")
        for attr in linked_attributes(plugin, self.plugin_model_class):
            parser.link_arguments(f"data.{attr}", f"model.init_args.{attr}", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:
            # jsonargparse wraps what a plugin's __init__ raised in its own union-type text; show the plugin's words.
            chain = _exception_chain(err)
            own = next((e for e in chain if isinstance(e, DlbenchError)), None)
            if own is not None:
                raise own from None
            original = chain[-1]
            if isinstance(original, (ValueError, TypeError)):
                raise DlbenchError(f"invalid argument for {self.target.name}: {original}. Fix the value (see "
                                   f"'dlbench info {self.target.name}' for every argument and its default).") from err
            raise

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_trainer_values(config.get("trainer") or {})
        if self.subcommand == "fit" and not self.target.resuming:
            self._unpin_existing_version(config)

    def _unpin_existing_version(self, config) -> None:
        """``dlbench fit --config`` of a config that pins the version directory of an existing run (a resumed run's
        config.yaml written before dlbench stopped saving the pin) starts a new run instead of writing into it."""
        init_args = getattr((config.get("trainer") or {}).get("logger"), "init_args", None)
        version = init_args.get("version") if init_args is not None else None
        if version is None:
            return
        folder = Path(str(init_args.get("save_dir") or ".")) / str(init_args.get("name") or "") / (
            version if isinstance(version, str) else f"version_{version}")
        if folder.exists():
            init_args["version"] = None
            if "purge_step" in init_args:
                init_args["purge_step"] = None
            print(f"dlbench: the config pins the run directory {folder}, which exists; this fit starts a new run "
                  f"(to continue that run: dlbench fit --resume {folder}).", file=sys.stderr)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> L.Trainer:
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        if self.subcommand not in (None, "fit"):
            # Evaluating is not training: no checkpoint callback (it would adopt the checkpoint's own directory and
            # warn that it changed), nothing that writes a run's status, only the progress bar.
            callbacks[:] = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
            config["enable_checkpointing"] = False
            if config.get("enable_progress_bar", True) is not False and not any(
                    isinstance(c, ProgressBar) for c in [*(config.get("callbacks") or []), *callbacks]):
                callbacks.append(progress_bar())
            return _trainer_or_error(super()._instantiate_trainer, config, callbacks)
        checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
        if isinstance(checkpoint, Checkpoint):
            checkpoint.resuming = self.target.resuming
        if checkpoint is not None and checkpoint.monitor:
            callbacks.append(BestMetric(checkpoint.monitor, checkpoint.mode))
        callbacks += [FiniteLossGuard(), RunStatus(), GracefulStop(), RngState(), TrainingSpeed(), LearningRate(),
                      SavePredictor()]
        if cfg.get("weight_histograms"):
            callbacks.append(WeightHistograms(every_n_epochs=cfg["weight_histograms"]))
        configured = config.get("callbacks") or []
        if config.get("enable_model_summary") is not False and not any(
                isinstance(c, ModelSummary) for c in [*configured, *callbacks]):
            callbacks.append(ModelLine(cfg.get("summary") or "line"))
        wants_bar = config.get("enable_progress_bar", True) is not False
        if wants_bar and not any(isinstance(c, ProgressBar) for c in [*configured, *callbacks]):
            callbacks.append(progress_bar())
        trainer = _trainer_or_error(super()._instantiate_trainer, config, callbacks)
        skip_inherited_batch_hooks(trainer.callbacks)
        if isinstance(trainer.logger, RunLogger) and cfg.get("log_graph") is False:
            trainer.logger.graph_enabled = False
        return trainer

    def _run_params(self) -> dict[str, Any]:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_cfg = config.get("trainer", {})
        trainer_params = {k: v for k, v in trainer_cfg.items() if isinstance(v, (int, float, str, bool))}
        return {
            "plugin": self.target.name,
            "plugin_dist": f"{self.target.dist} {self.target.dist_version}",
            "dlbench_version": __version__,
            "dataset": dataset_label(f"{type(self.datamodule).__module__}.{type(self.datamodule).__qualname__}",
                                     dict(self.datamodule.hparams_initial)) if self.datamodule is not None else "",
            "seed": config.get("seed_everything"),
            "model": {"class": type(self.model).__qualname__, **_public(self.model.hparams_initial)},
            "data": {"class": type(self.datamodule).__qualname__,
                     **(_public(self.datamodule.hparams_initial) if self.datamodule is not None else {})},
            "trainer": trainer_params,
        }

    def _before(self) -> None:
        if isinstance(self.trainer.logger, RunLogger):
            self.trainer.logger.run_params = self._run_params()

    before_validate = before_test = before_predict = _before

    def _metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}

    def _print_results(self) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        ckpt = trainer.checkpoint_callback
        logger = trainer.logger
        print(results_block(self.target.plugin, self._metrics(), ckpt.best_model_path if ckpt is not None else None,
                            logger.log_dir if logger is not None else None,
                            logger.save_dir if logger is not None else None), file=sys.stderr)

    def _after_evaluation(self) -> None:
        logger = self.trainer.logger
        if self.subcommand == "test" and self.trainer.is_global_zero:
            lines = score_lines(self.target.plugin, self._metrics())
            if any(line.lstrip().startswith("verdict") for line in lines):
                print("\n".join(lines[:3]), file=sys.stderr)
        if isinstance(logger, EvaluationLogger) and self.trainer.is_global_zero:
            source = f" of {self.target.evaluates}" if self.target.evaluates else ""
            print(f"dlbench: {self.subcommand}{source} written to {logger.log_dir} (evaluation.json, metrics.csv, "
                  f"config.yaml); the run itself is unchanged.", file=sys.stderr)

    after_validate = after_test = after_predict = _after_evaluation

    def before_fit(self) -> None:
        self._before()
        if self.config_init["fit"].get("compile"):
            import torch

            # Compiling forward in place keeps the LightningModule (hooks, hparams, checkpoints) as it is.
            mode = self.config_init["fit"].get("compile_mode") or "default"
            self.model.forward = torch.compile(self.model.forward, mode=mode)
            self.trainer.callbacks.append(CompileTimer())

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters into the config before building the model; check the
        # file first, and keep a checkpoint of another model from silently swapping the model class.
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path in (None, "best", "last", "hpc", "registry"):
            return
        self._checkpoint = load_checkpoint(path, self.config[subcommand].get("weights_only"))
        saved_class = self._checkpoint.get("hyper_parameters", {}).get("_class_path")
        wanted = self.config[subcommand].get("model", {}).get("class_path")
        if saved_class and wanted and saved_class != wanted:
            raise DlbenchError(f"checkpoint {path} does not fit {wanted.rpartition('.')[2]}: it was saved by "
                               f"{saved_class}. Use a checkpoint of the same plugin, or choose the plugin that wrote "
                               f"it with --model.")
        self._check_overrides(path, self._checkpoint.get("hyper_parameters") or {})
        with contextlib.suppress(pickle.UnpicklingError):  # --weights_only false: Lightning's own look stays safe
            super()._parse_ckpt_path()

    def _check_overrides(self, path: str, saved: dict[str, Any]) -> None:
        """Refuse ``--model.X`` (or ``--data.X`` linked into the model) typed on the command line that contradicts
        the value the checkpoint was trained with: Lightning would silently rebuild the checkpoint's model instead."""
        subcommand = self.config["subcommand"]
        model_args = self.config[subcommand].get("model", {}).get("init_args") or {}
        linked = set(linked_attributes(self.target.plugin, self.plugin_model_class)) \
            if self.plugin_model_class is not None else set()
        for key, typed in self.target.explicit.items():
            section, _, name = key.partition(".")
            if name not in saved or (section == "data" and name not in linked) or "." in name:
                continue
            given = model_args.get(name, typed) if section == "model" else typed
            if not _same_value(given, saved[name]):
                raise DlbenchError(
                    f"--{key} {typed} contradicts the checkpoint {path}, which was trained with {name}="
                    f"{saved[name]!r}: the checkpoint's weights are those of {name}={saved[name]!r}, so dlbench "
                    f"would evaluate that model, not yours. Drop --{key} to use the checkpoint as it is, or train a "
                    f"new run with it (dlbench fit ... --{key} {typed}).")

    def _run_subcommand(self, subcommand: str) -> None:
        if getattr(self, "_checkpoint", None) is not None:
            check_fits(self.config_init[subcommand]["ckpt_path"], self._checkpoint, self.model)
            self._checkpoint = None
        check_log_dir(self.trainer)
        try:
            super()._run_subcommand(subcommand)
        except DlbenchError:
            raise
        except (SIGTERMException, SystemExit, KeyboardInterrupt) as stop:
            if self.trainer.state.status != TrainerStatus.INTERRUPTED:
                raise
            raise Interrupted(self._interrupted_message()) from stop
        except NonFiniteLoss as err:
            ckpt = self.trainer.checkpoint_callback
            last = (ckpt.last_model_path or ckpt.best_model_path) if ckpt is not None else ""
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
            lr = self.model.hparams.get("lr") if hasattr(self.model, "hparams") else None
            lower = f"a smaller --model.lr (now {lr:g}; try {lr / 10:g} or below)" if isinstance(lr, (int, float)) \
                and lr > 0 else "a smaller learning rate (--model.lr)"
            raise DlbenchError(f"{err}; training stopped and {kept}. Train again with {lower}, or clip gradients "
                               f"(--trainer.gradient_clip_val 1.0).") from err
        except Exception as err:
            where = f"epoch {self.trainer.current_epoch}, step {self.trainer.global_step}"
            log_dir = self.trainer.logger.log_dir if self.trainer.logger is not None else None
            kept = f" Logs and checkpoints written so far are in {log_dir}." if log_dir else ""
            reason = str(err).rstrip(".")
            raise DlbenchError(f"{subcommand} failed at {where}: {type(err).__name__}: {reason}.{kept} Run again "
                               f"with --debug for the full traceback.", exit_code=1) from err

    def _interrupted_message(self) -> str:
        stop = next((c for c in self.trainer.callbacks if isinstance(c, GracefulStop)), None)
        log_dir = self.trainer.logger.log_dir if self.trainer.logger is not None else None
        saved = f"; checkpoint saved to {stop.checkpoint_path}" if stop and stop.checkpoint_path else ""
        resume = f" Resume with: dlbench fit --resume {shlex.quote(str(log_dir))}" if log_dir and saved else ""
        total = f"/{self.trainer.max_epochs}" if self.trainer.max_epochs and self.trainer.max_epochs > 0 else ""
        return (f"training interrupted during epoch {self.trainer.current_epoch + 1}{total}, at step "
                f"{self.trainer.global_step}{saved}.{resume}")

    def after_fit(self) -> None:
        config = self.config_init["fit"]
        if self.trainer.interrupted or not config.get("test_after_fit", True) or self.datamodule is None:
            return
        if not is_overridden("test_dataloader", self.datamodule) or not is_overridden("test_step", self.model):
            return
        ckpt = "best" if (self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path) \
            else None
        with _held(_CHECKPOINT_LOADED):  # the Results block names the checkpoint the test used
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
        self._print_results()


def _same_value(given: Any, saved: Any) -> bool:
    """Whether a command-line value equals a saved hyperparameter (``"64"`` and ``64``, ``[32, 16]`` and
    ``(32, 16)`` are the same)."""
    if isinstance(given, str) and not isinstance(saved, str):
        try:
            given = yaml.safe_load(given)
        except yaml.YAMLError:
            return False
    if isinstance(given, (list, tuple)) and isinstance(saved, (list, tuple)):
        return len(given) == len(saved) and all(_same_value(a, b) for a, b in zip(given, saved, strict=True))
    if isinstance(given, (int, float)) and isinstance(saved, (int, float)) and not isinstance(given, bool):
        return float(given) == float(saved)
    return given == saved


def check_trainer_values(trainer: Any) -> None:
    """The Trainer values Lightning would refuse only later (some after a model and data were built, some with a
    50-line traceback), checked before anything is built: epochs and steps, devices, and an accelerator that this
    machine has."""
    def bad(key: str, value: Any, why: str) -> DlbenchError:
        return DlbenchError(f"--trainer.{key} {value}: {why}. Fix the value (dlbench fit --model NAME --help lists "
                            f"the Trainer's options).")

    for key, low in (("max_epochs", -1), ("min_epochs", 0), ("max_steps", -1), ("min_steps", 0)):
        value = trainer.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            why = (f"{key} must be -1 (no limit) or a number >= 0" if low == -1 else f"{key} must be >= 0")
            raise bad(key, value, why)
    devices = trainer.get("devices")
    if isinstance(devices, str) and re.fullmatch(r"\s*-?\d+\s*", devices):
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and (devices == 0 or devices < -1):
        raise bad("devices", devices, "devices is a count >= 1, -1 for every device, a list of device indices or "
                                      "'auto'")
    if isinstance(devices, str) and devices != "auto" and not re.fullmatch(r"-1|\d+|\d+(,\d+)*,?", devices.strip()):
        raise bad("devices", devices, "devices is a count >= 1, -1 for every device, a list of device indices such "
                                      "as '0,1', or 'auto'")
    accelerator = trainer.get("accelerator")
    if isinstance(accelerator, str) and accelerator != "auto":
        from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

        have = {"cuda": CUDAAccelerator.is_available(), "mps": MPSAccelerator.is_available()}
        have["gpu"] = have["cuda"] or have["mps"]
        if accelerator in have and not have[accelerator]:
            import torch

            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise DlbenchError(f"--trainer.accelerator {accelerator}: this machine has no {accelerator.upper()} that "
                               f"torch can use (torch {torch.__version__} is {build}). Leave the accelerator out "
                               f"(auto picks what is there) or use --trainer.accelerator cpu.")
        if have["cuda"] and accelerator in ("gpu", "cuda") and isinstance(devices, int) and devices > 0:
            import torch

            if devices > torch.cuda.device_count():
                raise bad("devices", devices, f"this machine has {torch.cuda.device_count()} CUDA device(s)")


def _trainer_or_error(make: Any, config: dict[str, Any], callbacks: list) -> L.Trainer:
    """The Trainer; what Lightning refuses in its settings is one message, not a traceback from inside it."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return make(config, callbacks)
    except (MisconfigurationException, ValueError) as err:
        reason = str(err).strip().splitlines()[0].rstrip(".")
        raise DlbenchError(f"the Trainer refused these settings: {reason}. Fix the --trainer.* value (dlbench fit "
                           f"--model NAME --help lists them).") from err


def _exception_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def check_log_dir(trainer: L.Trainer) -> None:
    """Fail before training when the run directory cannot be written, not after an epoch of work."""
    logger = trainer.logger
    if logger is None or not trainer.is_global_zero:
        return
    root = Path(logger.save_dir or ".")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".dlbench-write-test-"):
            pass
    except OSError as err:
        raise DlbenchError(f"cannot write runs under {root}: {err.strerror}. Run from a writable directory or set "
                           f"DLBENCH_LOG_DIR to one.") from None


def _public(hparams: Any) -> dict[str, Any]:
    """Hyperparameters without LightningCLI's private bookkeeping keys (``_class_path``, ``_instantiator``)."""
    return {k: v for k, v in dict(hparams).items() if not k.startswith("_")}


def make_cli(target: Target, args: list[str], run: bool = True) -> DlbenchCLI:
    """The CLI object for ``target``; with ``run=False`` it only builds model, datamodule and trainer (tests)."""
    # dlbench hands LightningCLI the translated command line on purpose; its warning about args beside sys.argv
    # does not apply. Plugins log per epoch, so the warning about few batches per logging interval does not either.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates, once a loop: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    # An evaluation loads the weights of a checkpoint, not the training callbacks that wrote it (on purpose).
    warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint need to be provided.*")
    prog = f"dlbench {args[0] if run else 'fit'} --model {target.name}"
    try:
        return DlbenchCLI(
            target,
            model_class=L.LightningModule,
            trainer_class=DlbenchTrainer,
            datamodule_class=L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=DEFAULT_SEED,
            trainer_defaults=trainer_defaults(target),
            parser_kwargs={"exit_on_error": False, "prog": prog},
            save_config_callback=RunConfig,
            save_config_kwargs={"overwrite": target.resuming},
            args=args,
            run=run,
        )
    except ArgumentError as err:
        text = argument_error_text(str(err))
        where = ""
        key = re.match(r"(?:unknown argument )?--([\w.]+)", text)
        if key and target.config_files:
            found = key_line(target.config_files, key.group(1))
            where = f" (set in {found})" if found else ""
        raise DlbenchError(f"bad argument: {text}{where}. "
                           f"Run 'dlbench info {target.name}' or '{prog} --help' for the accepted arguments.") from err


def build_cli(subcommand: str, target: Target) -> int:
    make_cli(target, [subcommand, *target.args])
    return 0


def build(name: str, *args: str, log_dir: Path | None = None):
    """Model, datamodule and trainer of plugin ``name`` as ``dlbench fit --model name ARGS`` would make them, runs
    logged under ``log_dir`` (default ``./lightning_logs``); nothing is trained."""
    root = log_dir or Path.cwd() / "lightning_logs"
    # default_root_dir: fast_dev_run turns the logger off, and checkpoints would otherwise land in the cwd.
    target = parse_target("fit", ["--model", name, "--trainer.default_root_dir", str(root), *args])
    with using_log_root(root):
        cli = make_cli(target, target.args, run=False)
    return cli.model, cli.datamodule, cli.trainer
