"""The 65 bad inputs a new user tried on every command (bad-inputs.md, shared notes outside the repository,
2026-12-07), each as the table says it should end: one paragraph and exit code 2 for a mistake (0 where the input is
valid, 130 for Ctrl-C), the problem and its fix named, no traceback, and every run made before the case
byte-identical after it (its derived folders aside: evaluations/, predictions/, export/, compress/).

Each case runs the real ``dlbench`` in a scratch folder holding a copy of a finished lstm run at
lightning_logs/lstm/version_0 (the user's earlier run) plus what the case needs. Runs that several cases need are
trained once a session (shared by the xdist workers): the finished lstm run, a tiny mlp run, and the cases whose
own output later cases read (8: a max_time run; 30: a run stopped by Ctrl-C; 31: its resume; 55: a run under a
non-ASCII log directory), which run once and are asserted from their record.

A case runs ``dlbench.cli.main`` in the test process (``runs_fixtures.run_in_process``: the working folder,
environment, output and warnings a ``dlbench`` process would have, an exception escaping ``main`` counted as the
traceback a user would see, and anything it leaves behind in the process a failure), which spares it the seconds of
importing torch and Lightning. A case whose ``process`` says why runs ``python -m dlbench`` as a real process instead,
as do the trainings of the shared lstm and mlp runs."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from runs_fixtures import (
    build_once,
    copy_run,
    differences,
    hook_dir,
    hook_env,
    run_dirs,
    run_dlbench,
    run_in_process,
    shared_root,
    signal_callback,
    snapshot,
    snapshot_tree,
)

V0 = "lightning_logs/lstm/version_0"
LAST0 = f"{V0}/checkpoints/last.ckpt"
MLP = "lightning_logs/mlp/version_0"
F = ("fit", "--model", "lstm", "--trainer.max_epochs", "1")  # the table's F
SWEEP = ("sweep", "--model", "lstm")
TRIAL = ("--", "--trainer.max_epochs", "1")  # keeps a trial short where a sweep wrongly starts one
UNICODE_LOGS = "runs ü/日本"
UNICODE_CSV = "my data/ünï cødé/sün spots.csv"


class Shared:
    """Runs trained once a session, built on first use by whichever worker asks first."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def hook(self) -> Path:
        return hook_dir(self.root)

    @property
    def lstm_run(self) -> Path:
        def build(cwd: Path) -> dict:
            result = run_dlbench("fit", "--model", "lstm", "--trainer.max_epochs", "2", cwd=cwd)
            assert result.returncode == 0, result.stderr[-3000:]
            return {}
        return build_once(self.root, "bad-lstm", build)[0] / V0

    @property
    def mlp_run(self) -> Path:
        def build(cwd: Path) -> dict:
            result = run_dlbench("fit", "--model", "mlp", "--trainer.max_epochs", "1", "--trainer.limit_train_batches",
                                 "2", "--trainer.limit_val_batches", "2", "--test_after_fit", "false", cwd=cwd)
            assert result.returncode == 0, result.stderr[-3000:]
            return {}
        return build_once(self.root, "bad-mlp", build)[0] / MLP

    def record(self, n: int) -> tuple[Path, dict]:
        """Case ``n`` run once a session: its scratch folder (kept for the cases that read its runs) and record."""
        return build_once(self.root, f"bad-case-{n}", lambda cwd: execute(CASES[n], cwd, self, []))


@dataclass
class Ctx:
    cwd: Path
    shared: Shared
    finalizers: list[Callable[[], object]]


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...] | Callable[[Shared], tuple[str, ...]]
    code: int
    says: tuple[str, ...]
    env: dict[str, str] | Callable[[Shared], dict[str, str]] = field(default_factory=dict)
    setup: Callable[[Ctx], None] | None = None
    check: Callable[[Path, dict], list[str]] | None = None  # problems found after the command (empty: none)
    protect: tuple[str, ...] = ()  # files or folders besides runs that must stay byte-identical
    changes: tuple[str, ...] = ()  # runs the case is meant to change (a resume)
    one_line: bool = False  # the whole output is the one-line message
    process: str = ""  # why the case runs as a real `python -m dlbench` process (empty: in the test process)
    timeout: float = 300  # a real process is killed (with all it started) after this; in-process: pytest-timeout


