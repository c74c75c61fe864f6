"""``dlbench fit|validate|test``: a plugin's classes handed to LightningCLI with dlbench's defaults.

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
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from dlbench.core import registry
from dlbench.core.conventions import DEBUG_ENV, EVALUATIONS_DIR, LAST_CHECKPOINT, log_root
from dlbench.core.errors import DlbenchError
from dlbench.core.spec import Plugin, class_path, import_ref
from dlbench.runs.directory import RunDir, pid_alive, read_status

SUBCOMMANDS = ("fit", "validate", "test")
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
    evaluates: Path | None = None
    """validate/test/predict: the run directory whose checkpoint is evaluated, when it is one."""
    explicit: dict[str, str] = field(default_factory=dict)
    """``--model.*`` and ``--data.*`` values typed on the command line (``{"model.hidden_size": "7"}``), to check
    against a checkpoint's saved hyperparameters."""
    config_files: list[str] = field(default_factory=list)
    """The ``--config`` files the command line names, in order."""


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


def read_config_file(path: str) -> Any:
    """A ``--config`` file's YAML, or a DlbenchError naming the file (and the line, for bad YAML) and the fix."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise DlbenchError(f"cannot read config file {path}: {err.strerror}. Check the path.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DlbenchError(f"config file {path}{where} is not valid YAML: {problem}. Fix the file (a config file "
                           f"is YAML mappings such as 'model:' / '  hidden_size: 32').") from None
    if data is None:
        raise DlbenchError(f"config file {path} is empty. Give a file with at least one setting, or drop --config "
                           f"(dlbench fit --model NAME --print_config > {Path(path).name} writes every setting).")
    if not isinstance(data, dict):
        raise DlbenchError(f"config file {path} holds a {type(data).__name__}, not a mapping of settings. Write it "
                           f"as 'model:' / '  hidden_size: 32' (dlbench fit --model NAME --print_config shows every "
                           f"setting).")
    return data


def key_line(config_files: list[str], dotted: str) -> str | None:
    """Where a dotted key (``model.hiden_size``, ``model.init_args.hiden_size``) is set in the config files, as
    ``FILE, line N`` (the last file that sets it), for messages about a key jsonargparse refused."""
    parts = [p for p in dotted.split(".") if p != "init_args"]
    found = None
    for path in config_files:
        try:
            node = yaml.compose(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue
        for part in parts:
            if not isinstance(node, yaml.MappingNode):
                node = None
                break
            children = {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}
            if part not in children and isinstance(children.get("init_args", (None, None))[1], yaml.MappingNode):
                children = {k.value: (k, v) for k, v in children["init_args"][1].value}
            if part not in children:
                node = None
                break
            key, node = children[part]
        if node is not None:
            found = f"{path}, line {key.start_mark.line + 1}"
    return found


def _config_model_class(config_files: list[str]) -> str | None:
    """The ``model.class_path`` a config file names, if any (the last file that names one wins)."""
    found = None
    for path in config_files:
        data = read_config_file(path)
        model = data.get("model")
        if isinstance(model, dict) and isinstance(model.get("class_path"), str):
            found = model["class_path"]
        elif isinstance(model, str):
            found = model
    return found


def _finished_without_status(run: RunDir, last: Path) -> tuple[bool, str]:
    """For a run whose ``status.json`` is missing or unreadable: whether it finished, and what says so, read from
    its last checkpoint (epochs done against ``max_epochs``/``max_steps`` of its config) and its event files (the
    test after fit logs ``test/*`` only once training has ended)."""
    import torch

    from dlbench.runs.run import read_scalars

    saved = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    try:  # epochs whose batches all ran (a checkpoint written mid-epoch by Ctrl-C does not count that one)
        epochs = int(saved["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        epochs = int(saved.get("epoch", 0)) + 1
    step = int(saved.get("global_step", 0))
    trainer = run.config().get("trainer") or {}
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    try:
        tests = sorted(t for t in read_scalars(run.path) if t.startswith("test/"))
    except Exception:  # damaged event files say nothing either way
        tests = []
    found = f"{last.name} holds {epochs} finished epoch{'s' if epochs != 1 else ''}, step {step}"
    if isinstance(max_epochs, int) and max_epochs > 0:
        found += f" of max_epochs {max_epochs}"
    if tests:
        return True, f"{found}, and its event files hold the test after fit ({', '.join(tests[:3])})"
    if isinstance(max_epochs, int) and max_epochs > 0 and epochs >= max_epochs:
        return True, f"{found}: every epoch is done"
    if isinstance(max_steps, int) and max_steps > 0 and step >= max_steps:
        return True, f"{found}, max_steps {max_steps} reached"
    return False, f"{found}, and its event files hold no test after fit"


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
    status, problem = read_status(run.status_file)
    last = run.last_checkpoint
    further = (f"To train it further: dlbench fit --config {config} --ckpt_path {run.checkpoint_dir / LAST_CHECKPOINT} "
               f"--trainer.max_epochs N (a new run)")
    if status.get("status") == "finished":
        return [], (f"run {run.path} already finished ({status.get('epochs', '?')} epochs, {status.get('steps', '?')} "
                    f"steps); nothing to resume. {further}")
    if not status and last is not None:
        finished, found = _finished_without_status(run, last)
        why = problem or "status.json is missing"
        if finished:
            return [], f"run {run.path}: {why}; {found}, so the run finished. Nothing to resume. {further}"
        print(f"dlbench: run {run.path}: {why}; {found}, so it stopped early: resuming from {last.name}.",
              file=sys.stderr)
    pid = int(status.get("pid", -1))
    if status.get("status") == "running" and status.get("host") == socket.gethostname() and pid_alive(pid) \
            and pid != os.getpid():
        raise DlbenchError(f"run {run.path} is still running (process {pid}); stop it first (Ctrl-C or kill {pid}), "
                           f"then resume.")
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
    # config.yaml keeps the run's own logger settings (see dlbench.train.lightning_cli.RunConfig): these pins are for
    # this process only.
    logger["init_args"] = {**logger.get("init_args", {}), "save_dir": str(run.path.parent.parent),
                           "name": run.path.parent.name, "version": run.path.name, "purge_step": step + 1}
    return ["--config", str(config), "--ckpt_path", str(last), "--trainer.logger", json.dumps(logger)], None


def config_values(args: list[str]) -> list[str]:
    """The files of every ``--config FILE`` / ``-c FILE`` of a command line, in order."""
    return [v for i in range(len(args)) for flag in ("--config", "-c") for v, used in [_option_value(args, i, flag)]
            if used]


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
        if not run.path.exists():
            raise DlbenchError(f"run directory {run_dir} does not exist. --run takes a directory such as "
                               f"lightning_logs/lstm/version_0 (dlbench compare lists the runs).")
        if not run.config_file.is_file():
            raise DlbenchError(f"{run_dir} is not a run directory: it has no config.yaml. --run takes a directory "
                               f"such as lightning_logs/lstm/version_0.")
        args = ["--config", str(run.config_file), *args]
    ckpt, rest = _take_option(args, "--ckpt_path")
    if run is None:
        configs = config_values(args)
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
            read_config_file(value)  # a missing, empty or broken file is named now, with its line
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
    target = Target(name=name, plugin=plugin, dist=dist, dist_version=dist_version, args=front + args_out,
                    explicit=explicit_values(args_out), config_files=configs)
    if subcommand != "fit":
        target.evaluates = evaluated_run(args_out)
        if not any(a.split("=")[0] == "--trainer.logger" for a in args_out):
            folder = evaluations_folder(target.evaluates, name)
            ckpt = next((v for i in range(len(args_out)) for v, used in [_option_value(args_out, i, "--ckpt_path")]
                         if used), None)
            logger = {"class_path": "dlbench.train.logger.EvaluationLogger",
                      "init_args": {"save_dir": str(folder), "stage": subcommand, "checkpoint": ckpt}}
            target.args += ["--trainer.logger", json.dumps(logger)]
    return target


def explicit_values(args: list[str]) -> dict[str, str]:
    """``--model.X V`` / ``--data.X=V`` items of a command line as ``{"model.X": "V"}`` (``init_args.`` dropped)."""
    found: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if isinstance(arg, str) and arg.startswith(("--model.", "--data.")):
            key, eq, value = arg[2:].partition("=")
            if not eq:
                value = args[i + 1] if i + 1 < len(args) else ""
                i += 1
            found[key.replace(".init_args.", ".")] = value
        i += 1
    return found


def evaluated_run(args: list[str]) -> Path | None:
    """The run directory a validate/test/predict command evaluates: the run of its checkpoint file, else of its
    ``--config RUN_DIR/config.yaml``."""
    ckpt = next((v for i in range(len(args)) for v, used in [_option_value(args, i, "--ckpt_path")] if used), None)
    if ckpt and Path(ckpt).is_file():
        run = RunDir.of(ckpt)
        return run.path if run.config_file.is_file() else None
    configs = config_values(args)
    found = [r for r in map(RunDir.of_config, configs) if r is not None]
    return found[-1].path if found else None


def evaluations_folder(run: Path | None, name: str) -> Path:
    """Where an evaluation's own files go: ``RUN_DIR/evaluations`` for a run (the one folder of a run that commands
    other than its fit write into), or ``<log root>/<plugin>/evaluations`` for a checkpoint outside a run, a run
    directory that cannot be written, or no checkpoint."""
    if run is not None:
        folder = run / EVALUATIONS_DIR
        if os.access(folder if folder.is_dir() else run, os.W_OK):
            return folder
        return Path(log_root()) / name / EVALUATIONS_DIR / run.name
    return Path(log_root()) / name / EVALUATIONS_DIR


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
