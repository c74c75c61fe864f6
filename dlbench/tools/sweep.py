"""``dlbench sweep``: a hyperparameter search over any plugin's command-line arguments, with Optuna.

::

    dlbench sweep --model lstm --param model.hidden_size=int:8:64:log --param model.lr=float:1e-4:1e-2:log \\
        --param model.num_layers=choice:1,2 --trials 8 --sampler tpe -- --trainer.max_epochs 5

Every trial is an ordinary ``dlbench fit`` run in its own process (``lightning_logs/<plugin>/sweep-<name>-trial_N``,
with its config.yaml, checkpoints and TensorBoard events), started with the sampled arguments. Its objective is the
best value of ``--metric`` it logged (the plugin's monitor by default), read back from its event files. Trials report
each validation to the study through :class:`dlbench.tools.pruning.OptunaPruning`, so the pruner stops poor ones early.

The study lives in a database: a SQLite file in the sweep directory by default, any SQLAlchemy URL with
``--storage``. Running the same command again continues the study: finished trials stay as they are, a trial that
was running when its sweep stopped is run again, and ``--trials`` is the total wanted. A trial that fails (an
exception, a non-finite loss, a bad argument value) is recorded as failed with its reason and the sweep goes on.
``--jobs N`` runs N trials at a time; several ``dlbench sweep`` processes (workers), on one machine or many, given
the same ``--storage`` (e.g. ``postgresql+psycopg://user@host/db``) and ``--name`` share one study. Each worker
records a heartbeat for every trial it runs (Optuna's RDBStorage heartbeat); a trial whose worker went silent for
:data:`GRACE` heartbeats (killed, machine lost) is failed by whichever worker looks next and queued to run again, and
a worker that has nothing left to start waits for the trials others run, so the study ends complete. At the end: a
table of the trials, the best one and how to reproduce it, and a plot. ``--show`` prints that table for a study
without running anything. Before the study is opened, every ``--param`` name is checked against the arguments the
plugin's classes and the Trainer take (:func:`check_param_names`), so a misspelt one leaves nothing behind.

This module imports neither torch nor Optuna until a sweep runs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import hashlib
import inspect
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlbench.core import registry
from dlbench.core.conventions import log_root
from dlbench.core.errors import DlbenchError, Interrupted, first_line
from dlbench.core.spec import import_class, import_ref
from dlbench.runs.directory import pid_alive

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
GRID_LIMIT = 1000
HEARTBEAT = 15
"""Seconds between a worker's heartbeats for the trials it runs (the default of ``--heartbeat``)."""
GRACE = 4
"""Heartbeats a running trial may miss before another worker takes it as lost: long enough for a busy database or a
slow network, short enough that a killed worker's trial runs again within a minute or so."""
MAX_RETRIES = 3
"""How often a lost trial is queued again; one that kills its worker every time stays failed instead."""
_KEY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_EXAMPLES = "e.g. model.hidden_size=int:8:64:log, model.lr=float:1e-4:1e-2:log, model.num_layers=choice:1,2"


# --- the search space --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One searched argument: ``key=int:LO:HI[:log][:step=S]``, ``key=float:LO:HI[:log]`` or ``key=choice:A,B``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """The value of this argument in ``trial`` (an optuna Trial): sampled, or the stored one of a re-run."""
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))

    def grid(self) -> list:
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            values = list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
            if len(values) <= GRID_LIMIT:
                return values
        raise DlbenchError(f"grid sampling needs a short list of values for {self.key}; give them as "
                           f"{self.key}=choice:A,B,C (or an int range with a step, int:8:64:step=8).")


def _split_choices(text: str) -> list[str]:
    """``a,b,[1, 2]`` -> ``["a", "b", "[1, 2]"]``: commas inside brackets or braces do not split."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _choice_value(text: str) -> Any:
    """A choice as Optuna stores it: a number, bool, None or string; lists and dicts stay the text the CLI reads."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text.strip()
    return value if value is None or isinstance(value, (bool, int, float, str)) else text.strip()


def parse_param(text: str) -> Param:
    key, sep, spec = text.partition("=")
    key = key.strip().removeprefix("--")
    if not sep or not _KEY.match(key):
        raise DlbenchError(f"--param {text!r} is not KEY=SPEC ({_EXAMPLES}).")
    kind, _, rest = spec.partition(":")
    if kind == "choice":
        choices = tuple(_choice_value(c) for c in _split_choices(rest) if c.strip())
        if not choices:
            raise DlbenchError(f"--param {text!r} lists no choices; write {key}=choice:A,B,C.")
        if len(set(map(repr, choices))) != len(choices):
            raise DlbenchError(f"--param {text!r} lists a choice twice.")
        return Param(key, "choice", choices=choices)
    if kind not in ("int", "float"):
        raise DlbenchError(f"--param {text!r}: the kind must be int, float or choice ({_EXAMPLES}).")
    fields = rest.split(":")
    options = fields[2:]
    try:
        cast = int if kind == "int" else float
        low, high = cast(fields[0]), cast(fields[1])
        steps = [cast(o.removeprefix("step=")) for o in options if o.startswith("step=")]
    except (ValueError, IndexError):
        raise DlbenchError(f"--param {text!r}: write {key}={kind}:LOW:HIGH with {kind} bounds, optionally :log or "
                           f":step=S ({_EXAMPLES}).") from None
    unknown = [o for o in options if o != "log" and not o.startswith("step=")]
    log = "log" in options
    if unknown:
        raise DlbenchError(f"--param {text!r}: unknown option {unknown[0]!r}; the options are log and step=S.")
    if not low <= high:
        raise DlbenchError(f"--param {text!r}: the low bound {low} is above the high bound {high}.")
    if log and low <= 0:
        raise DlbenchError(f"--param {text!r}: a log scale needs a positive low bound, got {low}.")
    if log and steps:
        raise DlbenchError(f"--param {text!r}: choose log or step=S, not both.")
    return Param(key, kind, low, high, log, steps[0] if steps else None)