# Setups -------------------------------------------------------------------------------------------------------------

def write(files: dict[str, str]) -> Callable[[Ctx], None]:
    """Files written into the scratch folder (name -> text)."""
    def setup(ctx: Ctx) -> None:
        for name, content in files.items():
            path = ctx.cwd / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    return setup


def series_csv(rows: int, bad_line: int | None = None) -> str:
    """A yearly series, header on line 1; ``bad_line`` (a file line number) holds 'n/a' instead of a value."""
    lines = ["year,value"]
    for i in range(rows):
        value = "n/a" if bad_line == i + 2 else f"{50 + 40 * ((i * 7) % 11) / 10:.1f}"
        lines.append(f"{1700 + i},{value}")
    return "\n".join(lines) + "\n"


def files(ctx: Ctx) -> None:
    write({"empty.yaml": "", "empty.csv": "", "one.csv": "year,value\n1700,5\n",
           "text.csv": series_csv(100, bad_line=59),
           "bad.yaml": "model:\n  hidden_size: 32\n lr: 0.01\n",  # not YAML: line 3's indentation fits no mapping
           "unk.yaml": "trainer:\n  max_epochs: 1\nmodel:\n  hiden_size: 32\n"})(ctx)


def truncated_checkpoint(ctx: Ctx) -> None:  # head -c 1000
    (ctx.cwd / "trunc.ckpt").write_bytes((ctx.cwd / LAST0).read_bytes()[:1000])


def mlp_run(ctx: Ctx) -> None:
    copy_run(ctx.shared.mlp_run, ctx.cwd / MLP)


