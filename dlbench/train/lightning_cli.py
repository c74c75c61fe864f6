"""The LightningCLI subclass behind ``dlbench fit|validate|test|predict``."""

from __future__ import annotations

import contextlib
import logging
import pickle
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden

from dlbench.core.conventions import DEFAULT_SEED, using_log_root
from dlbench.core.conventions import VERSION as __version__
from dlbench.core.errors import DlbenchError
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
from dlbench.train.logger import RunLogger
from dlbench.train.monitor import LearningRate, TrainingSpeed, WeightHistograms
from dlbench.train.progress import progress_bar
from dlbench.train.target import (
    Target,
    argument_error_text,
    linked_attributes,
    model_class_of,
    parse_target,
    trainer_defaults,
)
from dlbench.train.trainer import DlbenchTrainer


class _NoAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


# Lightning's rank-zero messages all go through one logger object; drop its advertisement for a cloud service.
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoAdverts())


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

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> L.Trainer:
        checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
        if checkpoint is not None and checkpoint.monitor:
            callbacks.append(BestMetric(checkpoint.monitor, checkpoint.mode))
        callbacks += [FiniteLossGuard(), RunStatus(), GracefulStop(), RngState(), TrainingSpeed(), LearningRate()]
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        if cfg.get("weight_histograms"):
            callbacks.append(WeightHistograms(every_n_epochs=cfg["weight_histograms"]))
        configured = config.get("callbacks") or []
        wants_bar = config.get("enable_progress_bar", True) is not False
        if wants_bar and not any(isinstance(c, ProgressBar) for c in [*configured, *callbacks]):
            callbacks.append(progress_bar())
        trainer = super()._instantiate_trainer(config, callbacks)
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
        with contextlib.suppress(pickle.UnpicklingError):  # --weights_only false: Lightning's own look stays safe
            super()._parse_ckpt_path()

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
            raise DlbenchError(self._interrupted_message(), exit_code=130) from stop
        except NonFiniteLoss as err:
            ckpt = self.trainer.checkpoint_callback
            last = (ckpt.last_model_path or ckpt.best_model_path) if ckpt is not None else ""
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
            raise DlbenchError(f"{err}; training stopped and {kept}. Lower the learning rate (--model.lr) or clip "
                               f"gradients (--trainer.gradient_clip_val 1.0).", exit_code=1) from err
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
        resume = f" Resume with: dlbench fit --resume {log_dir}" if log_dir and saved else ""
        return (f"training interrupted at epoch {self.trainer.current_epoch}, step {self.trainer.global_step}"
                f"{saved}.{resume}")

    def after_fit(self) -> None:
        config = self.config_init["fit"]
        if self.trainer.interrupted or not config.get("test_after_fit", True) or self.datamodule is None:
            return
        if not is_overridden("test_dataloader", self.datamodule) or not is_overridden("test_step", self.model):
            return
        ckpt = "best" if (self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path) \
            else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
        _print_summary(self.trainer)


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


def _print_summary(trainer: L.Trainer) -> None:
    if not trainer.is_global_zero:
        return
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    lines = [f"  {k:<28} {v:.6g}" for k, v in sorted(metrics.items())]
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.best_model_path:
        lines.append(f"  {'best checkpoint':<28} {ckpt.best_model_path}")
    if trainer.logger is not None and trainer.logger.log_dir:
        lines.append(f"  {'run directory':<28} {trainer.logger.log_dir}")
        lines.append(f"  see it in TensorBoard:       tensorboard --logdir {trainer.logger.save_dir}")
    print("\nResults\n" + "\n".join(lines), file=sys.stderr)


def make_cli(target: Target, args: list[str], run: bool = True) -> DlbenchCLI:
    """The CLI object for ``target``; with ``run=False`` it only builds model, datamodule and trainer (tests)."""
    # dlbench hands LightningCLI the translated command line on purpose; its warning about args beside sys.argv
    # does not apply. Plugins log per epoch, so the warning about few batches per logging interval does not either.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates, once a loop: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
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
            save_config_kwargs={"overwrite": target.resuming},
            args=args,
            run=run,
        )
    except ArgumentError as err:
        raise DlbenchError(f"bad argument: {argument_error_text(str(err))}. "
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