def cli_value(value: Any) -> str:
    """A sampled value as the ``dlbench fit`` command line spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def shown(value: Any) -> str:
    """A sampled value for tables: four significant digits for floats."""
    return f"{value:.4g}" if isinstance(value, float) else cli_value(value)


def overrides(params: dict[str, Any]) -> list[str]:
    return [arg for key, value in params.items() for arg in (f"--{key}", cli_value(value))]


# --- the sweep's definition --------------------------------------------------------------------------------------

@dataclass
class Sweep:
    model: str
    params: list[Param]
    data: str | None = None
    trials: int | None = None
    sampler: str = "tpe"
    metric: str | None = None
    direction: str | None = None
    pruner: str = "median"
    jobs: int = 1
    name: str | None = None
    root: str = "sweeps"
    storage: str | None = None
    seed: int = 0
    fit_args: list[str] = field(default_factory=list)
    heartbeat: int = HEARTBEAT

    def resolve(self, check_names: bool = True) -> None:
        """Fill the defaults that depend on the plugin and check what can be checked before any trial runs (with
        ``check_names``, each ``--param`` name against the plugin's arguments: see :func:`check_param_names`)."""
        plugin = registry.plugin(self.model)
        self.plugin_name = plugin.name
        self.metric = self.metric or plugin.monitor
        if "/" not in self.metric:
            raise DlbenchError(f"--metric {self.metric!r} is not a logged metric name such as val/loss or "
                               f"{plugin.monitor}.")
        default_direction = "minimize" if plugin.mode == "min" else "maximize"
        if self.direction is None:
            self.direction = default_direction if self.metric == plugin.monitor else "minimize"
        if not self.params:
            raise DlbenchError(f"a sweep needs at least one --param ({_EXAMPLES}).")
        keys = [p.key for p in self.params]
        if len(set(keys)) != len(keys):
            raise DlbenchError(f"--param names {sorted({k for k in keys if keys.count(k) > 1})[0]} twice.")
        if self.jobs < 1:
            raise DlbenchError(f"--jobs must be >= 1, got {self.jobs}.")
        if self.heartbeat < 1:
            raise DlbenchError(f"--heartbeat must be >= 1 (seconds), got {self.heartbeat}.")
        if self.trials is not None and self.trials < 1:  # before the defaults below, which would read 0 as unset
            raise DlbenchError(f"--trials must be >= 1, got {self.trials}: it is how many trials the study should "
                               f"hold in all (default 20).")
        if self.sampler == "grid":
            size = math.prod(len(p.grid()) for p in self.params)
            self.trials = min(self.trials or size, size)
        self.trials = self.trials or 20
        if check_names:
            check_param_names(plugin, self.data, [p.key for p in self.params])
        self.name = self.name or f"{self.plugin_name}-{self.fingerprint()[:8]}"
        if not re.match(r"^[\w.-]+$", self.name):
            raise DlbenchError(f"--name {self.name!r}: use letters, digits, '_', '-' and '.' only.")
        self.directory = Path(self.root) / self.name
        self.storage = self.storage or local_study_url(self.directory)

    @classmethod
    def stored(cls, study, name: str, storage: str) -> Sweep:
        """The sweep a stored study was run as, from the :meth:`definition` it keeps (for reading its trials, not
        for running more); a study some other program made gives its trials' parameters, in the order first seen."""
        definition = study.user_attrs.get("definition") or {}
        fields = Param.__dataclass_fields__
        params = [Param(**{k: v for k, v in p.items() if k in fields} | {"choices": tuple(p.get("choices") or ())})
                  for p in definition.get("params", [])]
        if not params:
            keys = dict.fromkeys(k for t in study.get_trials(deepcopy=False) for k in t.params)
            params = [Param(key, "float") for key in keys]
        return cls(model=definition.get("model", "?"), params=params, metric=definition.get("metric", "value"),
                   direction=definition.get("direction") or study.direction.name.lower(), name=name, storage=storage)

    def definition(self) -> dict[str, Any]:
        """What makes two sweeps the same study (not how many trials or processes run it)."""
        return {"model": self.model, "data": self.data, "metric": self.metric, "direction": self.direction,
                "params": [vars(p) | {"choices": list(p.choices)} for p in self.params], "fit_args": self.fit_args}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.definition(), sort_keys=True, default=str).encode()).hexdigest()

    def fit_command(self, params: dict[str, Any]) -> list[str]:
        """The ``dlbench fit`` arguments of one trial, as a user would type them."""
        data = ["--data", self.data] if self.data else []
        return ["fit", "--model", self.model, *data, *overrides(params), *self.fit_args]


# --- the names searched ------------------------------------------------------------------------------------------

GROUPS = ("model", "data", "trainer", "checkpoint", "optimizer", "lr_scheduler")
"""The dotted argument groups of ``dlbench fit``; the first three are checked name by name."""