def copy_without_status(source: Callable[[Shared], Path], name: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        run = copy_run(source(ctx.shared), ctx.cwd / "lightning_logs" / "lstm" / name)
        (run / "status.json").unlink()
    return setup


def max_time_run(shared: Shared) -> Path:  # case 8's run
    return shared.record(8)[0] / "lightning_logs" / "lstm" / "version_1"


def interrupted_run(shared: Shared) -> Path:  # case 30's run
    return shared.record(30)[0] / "lightning_logs" / "lstm" / "version_1"


def resumed_run(shared: Shared) -> Path:  # case 31's run: case 30's, resumed
    return shared.record(31)[0] / "lightning_logs" / "lstm" / "version_1"


def copy_as(source: Callable[[Shared], Path], target: str) -> Callable[[Ctx], None]:
    return lambda ctx: copy_run(source(ctx.shared), ctx.cwd / target)


def corrupt_logs(ctx: Ctx) -> None:
    run = copy_run(ctx.cwd / V0, ctx.cwd / "corruptlogs" / "lstm" / "version_0")
    for events in run.glob("events.out.tfevents*"):
        data = bytearray(events.read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 16):
            data[i] ^= 0xFF
        events.write_bytes(bytes(data))


def edited_plugin_folder(ctx: Ctx) -> None:
    """The folder an earlier ``dlbench new-plugin my_net`` made, since edited by hand."""
    write({"dlbench-my-net/pyproject.toml": "# my own edits\n[project]\nname = 'dlbench-my-net'\n",
           "dlbench-my-net/src/dlbench_my_net/model.py": "# half-written model, keep me\n"})(ctx)


def immutable(ctx: Ctx, name: str = "rologs") -> str | None:
    """``name`` made immutable with chattr +i (undone after the case); None, or why the file system refused."""
    folder = ctx.cwd / name
    folder.mkdir()
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        return f"chattr +i refused: {made.stderr.strip()}"
    ctx.finalizers.append(lambda: subprocess.run(["chattr", "-i", str(folder)], capture_output=True))
    try:
        (folder / "probe").touch()
    except OSError:
        return None
    (folder / "probe").unlink()
    return "chattr +i did not make the folder unwritable here"


def immutable_or_skip(ctx: Ctx) -> None:
    why = immutable(ctx)
    if why:
        pytest.skip(why)


def immutable_if_possible(ctx: Ctx) -> None:
    immutable(ctx)  # the case's point (the evaluation goes into the run, not the log root) holds either way


# Checks -------------------------------------------------------------------------------------------------------------

def status(run: Path) -> str | None:
    file = run / "status.json"
    return json.loads(file.read_text()).get("status") if file.is_file() else None


def new_runs(cwd: Path, record: dict) -> list[str]:
    return sorted({str(r.relative_to(cwd)) for r in run_dirs(cwd)} - set(record["runs_before"]))


def no_new_run(cwd: Path, record: dict) -> list[str]:
    made = new_runs(cwd, record)
    return [f"runs were made: {made}"] if made else []


def nothing_started(cwd: Path, record: dict) -> list[str]:
    problems = no_new_run(cwd, record)
    if (cwd / "sweeps").exists():
        problems.append(f"a study was left behind: {sorted(p.name for p in (cwd / 'sweeps').iterdir())}")
    if "trial 0" in record["out"]:
        problems.append("a trial ran")
    return problems


def one_new_finished_run(cwd: Path, record: dict) -> list[str]:
    made = new_runs(cwd, record)
    if len(made) != 1:
        return [f"expected one new run, got {made}"]
    problems = [] if status(cwd / made[0]) == "finished" else [f"{made[0]} status {status(cwd / made[0])}"]
    if made[0] not in record["out"] + record["err"]:
        problems.append(f"the output does not name the new run {made[0]}")
    return problems


def stays(run: str, expected: str) -> Callable[[Path, dict], list[str]]:
    def check(cwd: Path, record: dict) -> list[str]:
        found = status(cwd / run)
        return [] if found == expected else [f"{run} status is {found}, expected {expected}"]
    return check


def evaluated(run: str, stage: str) -> Callable[[Path, dict], list[str]]:
    def check(cwd: Path, record: dict) -> list[str]:
        folder = cwd / run / "evaluations" / f"{stage}_0"
        problems = [] if (folder / "evaluation.json").is_file() else [f"no {folder.relative_to(cwd)}/evaluation.json"]
        return problems + no_new_run(cwd, record)
    return check


def exported_into_folder(cwd: Path, record: dict) -> list[str]:
    target = cwd / "emptydir" / "lstm-version_0.onnx"
    inside = sorted(p.name for p in (cwd / "emptydir").iterdir())
    if not target.is_file() or target.stat().st_size < 10_000:
        return [f"emptydir holds {inside}, not emptydir/lstm-version_0.onnx"]
    # the export's documented sidecar, <model>.preprocessing.json, may lie beside it; nothing else
    extra = set(inside) - {"lstm-version_0.onnx", "lstm-version_0.preprocessing.json"}
    return [f"emptydir also holds {sorted(extra)}"] if extra else []


def rologs_empty(cwd: Path, record: dict) -> list[str]:
    inside = sorted(p.name for p in (cwd / "rologs").iterdir())
    return ([] if not inside else [f"rologs holds {inside}"]) + evaluated(V0, "test")(cwd, record)


def interrupted(cwd: Path, record: dict) -> list[str]:
    found = status(cwd / "lightning_logs" / "lstm" / "version_1")
    return [] if found == "interrupted" else [f"version_1 status is {found}, expected interrupted"]


def resumed(cwd: Path, record: dict) -> list[str]:
    return stays("lightning_logs/lstm/version_1", "finished")(cwd, record) + no_new_run(cwd, record)


def unicode_run(cwd: Path, record: dict) -> list[str]:
    run = cwd / UNICODE_LOGS / "lstm" / "version_0"
    return [] if status(run) == "finished" else [f"no finished run in {run.relative_to(cwd)}"]


def all_of(*checks: Callable[[Path, dict], list[str]]) -> Callable[[Path, dict], list[str]]:
    return lambda cwd, record: [p for c in checks for p in c(cwd, record)]


def no_gpu() -> str | None:
    import torch

    return "this machine has a GPU: --trainer.accelerator gpu is valid here" if torch.cuda.is_available() else None


# The table ----------------------------------------------------------------------------------------------------------

CASES: dict[int, Case] = {
    1: Case(("fit", "--model", "lstn"), 2, ("unknown plugin 'lstn'", "Did you mean 'lstm'")),
    2: Case(("fitt", "--model", "lstm"), 2, ("unknown command 'fitt'", "Did you mean fit")),
    3: Case(("info", "lsmt"), 2, ("unknown plugin 'lsmt'", "Did you mean 'lstm'")),
    4: Case(("fit", "--model", "cnn", "--data", "fashon_mnist"), 2, ("Did you mean 'fashion_mnist'",)),
    5: Case((*F, "--model.hidden_size", "-3"), 2, ("hidden_size must be >= 1, got -3",)),
    6: Case((*F, "--model.lr", "abc"), 2, ("--model.lr got 'abc', expected float",)),
    7: Case((*F, "--data.batch_size", "0"), 2, ("batch_size must be >= 1, got 0",)),
    # shortened from max_time 00:00:00:20; the run trains until max_time and finishes
    8: Case(("fit", "--model", "lstm", "--trainer.max_epochs", "-1", "--trainer.max_time", "00:00:00:03"), 0,
            ("run directory",), check=one_new_finished_run),
    9: Case(("fit", "--model", "lstm", "--trainer.max_epochs", "-5"), 2, ("--trainer.max_epochs -5",), one_line=True,
            check=no_new_run),
    10: Case(("fit", "--config", "nonexist.yaml"), 2, ("cannot read config file nonexist.yaml",), one_line=True),
    11: Case(("fit", "--config", "empty.yaml"), 2, ("empty.yaml is empty",), setup=files, one_line=True),
    12: Case(("fit", "--model", "lstm", "--config", "empty.yaml"), 2, ("empty.yaml is empty",), setup=files,
             one_line=True),
    13: Case(("fit", "--model", "lstm", "--config", "bad.yaml"), 2, ("bad.yaml, line 3, column",), setup=files,
             one_line=True),
    14: Case(("fit", "--model", "lstm", "--config", "unk.yaml"), 2,
             ("unknown argument --model.hiden_size (set in unk.yaml, line 4)",), setup=files, one_line=True),
    15: Case((*F, "--model.hiden_size", "32"), 2, ("unknown argument --model.hiden_size", "dlbench info lstm")),
    16: Case((*F, "--data.path", "missing.csv"), 2, ("missing.csv does not exist",)),
    17: Case((*F, "--data.path", "empty.csv"), 2, ("empty.csv has no data rows",), setup=files),
    18: Case((*F, "--data.path", "text.csv"), 2, ("text.csv, line 59: column 'value' is not a number",), setup=files),
    19: Case((*F, "--data.path", "one.csv"), 2, ("too short for window=10", "--data.window"), setup=files),
    20: Case((*F, "--data", "mnist"), 2, ("lstm expects series data, mnist is images data",)),
    21: Case((*F, "--data.path", "text.csv", "--data.column", "price"), 2, ("no column 'price'",), setup=files),
    22: Case(("test", "--model", "lstm", "--ckpt_path", "nope/missing.ckpt"), 2, ("does not exist",)),
    23: Case(("test", "--model", "lstm", "--ckpt_path", "trunc.ckpt"), 2, ("trunc.ckpt is corrupt or truncated",),
             setup=truncated_checkpoint),
    24: Case(("test", "--model", "lstm", "--ckpt_path", f"{MLP}/checkpoints/last.ckpt"), 2,
             ("does not fit LSTMForecaster", "MLPClassifier"), setup=mlp_run),
    25: Case(("test", "--model", "lstm", "--model.hidden_size", "7", "--ckpt_path", LAST0), 2,
             ("contradicts the checkpoint",), check=no_new_run),
    26: Case(("fit", "--resume", "lightning_logs/lstm/version_9"), 2, ("does not exist",)),
    27: Case(("fit", "--resume", V0), 0, ("already finished", "nothing to resume"), check=no_new_run),
    28: Case(("fit", "--resume", "lightning_logs/lstm/version_7"), 0, ("nothing to resume",),
             setup=copy_without_status(max_time_run, "version_7"), check=no_new_run),
    29: Case(("fit", "--resume", "lightning_logs/lstm/version_8"), 0, ("nothing to resume",),
             setup=copy_without_status(lambda s: s.lstm_run, "version_8"), check=no_new_run),
    # shortened from max_epochs 20: Ctrl-C (SIGINT) sent by a callback inside the second epoch (step 10 of 7 an epoch)
    30: Case(lambda s: ("fit", "--model", "lstm", "--trainer.max_epochs", "4", "--trainer.callbacks",
                        signal_callback(10, signal.SIGINT, s.root / "bad-case-30.signal-sent")), 130,
             ("Resume with: dlbench fit --resume lightning_logs/lstm/version_1",), env=lambda s: hook_env(s.hook),
             check=interrupted, process="Ctrl-C is a SIGINT sent to the process itself"),
    31: Case(("fit", "--resume", "lightning_logs/lstm/version_1"), 0, ("lightning_logs/lstm/version_1",),
             env=lambda s: hook_env(s.hook), setup=copy_as(interrupted_run, "lightning_logs/lstm/version_1"),
             changes=("lightning_logs/lstm/version_1",), check=resumed),
    32: Case(("compare", "emptydir"), 2, ("no runs under emptydir",), setup=lambda ctx: (ctx.cwd / "emptydir").mkdir()),
    33: Case(("compare", "corruptlogs"), 0, ("corrupt: events.out.tfevents",), setup=corrupt_logs),
    34: Case(("compare", "no/such/dir"), 2, ("no/such/dir does not exist",)),
    35: Case(("compare", "--sort", "val/rmsee"), 2, ("Did you mean val/rmse",)),
    36: Case(("compare", "--filter", "plugin"), 2, ("--filter 'plugin' is not KEY=VALUE",)),
    37: Case(("export", "lightning_logs/lstm/version_42"), 2, ("does not exist",)),
    38: Case(("export", V0, "--format", "tflite"), 2, ("invalid choice: 'tflite'",)),
    39: Case(("export", "trunc.ckpt"), 2, ("trunc.ckpt is corrupt or truncated",), setup=truncated_checkpoint),
    40: Case(("export", V0, "-o", "emptydir"), 0, ("emptydir/lstm-version_0.onnx",),
             setup=lambda ctx: (ctx.cwd / "emptydir").mkdir(), check=exported_into_folder),
    41: Case((*SWEEP, "--param", "model.hidden_size=int:8"), 2, ("model.hidden_size=int:LOW:HIGH",),
             check=nothing_started),
    42: Case((*SWEEP, "--param", "model.lr=float:1e-2:1e-4:log"), 2,
             ("the low bound 0.01 is above the high bound 0.0001",), check=nothing_started),
    43: Case((*SWEEP, "--param", "model.hiden_size=int:8:64", *TRIAL), 2, ("Did you mean model.hidden_size",),
             check=nothing_started),
    44: Case((*SWEEP, "--param", "model.hidden_size=int:8:64", "--storage", "postgress://u:p@localhost/x", *TRIAL), 2,
             ("cannot open the study database",), check=nothing_started),
    45: Case((*SWEEP, "--param", "model.hidden_size=int:8:64", "--storage", "sqlite:////no/such/dir/s.db", *TRIAL), 2,
             ("/no/such/dir",), check=nothing_started),
    46: Case((*SWEEP, "--param", "model.hidden_size=int:8:64", "--trials", "0", *TRIAL), 2,
             ("--trials must be >= 1, got 0",), check=nothing_started),
    47: Case(("compress", MLP, "--method", "shrink"), 2, ("invalid choice: 'shrink'",), setup=mlp_run),
    48: Case(("compress", MLP, "--method", "prune", "--amount", "1.5"), 2, ("between 0 and 1", "got 1.5"),
             setup=mlp_run, check=no_new_run),
    49: Case(("new-plugin", "9-bad-name!"), 2, ("not allowed",),
             check=lambda cwd, r: [f"made {p}" for p in cwd.iterdir() if p.name.startswith("9")]),
    50: Case(("new-plugin", "my_net"), 2, ("already exists",), setup=edited_plugin_folder,
             protect=("dlbench-my-net",)),
    51: Case(("new-plugin", "lstm"), 2, ("'lstm' is already registered",),
             check=lambda cwd, r: ["made lstm/"] if (cwd / "lstm").exists() else []),
    52: Case(F, 2, ("cannot write runs under logfile_in_place",), env={"DLBENCH_LOG_DIR": "logfile_in_place"},
             setup=write({"logfile_in_place": "my notes, not a folder\n"}), protect=("logfile_in_place",)),
    53: Case(F, 2, ("cannot write runs under rologs",), env={"DLBENCH_LOG_DIR": "rologs"}, setup=immutable_or_skip),
    54: Case(("test", "--run", V0), 0, (f"{V0}/evaluations/test_0",), env={"DLBENCH_LOG_DIR": "rologs"},
             setup=immutable_if_possible, check=rologs_empty),
    55: Case((*F, "--data.path", UNICODE_CSV), 0, (f"tensorboard --logdir {shlex.quote(UNICODE_LOGS)}",),
             env={"DLBENCH_LOG_DIR": UNICODE_LOGS}, setup=write({UNICODE_CSV: series_csv(120)}),
             check=unicode_run),
    56: Case(("compare", UNICODE_LOGS), 0, ("finished",),
             setup=copy_as(lambda s: s.record(55)[0] / UNICODE_LOGS / "lstm" / "version_0",
                           f"{UNICODE_LOGS}/lstm/version_0")),
    57: Case(("validate", "--run", "lightning_logs/lstm/version_42"), 2, ("does not exist",)),
    58: Case((*F, "--seed_everything", "abc"), 2, ("--seed_everything got 'abc'",)),
    59: Case((*F, "--trainer.accelerator", "gpu"), 2, ("--trainer.accelerator gpu",), one_line=True),
    60: Case(("test", "--run", "lightning_logs/lstm/version_7", "--ckpt_path", "last"), 0,
             ("lightning_logs/lstm/version_7/evaluations/test_0",),
             setup=copy_without_status(max_time_run, "version_7"),
             check=evaluated("lightning_logs/lstm/version_7", "test")),
    61: Case(("test", "--run", "lightning_logs/lstm/version_9"), 0,
             ("lightning_logs/lstm/version_9/evaluations/test_0",),
             env=lambda s: hook_env(s.hook), setup=copy_as(resumed_run, "lightning_logs/lstm/version_9"),
             check=all_of(evaluated("lightning_logs/lstm/version_9", "test"),
                          stays("lightning_logs/lstm/version_9", "finished"))),
    62: Case(("fit", "--config", "lightning_logs/lstm/version_7/config.yaml", "--trainer.max_epochs", "1"), 0,
             ("run directory",), setup=copy_without_status(max_time_run, "version_7"), check=one_new_finished_run),
    63: Case(("bench", "--models", "lstm,lstn", "--seeds", "1", "--max_epochs", "1"), 2,
             ("unknown plugin 'lstn'", "Did you mean 'lstm'"), check=no_new_run),
    64: Case(("fit", "--model", "lstm", "--model.lr", "1e12", "--trainer.max_epochs", "2"), 2,
             ("training loss diverged", "smaller --model.lr"), timeout=240,
             process="the diverged fit leaves dlbench's Ctrl-C handler installed, which must not stay in the test "
                     "process"),
    65: Case(("export", V0, "-o", "/proc/nope/x.onnx"), 2, ("/proc/nope",), one_line=True),
}
assert sorted(CASES) == list(range(1, 66))
RECORDED = {8, 30, 31, 55}  # run once a session: later cases read their runs
SKIP = {59: no_gpu}


def execute(case: Case, cwd: Path, shared: Shared, finalizers: list) -> dict:
    """Set the scratch folder up (the earlier lstm run, then the case's own files), snapshot every run in it and the
    protected paths, run the command, and record what it printed and what changed."""
    copy_run(shared.lstm_run, cwd / V0)
    if case.setup is not None:
        case.setup(Ctx(cwd, shared, finalizers))
    runs = [str(r.relative_to(cwd)) for r in run_dirs(cwd)]
    watched = {p: snapshot for p in runs if p not in case.changes} | {p: snapshot_tree for p in case.protect}
    before = {p: take(cwd / p) for p, take in watched.items()}
    args = case.args(shared) if callable(case.args) else case.args
    env = case.env(shared) if callable(case.env) else case.env
    if case.process:
        result = run_dlbench(*args, cwd=cwd, env=env, timeout=case.timeout)
    else:
        result = run_in_process(*args, cwd=cwd, env=env)
    diffs = {p: differences(before[p], take(cwd / p)) for p, take in watched.items()}
    return {"rc": result.returncode, "out": result.stdout[-20000:], "err": result.stderr[-20000:], "runs_before": runs,
            "diffs": {p: d for p, d in diffs.items() if d}, "left_behind": getattr(result, "left_behind", [])}


@pytest.fixture(scope="session")
def shared(tmp_path_factory, worker_id) -> Shared:
    return Shared(shared_root(tmp_path_factory, worker_id))


def _id(n: int) -> str:
    args = CASES[n].args
    words = [a for a in args if not a.startswith("{")][:4] if isinstance(args, tuple) else ["fit", "sigint"]
    return f"{n:02d}-" + "-".join(w.strip("-").replace("/", "_") for w in words)[:40]


@pytest.mark.parametrize("n", sorted(CASES), ids=_id)
def test_bad_input(n, shared, tmp_path):
    case = CASES[n]
    why = SKIP[n]() if n in SKIP else None
    if why:
        pytest.skip(why)
    if n in RECORDED:
        cwd, record = shared.record(n)
    else:
        cwd, finalizers = tmp_path, []
        try:
            record = execute(case, cwd, shared, finalizers)
        finally:
            for undo in finalizers:
                undo()
    output = record["out"] + record["err"]
    shown = f"exit {record['rc']}; stdout ...{record['out'][-1500:]!r}; stderr ...{record['err'][-2500:]!r}"
    problems = []
    if record["rc"] != case.code:
        problems.append(f"exit code {record['rc']}, expected {case.code}")
    problems += [f"the output does not say {phrase!r}" for phrase in case.says if phrase.lower() not in output.lower()]
    if "Traceback" in output:
        problems.append("a traceback was printed")
    if record["left_behind"]:
        problems.append(f"run in the test process, the command left behind {record['left_behind']}")
    problems += [f"{path} changed: {diff}" for path, diff in record["diffs"].items()]
    lines = [line for line in output.splitlines() if line.strip()]
    if case.one_line and len(lines) != 1:
        problems.append(f"{len(lines)} lines of output, expected the one-line message")
    if case.check is not None:
        problems += case.check(cwd, record)
    assert not problems, f"case {n}: " + "; ".join(problems) + f"\n{shown}"

