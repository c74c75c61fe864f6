"""``dlbench fit|validate|test|predict``: a plugin's classes handed to LightningCLI with dlbench's defaults.

The plugin and dataset names on the command line are translated into class paths, so the rest is plain
LightningCLI: ``--config``, ``--print_config``, dotted overrides validated against typed signatures, and a saved
``config.yaml`` with full class paths that reproduces the run on its own.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import socket
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from dlbench.core import registry
from dlbench.core.conventions import DEBUG_ENV, LAST_CHECKPOINT, log_root
from dlbench.core.errors import DlbenchError
from dlbench.core.spec import Plugin, class_path, import_ref
from dlbench.runs.directory import RunDir, pid_alive

SUBCOMMANDS = ("fit", "validate", "test", "predict")
_MODEL, _DATA = object(), object()  # placeholders for the values of --model and --data while the line is read


@dataclass
class Target:
    """What a command line asks to run, before anything heavy is imported."""

    name: str
    """Run directory name under lightning_logs/: the plugin's name."""
    plugin: Plugin | None
    dist: str
    dist_version: str
    args: list[str]
    """The arguments for LightningCLI, with registry names replaced by class paths."""
    resuming: bool = False
    """True for ``fit --resume``: the run directory and its config.yaml are reused."""
    done: str | None = None
    """Set when there is nothing to run (resuming a finished run): the message to print instead."""


def _option_value(args: list[str], i: int, flag: str) -> tuple[str | None, int]:
    """If ``args[i]`` is ``flag VALUE`` or ``flag=VALUE``, return (VALUE, items consumed)."""
    arg = args[i]
    if arg == flag:
        if i + 1 >= len(args):
            raise DlbenchError(f"{flag} needs a value, e.g. {flag} {'lstm' if flag == '--model' else 'NAME'}.")
        return args[i + 1], 2
    if arg.startswith(flag + "="):
        return arg[len(flag) + 1 :], 1
    return None, 0


def _is_class_path(value: str) -> bool:
    return "." in value and ":" not in value and not value.lstrip().startswith("{")


def _config_model_class(config_files: list[str]) -> str | None:
    """The ``model.class_path`` a config file names, if any (the last file that names one wins)."""
    found = None
    for path in config_files:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise DlbenchError(f"cannot read config file {path}: {err.strerror}. Check the path.") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise DlbenchError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]} "
                               f"({getattr(err, 'problem_mark', '')}). Fix the file.".replace(" ()", "")) from None
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and isinstance(model.get("class_path"), str):
            found = model["class_path"]
        elif isinstance(model, str):
            found = model
    return found


def resume_args(run_dir: str) -> tuple[list[str], str | None]:
    """Arguments that continue the run in ``run_dir`` from its last checkpoint, logging into the same directory;
    or, for a finished run, no arguments and the message saying so."""
    run = RunDir(Path(run_dir))
    if not run.path.is_dir():
        raise DlbenchError(f"run directory {run.path} does not exist. --resume takes a run directory such as "
                           f"lightning_logs/lstm/version_0.")
    if not run.config_file.is_file():
        raise DlbenchError(f"{run.path} has no config.yaml, so it is not a dlbench run directory (or it stopped "
                           f"before training began). Start the run again instead.")
    config = run.config_file
    status = run.status()
    if status.get("status") == "finished":
        return [], (f"run {run.path} already finished ({status.get('epochs', '?')} epochs, {status.get('steps', '?')} "
                    f"steps); nothing to resume. To train it further: dlbench fit --config {config} "
                    f"--ckpt_path {run.checkpoint_dir / LAST_CHECKPOINT} --trainer.max_epochs N")
    pid = int(status.get("pid", -1))
    if status.get("status") == "running" and status.get("host") == socket.gethostname() and pid_alive(pid) \
            and pid != os.getpid():
        raise DlbenchError(f"run {run.path} is still running (process {pid}); stop it first (Ctrl-C or kill {pid}), "
                           f"then resume.")
    last = run.last_checkpoint
    if last is None:
        raise DlbenchError(f"run {run.path} has no checkpoint to resume from (it stopped before its first epoch "
                           f"ended). Start it again with: dlbench fit --config {config}")
    logger = run.config().get("trainer", {}).get("logger")
    if not isinstance(logger, dict) or "class_path" not in logger:
        raise DlbenchError(f"run {run.path} was not logged with a TensorBoard logger, so it cannot continue in place. "
                           f"Use dlbench fit --config {config} --ckpt_path {last} instead.")
    import torch

    step = int(torch.load(last, map_location="cpu", weights_only=True).get("global_step", 0))
    # Same directory, same version; TensorBoard discards events of the dead process logged after the checkpoint.
    logger["init_args"] = {**logger.get("init_args", {}), "save_dir": str(run.path.parent.parent),
                           "name": run.path.parent.name, "version": run.path.name, "purge_step": step + 1}
    return ["--config", str(config), "--ckpt_path", str(last), "--trainer.logger", json.dumps(logger)], None