def _named_arguments(init) -> tuple[set[str], bool]:
    """The keyword names of ``init`` and whether it also takes ``**kwargs``."""
    params = inspect.signature(init).parameters.values()
    names = {p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def init_arguments(cls: type) -> set[str] | None:
    """The names ``cls(...)`` takes, following ``**kwargs`` to the parent classes that receive them; None when
    ``**kwargs`` goes on to Lightning's or torch's base classes, where the class may hand them to anything (nothing
    is refused then)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        if klass is object or klass.__module__.split(".")[0] in ("lightning", "pytorch_lightning", "torch"):
            return None
        own, more = _named_arguments(klass.__init__)
        names |= own
        if not more:
            return names
    return None


def _load(ref: str) -> type:
    try:
        return import_ref(ref)
    except ImportError as err:
        raise DlbenchError(f"cannot import {ref} ({err}). Reinstall the plugin that provides it ('dlbench list' "
                           f"shows what is installed).") from None


def _data_class(plugin, data: str | None) -> tuple[type, str]:
    """The data module class the trials train on and how to name it: ``--data NAME`` (a registered dataset), a
    class path as ``dlbench fit --data`` takes one, or the plugin's own."""
    if data is None:
        return _load(plugin.datamodule), f"{plugin.name}'s data module"
    if "." in data and ":" not in data:
        return import_class(data, "data module"), f"the data module {data}"
    dataset = registry.dataset(data)
    if dataset.data_kind != plugin.data_kind:
        raise DlbenchError(f"model {plugin.name!r} and data {dataset.name!r} do not fit: {plugin.name} expects "
                           f"{plugin.data_kind} data, {dataset.name} is {dataset.data_kind} data. Pick a dataset of "
                           f"kind {plugin.data_kind!r} ('dlbench list --datasets').")
    return _load(dataset.datamodule), f"dataset {dataset.name}'s data module"


def _trainer_arguments() -> set[str]:
    """``lightning.Trainer``'s arguments and dlbench's own (``steps_per_call``)."""
    import lightning

    from dlbench.train.trainer import DlbenchTrainer

    return _named_arguments(lightning.Trainer.__init__)[0] | _named_arguments(DlbenchTrainer.__init__)[0]


def check_param_names(plugin, data: str | None, keys: list[str]) -> None:
    """Each searched name against what ``dlbench fit`` accepts: ``model.X`` against the plugin's LightningModule
    ``__init__``, ``data.X`` against its data module's (``--data``'s when given), ``trainer.X`` against
    ``lightning.Trainer``'s plus ``steps_per_call``; a dotted name of no argument group is refused too. The first
    unknown one is a DlbenchError that names it with the close names, raised before any study or run exists."""
    info = f"'dlbench info {plugin.name}' lists every model and data argument with its default"
    for key in keys:
        group, dot, rest = key.partition(".")
        if not dot:
            continue  # a top-level option (seed_everything, ...): dlbench fit itself refuses one that is not
        if group not in GROUPS:
            close = difflib.get_close_matches(group, GROUPS, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]}.{rest}?" if close else ""
            raise DlbenchError(f"--param {key}: dlbench fit has no argument group {group!r}.{hint} Searched names "
                               f"begin with model., data. or trainer.; {info}.")
        if group not in ("model", "data", "trainer"):
            continue
        parts = rest.split(".")
        if group != "trainer" and parts[0] == "init_args" and len(parts) > 1:
            parts = parts[1:]  # model.init_args.lr: the long form of model.lr
        name = parts[0]
        if group == "trainer":
            known: set[str] | None = _trainer_arguments()
            owner = "lightning's Trainer (with dlbench's steps_per_call)"
            where = (f"'dlbench fit --model {plugin.name} --help' lists the Trainer's arguments ('dlbench info "
                     f"{plugin.name}' the model's and the data's)")
        else:
            cls, owner = (_load(plugin.model), f"{plugin.name}'s model") if group == "model" else \
                _data_class(plugin, data)
            known, owner, where = init_arguments(cls), f"{owner} {cls.__name__}", info
        if known is None or name in known or name in ("class_path", "init_args"):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        if close:
            hint = f" Did you mean {' or '.join(f'{group}.{c}' for c in close)}?"
        else:
            hint = f" It takes {', '.join(sorted(known))}." if group != "trainer" else ""
        raise DlbenchError(f"--param {key}: {owner} has no argument {name!r}.{hint} No trial was run and no study "
                           f"made; {where}.")


# --- the study ---------------------------------------------------------------------------------------------------

def _make_sampler(sweep: Sweep, offset: int):
    import optuna

    # The seed moves on with the trials already in the study (the sweep passes the trial's number), so a resumed
    # sweep, or another worker, does not draw the same points again.
    seed = sweep.seed + offset
    if sweep.sampler == "grid":

        class Grid(optuna.samplers.GridSampler):
            def after_trial(self, study, trial, state, values) -> None:
                pass  # Optuna's stops study.optimize once the grid is done; the sweep counts its trials itself

        # Not moved on: the seed shuffles the grid, and the points stored in the study are indices into that order,
        # the same in every process and every run of the study (as Optuna asks of distributed grid searches).
        return Grid({p.key: p.grid() for p in sweep.params}, seed=sweep.seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, sweep.trials // 3)))


def _make_pruner(sweep: Sweep):
    import optuna

    if sweep.pruner == "none":
        return optuna.pruners.NopPruner()
    # Judge no trial before two others have finished, nor on its first validation, when all runs are still noise.
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def shown_url(url: str) -> str:
    """``url`` fit to print: a password in it is masked (a shared study's URL often carries one)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: nothing in it is known to be a password
        return url


def _quiet_optuna() -> None:
    """Silence what Optuna says about the heartbeat on every trial: it is experimental, and meant for
    ``study.optimize`` (the sweep uses ask and tell, and records the heartbeats itself)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def _requeue_lost(max_retry: int):
    """Optuna's callback that queues a heartbeat-stale trial again, with the re-run marked ``rerun_of`` as the
    sweep's own re-runs are (so the lost trial stops counting toward ``--trials``) and none of the lost run's
    attributes (its host, pid and run directory are the dead worker's)."""
    from optuna import storages

    # RetryFailedTrialCallback is the name before Optuna 4.9, an alias of the new one after.
    base = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback

    class RequeueLost(base):
        def __call__(self, study, trial) -> None:
            rerun = copy.copy(trial)
            rerun.user_attrs = {"rerun_of": trial.number}
            super().__call__(study, rerun)

    return RequeueLost(max_retry=max_retry)


def storage_for(url: str, heartbeat: int | None = None):
    """An Optuna RDBStorage for ``url``, made to be shared by many processes.

    SQLite waits for a lock instead of failing at once; a PostgreSQL or MySQL server that cannot be reached fails in
    seconds rather than after the system's TCP timeout. With ``heartbeat`` (seconds; the sweep's workers), trials
    this process runs can record heartbeats, and a running trial without one for ``GRACE * heartbeat`` seconds is
    failed and queued again by :func:`recover_interrupted`. Two workers that start on a new database at the same
    moment both try to create its tables: the one that loses that race tries again."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    lost: dict[str, Any] = {}
    if heartbeat:
        _quiet_optuna()
        new_api = "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
        lost = {"heartbeat_interval": heartbeat, "grace_period": GRACE * heartbeat,
                "heartbeat_stale_trial_callback" if new_api else "failed_trial_callback": _requeue_lost(MAX_RETRIES)}
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **lost)
        except (IntegrityError, ProgrammingError, OperationalError) as err:
            # "duplicate key", "relation already exists" (PostgreSQL), "table ... already exists" (SQLite): the race
            # above. Any other error (a server that cannot be reached) is not a race: it is raised at once.
            race = not isinstance(err, OperationalError) or "already exists" in str(err)
            if attempt == 3 or not race:
                raise
            time.sleep(0.2 + 0.3 * attempt)


def _bad_storage(url: str, err: BaseException) -> DlbenchError:
    """The one-paragraph error for a study database that cannot be opened, with the fix for the usual causes."""
    if isinstance(err, ImportError):
        fix = ("Its database driver is not installed: for PostgreSQL give --storage postgresql+psycopg://USER@HOST/DB "
               "and pip install 'dlbench[postgres]' (psycopg).")
    else:
        fix = ("The URL is wrong or the server is down: give a reachable SQLAlchemy URL with --storage, e.g. "
               "sqlite:///sweep.db or postgresql+psycopg://USER:PASSWORD@HOST:5432/DB (the database must exist).")
    reason = first_line(err).rstrip(". ")
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        if not folder.is_dir():
            reason, fix = f"its folder {folder} does not exist", "Create the folder first, or give another path."
    return DlbenchError(f"cannot open the study database {shown_url(url)}: {reason}. {fix}")


def open_study(sweep: Sweep):
    """The sweep's study, created or continued; a DlbenchError when the stored study was defined otherwise.
    Also returns its storage, whose public methods read and write single trials."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    made = [p for p in (sweep.directory, *sweep.directory.parents) if not p.exists()]
    sweep.directory.mkdir(parents=True, exist_ok=True)
    _quiet_optuna()
    try:
        storage = storage_for(sweep.storage, heartbeat=sweep.heartbeat)
        study = optuna.create_study(study_name=sweep.name, storage=storage, direction=sweep.direction,
                                    load_if_exists=True, pruner=_make_pruner(sweep))
    except (SQLAlchemyError, ValueError, ImportError) as err:
        for folder in made:  # a study that could not be opened leaves no empty sweep folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise _bad_storage(sweep.storage, err) from None
    stored = study.user_attrs.get("definition")
    wanted = json.loads(json.dumps(sweep.definition(), default=str))
    if stored is None:
        study.set_user_attr("definition", wanted)
    elif stored != wanted:
        changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
        raise DlbenchError(f"study {sweep.name!r} in {shown_url(sweep.storage)} was started with other settings "
                           f"({', '.join(changed)} differ). Continue it with the same command, or start another "
                           f"study with --name.")
    study.sampler = _make_sampler(sweep, len(study.trials))
    return study, storage


def counted(trials) -> int:
    """How many of a study's trials count toward ``--trials``: the finished and the running ones. A trial that
    failed because its sweep was interrupted or its worker was lost does not: it was queued to run again, and its
    re-run (``rerun_of`` it) counts instead."""
    from optuna.trial import TrialState

    rerun = {t.user_attrs.get("rerun_of") for t in trials}

    def counts(trial) -> bool:
        if trial.state == TrialState.FAIL:
            return not trial.user_attrs.get("interrupted") and trial.number not in rerun
        return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

    return sum(map(counts, trials))


def recover_interrupted(study, storage) -> list[int]:
    """Trials left running by a worker that is gone, failed and queued to run again; their numbers.

    A worker of this machine whose process is gone is known at once; one on another machine (or one whose pid was
    reused) is known by its silence: Optuna fails the trials whose heartbeat is older than the storage's grace
    period and its callback (:func:`_requeue_lost`) queues them. Every worker calls this before it starts a trial,
    so a survivor picks up what a killed worker left."""
    import optuna
    from optuna.trial import TrialState

    recovered = []
    host = socket.gethostname()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in running:
        attrs = trial.user_attrs
        pid = int(attrs.get("pid", 0))
        if attrs.get("host") != host or pid <= 0 or pid_alive(pid):
            continue  # another live worker runs it, or another machine's: its heartbeat tells
        if _interrupted(study, storage, trial):
            recovered.append(trial.number)
    if storage.get_heartbeat_interval():
        optuna.storages.fail_stale_trials(study)
        by_id = {t._trial_id: t for t in study.get_trials(deepcopy=False)}
        recovered += [t.number for t in running if t.number not in recovered
                      and by_id[t._trial_id].state == TrialState.FAIL and not t.user_attrs.get("interrupted")]
    return sorted(recovered)


def _interrupted(study, storage, trial) -> bool:
    """Fail ``trial`` (a Trial or FrozenTrial) as interrupted and queue its parameters to run again; False when
    another process finished it first (then that one queued it, or it completed)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_user_attr(trial._trial_id, "error", "interrupted: the sweep stopped while it ran")
        # The claim: a row lock in the database, so of two workers that recover the same trial one queues it.
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
    return True


# --- running trials ----------------------------------------------------------------------------------------------

def best_logged(scalars: dict[str, list[tuple[int, float]]], metric: str, direction: str) -> float:
    """The best finite value of ``metric`` among a run's scalars (:func:`dlbench.runs.read_scalars`); NaN when it
    was never finite."""
    points = [v for _, v in scalars.get(metric, []) if math.isfinite(v)]
    if not points:
        return math.nan
    return min(points) if direction == "minimize" else max(points)


def _error_line(log: Path) -> str:
    """The reason a ``dlbench fit`` process gave for failing: its ``dlbench: error:`` line, else its last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    errors = [ln.removeprefix("dlbench: error: ") for ln in lines if ln.startswith("dlbench: error:")]
    return (errors or lines or ["no output"])[-1][:500]


WAIT = object()
"""What :meth:`Runner._next_trial` returns while other workers run the study's last trials."""


class Runner:
    """Runs trials of one study, ``sweep.jobs`` at a time, each as a ``dlbench fit`` process."""

    def __init__(self, sweep: Sweep, study, storage) -> None:
        self.sweep, self.study, self.storage = sweep, study, storage
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.children: dict[int, subprocess.Popen] = {}
        self.beating: set[int] = set()  # ids of the trials this process runs, whose heartbeats it records
        self.fatal: str | None = None
        self.started = 0
        self.waiting_shown = False
        self.log_root = Path(log_root())

    def _elsewhere(self, trial) -> bool:
        """Whether a running trial is another worker's that will end one way or another: it finishes, its process
        is seen gone (this machine) or its heartbeat stops (any machine). Trials of this process's other jobs are
        waited for by :meth:`run`; one with neither a heartbeat nor a pid to check could hang a wait for ever."""
        attrs = trial.user_attrs
        if attrs.get("host") == socket.gethostname() and attrs.get("pid") == os.getpid():
            return False
        return bool(attrs.get("heartbeat")) or attrs.get("host") == socket.gethostname()

    def _next_trial(self):
        """The next trial to run; None when there is none; WAIT when the study holds enough trials but other
        workers still run some of them, which may yet be lost and queued again."""
        from optuna.trial import TrialState

        with self.lock:
            if self.stop.is_set():
                return None
            recovered = recover_interrupted(self.study, self.storage)
            if recovered:
                print(f"trials {', '.join(map(str, recovered))} were running in a worker that is gone: they run "
                      f"again.", flush=True)
            trials = self.study.get_trials(deepcopy=False)
            if counted(trials) >= self.sweep.trials:
                others = [t.number for t in trials if t.state == TrialState.RUNNING and self._elsewhere(t)]
                if others and not self.waiting_shown:
                    self.waiting_shown = True
                    print(f"waiting for trials {', '.join(map(str, others))}, which other workers run, in case one "
                          f"of them is lost and must run again here.", flush=True)
                return WAIT if others else None
            trial = self.study.ask()
            # Seeded by the trial's number, which the database hands out once: workers that ask at the same moment
            # draw different points, and one worker draws the same points run after run. (A grid point is chosen
            # in ask, among those no other trial holds.)
            self.study.sampler = _make_sampler(self.sweep, trial.number)
            for param in self.sweep.params:
                param.suggest(trial)
            self.storage.record_heartbeat(trial._trial_id)
            self.beating.add(trial._trial_id)
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            trial.set_user_attr("heartbeat", self.sweep.heartbeat)
            self.started += 1
            return trial

    def work(self) -> None:
        while (trial := self._next_trial()) is not None:
            if trial is WAIT:
                if self.stop.wait(self.sweep.heartbeat):
                    return
                continue
            try:
                self.run_trial(trial)
            except Exception as err:  # a bug or a lost database: stop the sweep, leave no trial running
                from optuna.exceptions import OptunaError
                from optuna.trial import TrialState
                from sqlalchemy.exc import SQLAlchemyError

                self.fatal = self.fatal or f"trial {trial.number} could not be recorded ({type(err).__name__}: {err})"
                self.stop.set()
                with contextlib.suppress(OptunaError, KeyError, ValueError, SQLAlchemyError):
                    self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                return
            finally:
                self.beating.discard(trial._trial_id)

    def _beat(self, done: threading.Event) -> None:
        """Record a heartbeat for each trial this process runs, every ``--heartbeat`` seconds, until ``done``. A
        database that cannot be reached for a while is no reason to stop: the trial may then be taken as lost."""
        from sqlalchemy.exc import SQLAlchemyError

        while not done.wait(self.sweep.heartbeat):
            for trial_id in list(self.beating):
                with contextlib.suppress(SQLAlchemyError):
                    self.storage.record_heartbeat(trial_id)

    def _run_dir(self, number: int) -> Path:
        base = self.log_root / self.sweep.plugin_name / f"sweep-{self.sweep.name}-trial_{number}"
        run_dir, n = base, 1
        while run_dir.exists():  # a study started afresh over the runs of an older one of the same name
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
        return run_dir

    def run_trial(self, trial) -> None:
        from optuna.trial import TrialState

        sweep = self.sweep
        run_dir = self._run_dir(trial.number)
        logger = {"class_path": "dlbench.train.logger.RunLogger",
                  "init_args": {"save_dir": str(self.log_root), "name": sweep.plugin_name, "version": run_dir.name}}
        pruning = {"class_path": "dlbench.tools.pruning.OptunaPruning",
                   "init_args": {"storage": sweep.storage, "study_name": sweep.name, "trial_id": trial._trial_id,
                                 "monitor": sweep.metric}}
        command = sweep.fit_command(trial.params)
        args = [sys.executable, "-m", "dlbench", *command, "--trainer.enable_progress_bar", "false",
                "--trainer.logger", json.dumps(logger), f"--trainer.callbacks+={json.dumps(pruning)}"]
        log = sweep.directory / "trials" / f"trial_{trial.number}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("command", shlex.join(["dlbench", *command]))
        trial.set_user_attr("log", str(log))
        start = time.monotonic()
        with log.open("w") as out:
            # A session of its own: a Ctrl-C in the terminal reaches the sweep, which stops each trial once, cleanly.
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self.children[proc.pid] = proc
            trial.set_user_attr("child_pid", proc.pid)
            try:
                code = proc.wait()
            finally:
                self.children.pop(proc.pid, None)
        seconds = time.monotonic() - start
        if self.storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            # Another worker took it as lost (no heartbeat got through for a while) and queued it again: the re-run
            # counts, so this result is left out rather than recorded twice.
            print(f"trial {trial.number} was taken as lost by another worker while it ran (no heartbeat reached "
                  f"the database for {GRACE * sweep.heartbeat} s); its re-run counts instead.", flush=True)
            return
        trial.set_user_attr("seconds", round(seconds, 1))
        if self.stop.is_set() and code != 0:
            _interrupted(self.study, self.storage, trial)
            return
        state, value, reason = self._outcome(trial, code, log, run_dir)
        if reason:
            trial.set_user_attr("error", reason)
        # skip_if_finished: another worker may have failed it as lost since the check above; its re-run counts.
        self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state, skip_if_finished=True)
        self._progress(trial.number, state.name, value, reason, trial.params, seconds)

    def _outcome(self, trial, code: int, log: Path, run_dir: Path):
        from optuna.trial import TrialState

        sweep = self.sweep
        if code != 0:
            reason = _error_line(log)
            if "unknown argument" in reason:  # a misspelt key: every trial would fail the same way
                self.fatal = self.fatal or f"trial {trial.number} was refused by dlbench fit: {reason}"
            return TrialState.FAIL, None, reason
        if not run_dir.is_dir():
            return TrialState.FAIL, None, f"the run wrote no directory {run_dir}"
        from dlbench.runs.run import read_scalars

        scalars = read_scalars(run_dir)
        if sweep.metric not in scalars:
            self.fatal = self.fatal or (f"the runs do not log {sweep.metric!r}; they log {', '.join(sorted(scalars))}. "
                                        f"Choose one with --metric.")
            return TrialState.FAIL, None, f"metric {sweep.metric} was not logged"
        value = best_logged(scalars, sweep.metric, sweep.direction)
        if math.isnan(value):
            return TrialState.FAIL, None, f"{sweep.metric} was never finite (NaN or infinite)"
        pruned_at = self.storage.get_trial(trial._trial_id).user_attrs.get("pruned_at_epoch")
        if pruned_at is not None:
            return TrialState.PRUNED, value, f"pruned after epoch {pruned_at}"
        return TrialState.COMPLETE, value, None

    def _progress(self, number, state, value, reason, params, seconds) -> None:
        values = " ".join(f"{k}={shown(v)}" for k, v in params.items())
        result = f"{self.sweep.metric} {value:.6g}" if value is not None and state == "COMPLETE" else reason
        print(f"trial {number} {state.lower()} in {seconds:.0f} s: {result} ({values})", flush=True)

    def interrupt(self) -> None:
        """Stop starting trials and ask each running one to stop (it saves a last checkpoint and exits)."""
        self.stop.set()
        for proc in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)

    def run(self) -> None:
        active = [self.sweep.jobs]
        finished = threading.Event()

        def job() -> None:
            try:
                self.work()
            finally:
                with self.lock:
                    active[0] -= 1
                    if active[0] == 0:
                        finished.set()

        beat_done = threading.Event()
        threading.Thread(target=self._beat, args=(beat_done,), daemon=True, name="sweep-heartbeat").start()
        for i in range(self.sweep.jobs):
            threading.Thread(target=job, daemon=True, name=f"sweep-job-{i}").start()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM)
        if main:
            signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl-C: stop the trials cleanly
        # An Event, not Thread.join: a join that a Ctrl-C interrupts can leave its thread marked as finished.
        try:
            while not finished.wait(timeout=0.5):
                if self.fatal:
                    self.stop.set()
        except KeyboardInterrupt:
            self.interrupt()
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop waiting for the trials
                finished.wait(timeout=120)
            for proc in list(self.children.values()):
                proc.kill()
            raise
        finally:
            beat_done.set()
            if main:
                signal.signal(signal.SIGTERM, previous)