def _take_option(args: list[str], flag: str) -> tuple[str | None, list[str]]:
    """The value of the first ``flag VALUE`` / ``flag=VALUE`` in ``args``, and ``args`` without it."""
    for i in range(len(args)):
        value, used = _option_value(args, i, flag)
        if used:
            return value, args[:i] + args[i + used :]
    return None, args


def run_args(subcommand: str, args: list[str]) -> list[str]:
    """``--run RUN_DIR`` becomes the run's own config file, and ``--ckpt_path best|last`` the run's file of that
    name, whenever the command points at a run (``--run`` or ``--config RUN_DIR/config.yaml``): a run trained in
    another process is evaluated by name, as Lightning does only inside the process that trained it."""
    run_dir, args = _take_option(args, "--run")
    run = None
    if run_dir is not None:
        if subcommand == "fit":
            raise DlbenchError("--run goes with validate, test and predict; to continue training a run use "
                               "dlbench fit --resume RUN_DIR.")
        run = RunDir.of(run_dir)
        if not run.config_file.is_file():
            raise DlbenchError(f"{run_dir} is not a run directory: it has no config.yaml. --run takes a directory "
                               f"such as lightning_logs/lstm/version_0.")
        args = ["--config", str(run.config_file), *args]
    ckpt, rest = _take_option(args, "--ckpt_path")
    if run is None:
        configs = [v for i in range(len(args)) for flag in ("--config", "-c")
                   for v, used in [_option_value(args, i, flag)] if used]
        found = [r for r in map(RunDir.of_config, configs) if r is not None]
        run = found[-1] if found else None
    if run is not None and (ckpt in ("best", "last") or ckpt is None and run_dir is not None):
        return [*rest, "--ckpt_path", str(run.checkpoint(ckpt or "best"))]
    if ckpt in ("best", "last") and subcommand != "fit":
        raise DlbenchError(f"--ckpt_path {ckpt} needs the run it belongs to: add --run "
                           f"lightning_logs/<plugin>/version_N (or --config of that run's config.yaml), or give the "
                           f"checkpoint file itself.")
    return args


def parse_target(subcommand: str, args: list[str]) -> Target:
    """Translate ``--model NAME`` / ``--data NAME`` into class paths and find the plugin the run belongs to."""
    resume = None
    for i in range(len(args)):
        value, used = _option_value(args, i, "--resume")
        if used:
            if subcommand != "fit":
                raise DlbenchError("--resume goes with fit: dlbench fit --resume RUN_DIR")
            resume, args = value, args[:i] + args[i + used :]
            break
    if resume is None:
        args = run_args(subcommand, args)
    if resume is not None:
        extra, done = resume_args(resume)
        if done:
            return Target(name="", plugin=None, dist="", dist_version="", args=[], done=done)
        target = parse_target(subcommand, extra + args)
        target.resuming = True
        return target
    out: list[Any] = []
    model_arg = data_arg = None
    configs: list[str] = []
    i = 0
    while i < len(args):
        for flag in ("--model", "--data", "--config", "-c"):
            value, used = _option_value(args, i, flag)
            if used:
                break
        if not used:
            out.append(args[i])
            i += 1
            continue
        if flag == "--model":
            model_arg = value
            out += ["--model", _MODEL]
        elif flag == "--data":
            data_arg = value
            out += ["--data", _DATA]
        else:
            configs.append(value)
            out += ["--config", value]
        i += used

    entry = None
    if model_arg is not None and not _is_class_path(model_arg):
        entry = registry.resolve(registry.PLUGINS, model_arg)
        model_cp = class_path(entry.spec.model)
    else:
        model_cp = model_arg or _config_model_class(configs)
        if model_cp is None:
            raise DlbenchError(f"which model? Say 'dlbench {subcommand} --model NAME' (see 'dlbench list'), or give a "
                               f"--config file that has a model.class_path.")
        entry = registry.entry_for_model_class(model_cp)
    plugin = entry.spec if entry else None

    data_cp = None
    if data_arg is not None and not _is_class_path(data_arg):
        dataset = registry.dataset(data_arg)
        if plugin is not None and dataset.data_kind != plugin.data_kind:
            raise DlbenchError(
                f"model {plugin.name!r} and data {dataset.name!r} do not fit: {plugin.name} expects {plugin.data_kind} "
                f"data, {dataset.name} is {dataset.data_kind} data. Pick a dataset of kind {plugin.data_kind!r} "
                f"('dlbench list --datasets') or a model for {dataset.data_kind!r} data.")
        data_cp = class_path(dataset.datamodule)
    elif data_arg is not None:
        data_cp = data_arg

    args_out = [model_cp if a is _MODEL else data_cp if a is _DATA else a for a in out]
    front: list[str] = []
    if data_arg is None and plugin is not None:
        front += ["--data", class_path(plugin.datamodule)]
    name = plugin.name if plugin else model_cp.rpartition(".")[2].lower()
    dist, dist_version = (entry.dist, entry.version) if entry else ("?", "?")
    return Target(name=name, plugin=plugin, dist=dist, dist_version=dist_version, args=front + args_out)


def _own_version() -> str:
    try:
        return version("dlbench")
    except PackageNotFoundError:
        return "0+unknown"


def _type_name(text: str) -> str:
    text = re.sub(r"<class '(?:builtins\.)?([\w.]+)'>", r"\1", text)
    return re.sub(r"typing\.Literal\[(.*)\]", r"one of \1", text)


def argument_error_text(message: str) -> str:
    """One sentence from jsonargparse's nested union errors: which argument, what was given, what is expected."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    key = ".".join(keys)
    unknown = re.search(r"Option '([^']+)' is not accepted", message)
    if unknown:
        return f"unknown argument --{key + '.' if key else ''}{unknown.group(1)}"
    got = re.search(r"Expected a (.+?)\. Got value: (.*)", message)
    if got:
        expected, value = [got.group(1)], got.group(2)
    else:
        expected = [e for e in re.findall(r"- Expected a (.+)", message) if "NoneType" not in e]
        nested = re.search(r"NestedArg\(key='[^']*', val='([^']*)'\)", message)
        given = re.search(r"Given value: (.*)", message)
        value = nested.group(1) if nested else given.group(1) if given else None
    if key and expected:
        return f"--{key} got {value!r}, expected {' or '.join(_type_name(e) for e in expected)}"
    return message.strip().splitlines()[0]


def linked_attributes(plugin: Plugin | None, model_class: type) -> list[str]:
    """Model ``__init__`` arguments the data provides (see :data:`dlbench.core.spec.DATA_KINDS`)."""
    if plugin is None:
        return []
    params = inspect.signature(model_class.__init__).parameters
    return [a for a in plugin.link_names if a in params]


def trainer_defaults(target: Target) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "logger": {"class_path": "dlbench.train.logger.RunLogger",
                   "init_args": {"save_dir": log_root(), "name": target.name}},
        "log_every_n_steps": 10,
        "plugins": [{"class_path": "dlbench.train.checkpoint_io.AtomicCheckpointIO"}],
    }
    if target.plugin is not None:
        defaults.update(target.plugin.trainer_defaults)
    return defaults


def model_class_of(target: Target) -> type:
    return import_ref(target.plugin.model) if target.plugin else None


def debug_enabled(argv: list[str]) -> bool:
    return "--debug" in argv or bool(os.environ.get(DEBUG_ENV))


def stderr(message: str) -> None:
    print(message, file=sys.stderr)