# --- the summary -------------------------------------------------------------------------------------------------

def summary(sweep: Sweep, study) -> str:
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    states = [t.state.name.lower() for t in trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail", "running", "waiting")
                       if states.count(s))
    minimize = sweep.direction == "minimize"
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                  key=lambda t: t.value if minimize else -t.value)
    rest = [t for t in trials if t.state != TrialState.COMPLETE]
    keys = [p.key for p in sweep.params]
    # Runs stay on the machine that ran them: once workers ran on several, a run directory says which.
    several_hosts = len({t.user_attrs.get("host") for t in trials if "run_dir" in t.user_attrs}) > 1
    reruns = {t.user_attrs["rerun_of"]: t.number for t in trials if "rerun_of" in t.user_attrs}

    def run_of(t) -> str:
        run_dir = t.user_attrs.get("run_dir", "")
        return f"{t.user_attrs.get('host')}:{run_dir}" if several_hosts and run_dir else run_dir

    header = ["trial", "state", sweep.metric, *keys, "seconds", "run or reason"]
    rows = []
    for t in [*done, *rest]:
        value = f"{t.value:.6g}" if t.value is not None else "-"
        if t.state == TrialState.COMPLETE:
            note = run_of(t)
        elif t.state == TrialState.FAIL and "error" not in t.user_attrs:
            note = "lost: its worker stopped sending heartbeats"
        else:
            note = t.user_attrs.get("error", "")
        if t.number in reruns:
            note += f" (run again as trial {reruns[t.number]})"
        rows.append([str(t.number), t.state.name.lower(), value,
                     *(shown(t.params[k]) if k in t.params else "-" for k in keys),
                     str(t.user_attrs.get("seconds", "-")), note])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [f"sweep {sweep.name}: {len(trials)} trials ({counts}); study {shown_url(sweep.storage)}", ""]
    for r in [header, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    if done:
        best = done[0]
        lines += ["", f"best: trial {best.number}, {sweep.metric} {best.value:.6g} ({sweep.direction}) with "
                      f"{' '.join(overrides(best.params))}"]
        if "run_dir" in best.user_attrs:
            on = f" (on {best.user_attrs.get('host')})" if several_hosts else ""
            lines.append(f"reproduce: dlbench fit --config {Path(best.user_attrs['run_dir']) / 'config.yaml'}{on}")
    return "\n".join(lines)


def plot(sweep: Sweep, study, path: Path) -> Path | None:
    """Objective by trial with the best so far, and the objective against each searched argument."""
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        return None
    done.sort(key=lambda t: t.number)
    panels = 1 + len(sweep.params)
    figure = Figure(figsize=(3.6 * panels, 3.2), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    values = [t.value for t in done]
    best = (min if sweep.direction == "minimize" else max)
    running = [best(values[: i + 1]) for i in range(len(values))]
    axes[0].plot([t.number for t in done], values, "o", label="trial")
    axes[0].step([t.number for t in done], running, where="post", label="best so far")
    axes[0].set(xlabel="trial", ylabel=sweep.metric, title=f"{sweep.name} ({sweep.direction})")
    axes[0].legend()
    for ax, param in zip(axes[1:], sweep.params, strict=True):
        xs = [t.params[param.key] for t in done]
        if param.kind == "choice":
            labels = [cli_value(c) for c in param.choices]
            xs = [labels.index(cli_value(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels)
        elif param.log:
            ax.set_xscale("log")
        ax.plot(xs, values, "o")
        ax.set(xlabel=param.key, ylabel=sweep.metric)
    figure.savefig(path, dpi=100)
    return path


# --- the command -------------------------------------------------------------------------------------------------

def run_sweep(sweep: Sweep) -> int:
    sweep.resolve()
    study, storage = open_study(sweep)
    recovered = recover_interrupted(study, storage)
    if recovered:
        print(f"trials {', '.join(map(str, recovered))} were running when an earlier sweep stopped: they run again.")
    held = counted(study.get_trials(deepcopy=False))
    runner = Runner(sweep, study, storage)
    print(f"sweep {sweep.name}: {held} of {sweep.trials} trials in the study, {sweep.jobs} at a time; "
          f"directory {sweep.directory}, runs under {runner.log_root / sweep.plugin_name}", flush=True)
    try:
        runner.run()
    except KeyboardInterrupt:
        raise Interrupted(f"sweep {sweep.name} interrupted; the trials that were running will run again. Continue "
                          f"with the same command.") from None
    text = summary(sweep, study)
    (sweep.directory / "summary.txt").write_text(text + "\n")
    picture = plot(sweep, study, sweep.directory / "sweep.png")
    print("\n" + text)
    if picture:
        print(f"plot: {picture}")
    if runner.fatal:
        raise DlbenchError(f"sweep {sweep.name} stopped: {runner.fatal}")
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise DlbenchError(f"no trial of sweep {sweep.name} completed; the reasons are in the table above and the "
                           f"logs in {sweep.directory / 'trials'}.", exit_code=1)
    return 0


def local_study_url(directory: Path) -> str:
    """The URL of the SQLite study a sweep keeps in its own directory when no ``--storage`` is given."""
    return f"sqlite:///{(directory / 'study.db').resolve()}"


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases, SQLite in memory and URLs SQLAlchemy cannot parse."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database if parsed.get_backend_name() == "sqlite" else None
    return Path(database) if database and database != ":memory:" else None


def show_study(storage: str | None, name: str | None, root: str = "sweeps") -> str:
    """The table of a stored study, read without running or changing a trial: for a look at a sweep that workers,
    here or on other machines, run or ran. Without ``name`` the storage's only study is shown; without
    ``storage``, sweep ``name``'s SQLite file under ``root``."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    _quiet_optuna()
    if storage is None:
        if not name:
            raise DlbenchError("--show needs the study: --name NAME (a sweep under ./sweeps, or with --storage URL), "
                               "or the sweep's own command line (--model and --param) with --show added.")
        storage = local_study_url(Path(root) / name)
    db = _sqlite_path(storage)
    if db is not None and not db.is_file():  # opening it would create an empty database
        raise DlbenchError(f"there is no study database {db}; give the --storage URL and --name the sweep was run "
                           f"with.")
    try:
        rdb = storage_for(storage)
        names = sorted(optuna.get_all_study_names(rdb))
    except (SQLAlchemyError, ValueError, ImportError) as err:
        raise _bad_storage(storage, err) from None
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        held = f"it holds {', '.join(names)}" if names else "it holds no study"
        what = f"no study {name!r}" if name else "more than one study"
        raise DlbenchError(f"{what} in {shown_url(storage)}: {held}. Choose one with --name.")
    study = optuna.load_study(study_name=name, storage=rdb)
    return summary(Sweep.stored(study, name, storage), study)


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise DlbenchError("dlbench sweep needs Optuna: pip install optuna.") from None
    fit_args = list(args.fit_args)
    if fit_args and fit_args[0] == "--":
        fit_args = fit_args[1:]
    if args.show and not args.model:
        print(show_study(args.storage, args.name, args.dir))
        return 0
    if not args.model:
        raise DlbenchError("dlbench sweep needs --model NAME (see dlbench list), or --show to print a study that "
                           "exists.")
    sweep = Sweep(model=args.model, data=args.data, params=[parse_param(p) for p in args.param], trials=args.trials,
                  sampler=args.sampler, metric=args.metric, direction=args.direction, pruner=args.pruner,
                  jobs=args.jobs, name=args.name, root=args.dir, storage=args.storage, seed=args.seed,
                  fit_args=fit_args, heartbeat=args.heartbeat)
    if args.show:  # the sweep's own command with --show: its default name and storage are worked out as for a run
        sweep.resolve(check_names=False)  # only the name and the storage are needed to read the study
        print(show_study(sweep.storage, sweep.name))
        return 0
    return run_sweep(sweep)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep", help="search hyperparameters of a plugin with Optuna, each trial an ordinary run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search any --model.*, --data.* or --trainer.* argument of a plugin. Each trial is a dlbench fit "
                    "run under lightning_logs/; the study is kept in a database, so the same command continues it.",
        epilog="example:\n  dlbench sweep --model lstm --param model.hidden_size=int:8:64:log \\\n"
               "      --param model.lr=float:1e-4:1e-2:log --param model.num_layers=choice:1,2 --trials 8 \\\n"
               "      -- --trainer.max_epochs 5\n"
               "workers on several machines share a study through one database server:\n"
               "  dlbench sweep --storage postgresql+psycopg://USER:PASSWORD@HOST/DB --name NAME ...   (on each)\n"
               "  dlbench sweep --storage postgresql+psycopg://USER:PASSWORD@HOST/DB --name NAME --show")
    p.add_argument("--model", help="plugin name (see dlbench list); needed except with --show")
    p.add_argument("--data", help="dataset name, if not the plugin's default")
    p.add_argument("--param", action="append", default=[], metavar="KEY=SPEC",
                   help="a searched argument: KEY=int:LO:HI[:log][:step=S], KEY=float:LO:HI[:log] or "
                        "KEY=choice:A,B,C; KEY as in dlbench fit without the dashes (model.lr)")
    p.add_argument("--trials", type=int, help="trials the study should hold in all (default 20; grid: the grid)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="how to pick trials (default tpe)")
    p.add_argument("--metric", help="logged metric to optimise, its best value in each run (default: the plugin's "
                                    "monitor)")
    p.add_argument("--direction", choices=("minimize", "maximize"),
                   help="default: as the plugin's monitor improves")
    p.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="stop trials worse than the median of earlier ones at the same epoch (default median)")
    p.add_argument("--jobs", type=int, default=1, help="trials run at the same time (default 1)")
    p.add_argument("--name", help="study name (default: <plugin>-<hash of the sweep's definition>)")
    p.add_argument("--dir", default="sweeps", help="where sweep directories go (default ./sweeps)")
    p.add_argument("--storage", help="SQLAlchemy URL of the study database (default: sqlite file in the sweep "
                                     "directory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    p.add_argument("--heartbeat", type=int, default=HEARTBEAT, metavar="SECONDS",
                   help=f"how often a worker tells the study its trials are alive; a trial silent for {GRACE} "
                        f"times that is taken as lost and runs again (default {HEARTBEAT}; give every worker the "
                        f"same)")
    p.add_argument("--show", action="store_true",
                   help="print the table of an existing study (--storage URL --name NAME, or the sweep's own "
                        "command) and its best trial, without running any")
    p.add_argument("fit_args", nargs=argparse.REMAINDER,
                   help="after --: arguments every trial's dlbench fit gets, e.g. -- --trainer.max_epochs 5")
    p.set_defaults(func=cmd_sweep)
    return p
