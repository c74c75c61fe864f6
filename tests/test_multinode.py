"""Multi-node DDP through Lightning's own launcher path: two ``torchrun`` agents on localhost, one a "node", each
starting one ``dlbench fit`` worker (CPU, gloo), against a single process with twice the per-rank batch.

The two agents use torchrun's static rendezvous (``--rdzv-backend static --node-rank R --master-addr 127.0.0.1
--master-port P``): node 0's agent hosts the TCP store on P, and the workers find each other through it, so nothing
but loopback is needed. ``GLOO_SOCKET_IFNAME=lo`` pins gloo to the loopback interface where the machine has one
(gloo otherwise picks the address the host name resolves to, which on a machine without network may be unreachable;
here the host name resolves to 127.0.0.1 and the setting changes nothing).

Why the two-node run must equal the single process up to float rounding: ``TensorLoader`` draws one permutation
an epoch from (seed, epoch), the same on every rank and in the single process, and rank r takes the positions
``r, r + 2, r + 4, ...`` of it. Step k of rank r is therefore positions ``2Bk + r, 2Bk + r + 2, ..., 2Bk + 2B - 2 + r``,
and the two ranks' batches at step k together are exactly positions ``2Bk ... 2B(k + 1) - 1``: the single process's
batch of 2B at step k. With the same number of samples on each rank, DDP's average of the two ranks' mean gradients
is the mean gradient over the 2B samples, so every AdamW step is the same step, in another summation order (float
differences of ~1e-7, observed 5e-8 on the weights). That holds for the short last batch too when the training split
has an even size (1,150 images with ``--data.val_fraction 0.2``: 575 a rank, last batch 31 + 31 = 62), and for the
288 validation images (144 a rank). Dropout is set to 0: with dropout each rank would draw masks from the same seed
for its own B rows, not the single process's masks for 2B rows. The seed (42) is the same everywhere, so the
initial weights and the permutations agree.

The one difference that is not rounding: the digits test split has 359 images, an odd number, so the sharded test
loader pads it to 360 by wrapping around (as ``DistributedSampler`` does), and test image 0 is counted twice. The
two-node ``test/acc`` is then exactly ``(359 * acc_single + correct_0) / 360`` and ``test/loss`` is ``(359 * loss_single
+ loss_0) / 360``, with ``correct_0`` and ``loss_0`` of that image under the best checkpoint; the test checks that
relation, computing image 0's loss and correctness itself (a difference of at most 1/360 in accuracy).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from dlbench.runs.run import read_scalars

B = 32
"""Images a batch on each of the two ranks; the single process takes 2 * B."""
FIT = ("fit", "--model", "mlp", "--model.dropout", "0", "--data.val_fraction", "0.2", "--trainer.max_epochs", "3",
       "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
NODES = ("--trainer.num_nodes", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
         "--trainer.devices", "1")
TRAIN, VAL, TEST = 1150, 288, 359
"""Split sizes of the digits data with --data.val_fraction 0.2 (train and validation even, test odd)."""
TIMEOUT = 240
"""Seconds for each run (one process, or both nodes together); a normal run takes 10-20 s on 2 cores."""
ROUNDING = {"rel": 1e-5, "abs": 1e-6}
"""The same computation summed in another order: observed differences are ~1e-7."""

PROBE = '''
import hashlib
import json
import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class RankProbe(Callback):
    """Writes ``<out_dir>/rank<R>.json``: who this process was in the run, and a fingerprint of every training
    image it was given, step by step (sha1 of the normalised pixels' bytes and the label)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x, y = batch
        rows = x.detach().cpu().contiguous().flatten(1)
        self.batches.append([trainer.current_epoch, batch_idx,
                             [hashlib.sha1(r.numpy().tobytes() + bytes([int(c)])).hexdigest()[:16]
                              for r, c in zip(rows, y.tolist())]])

    def on_fit_end(self, trainer, pl_module) -> None:
        env = getattr(trainer.strategy, "cluster_environment", None)  # none on a single-device strategy
        record = {"world_size": trainer.world_size, "global_rank": trainer.global_rank,
                  "local_rank": trainer.local_rank, "node_rank": trainer.node_rank, "num_nodes": trainer.num_nodes,
                  "pid": os.getpid(), "environment": type(env).__name__ if env is not None else None,
                  "master": f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}",
                  "batches": self.batches}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def _env(hook: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DLBENCH_LOG_DIR"}  # runs land under cwd
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
                 "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        env.pop(name, None)  # nothing of an outer launcher or scheduler may leak into the children
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; torchrun starts its workers in sessions of their own, so killing
    the agent's process group would miss them)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            children[int(stat.read_text().rsplit(")", 1)[1].split()[1])].append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill(procs: list[subprocess.Popen]) -> None:
    """SIGKILL each still-running launcher's process group and every process below it, by id."""
    for proc in procs:
        if proc.poll() is not None:
            continue
        below = _descendants(proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # started with start_new_session: the group is the launcher's
        for pid in below:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def _run_all(commands: list[list[str]], cwd: Path, env: dict[str, str], logs: list[Path]) -> tuple[list[int], float]:
    """Start every command at once, wait for all within TIMEOUT; on a timeout or any error kill them all.
    Returns the exit codes and the wall time."""
    procs: list[subprocess.Popen] = []
    start = time.monotonic()
    try:
        for command, log in zip(commands, logs, strict=True):
            with log.open("w") as out:
                procs.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=max(1.0, TIMEOUT - (time.monotonic() - start))))
            except subprocess.TimeoutExpired:
                _kill(procs)
                tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs)
                pytest.fail(f"run did not end within {TIMEOUT} s: {commands}\n{tails}")
        return codes, time.monotonic() - start
    finally:
        _kill(procs)  # nothing is left running whatever happened above


def _probe_args(hook: Path, out_dir: Path) -> list[str]:
    (hook / "dlbench_rank_probe.py").write_text(textwrap.dedent(PROBE))
    spec = [{"class_path": "dlbench_rank_probe.RankProbe", "init_args": {"out_dir": str(out_dir)}}]
    return ["--trainer.callbacks", json.dumps(spec)]


def _batches(record: dict) -> dict[tuple[int, int], list[str]]:
    return {(epoch, step): rows for epoch, step, rows in record["batches"]}


def _only_run(root: Path) -> Path:
    assert sorted(p.name for p in (root / "lightning_logs").iterdir()) == ["mlp"]
    runs = sorted(p.name for p in (root / "lightning_logs" / "mlp").iterdir())
    assert runs == ["version_0"], f"expected one run directory, found {runs}"  # rank 1 made none of its own
    return root / "lightning_logs" / "mlp" / "version_0"


def _checkpoints(root: Path, run: Path) -> list[str]:
    found = sorted(root.rglob("*.ckpt"))
    assert all(p.parent == run / "checkpoints" for p in found), f"checkpoints outside the run: {found}"
    return [p.name for p in found]


def _image_zero(checkpoint: Path) -> tuple[float, float]:
    """Cross-entropy and correctness (0 or 1) of test image 0 under ``checkpoint``: the image the sharded test
    loader counts twice."""
    from dlbench_plugins.images.data import DigitsDataModule
    from dlbench_plugins.mlp.model import MLPClassifier

    data = DigitsDataModule(val_fraction=0.2)
    data.setup("test")
    x, y = data.splits["test"]
    assert len(y) == TEST
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = MLPClassifier(**{k: v for k, v in saved["hyper_parameters"].items() if not k.startswith("_")})
    model.load_state_dict(saved["state_dict"])
    model.eval()
    with torch.no_grad():
        logits = model(data.normalize(x[:1]))
    loss = torch.nn.functional.cross_entropy(logits, y[:1])
    return float(loss), float(logits.argmax(-1).item() == y[0].item())


def test_two_torchrun_nodes_train_exactly_as_one_process_with_twice_the_batch(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    env = _env(hook)

    # One process, batch 2B.
    single = tmp_path / "single"
    single.mkdir()
    command = [sys.executable, "-m", "dlbench", *FIT, "--data.batch_size", str(2 * B),
               *_probe_args(hook, single / "probe")]
    (code,), single_seconds = _run_all([command], single, env, [tmp_path / "single.log"])
    assert code == 0, (tmp_path / "single.log").read_text()[-3000:]

    # Two nodes, one process each, batch B each: the same command on both, only --node-rank differs.
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    port = _free_port()
    commands = [[*_torchrun(), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                 "--rdzv-backend", "static", "--master-addr", "127.0.0.1", "--master-port", str(port),
                 "-m", "dlbench", *FIT, "--data.batch_size", str(B), *NODES, *_probe_args(hook, nodes / "probe")]
                for rank in (0, 1)]
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    codes, nodes_seconds = _run_all(commands, nodes, env, logs)
    assert codes == [0, 0], "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
    print(f"\nsingle process (batch {2 * B}): {single_seconds:.1f} s; two torchrun nodes (batch {B} a rank): "
          f"{nodes_seconds:.1f} s")

    # Both ranks took part, each on its own node, found by Lightning in torchrun's environment.
    ranks = {r: json.loads((nodes / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)}
    for r, record in ranks.items():
        assert record["environment"] == "TorchElasticEnvironment"
        assert (record["world_size"], record["num_nodes"], record["global_rank"]) == (2, 2, r)
        assert (record["node_rank"], record["local_rank"]) == (r, 0)
        assert record["master"] == f"127.0.0.1:{port}"
    assert ranks[0]["pid"] != ranks[1]["pid"]
    alone = json.loads((single / "probe" / "rank0.json").read_text())
    assert (alone["world_size"], alone["num_nodes"], alone["global_rank"]) == (1, 1, 0)

    # Each rank trained on its own half, and the two halves of every step are the single process's batch.
    one, two = _batches(alone), [_batches(ranks[r]) for r in (0, 1)]
    assert set(one) == set(two[0]) == set(two[1]) and len(one) == 3 * 18  # 3 epochs of ceil(1150 / 64) steps
    for epoch in range(3):
        seen = [sum(len(rows) for (e, _), rows in half.items() if e == epoch) for half in two]
        assert seen == [TRAIN // 2, TRAIN // 2], f"epoch {epoch}: images a rank {seen}"
        shards = [collections.Counter(h for (e, _), rows in half.items() if e == epoch for h in rows) for half in two]
        assert not shards[0] & shards[1], f"epoch {epoch}: the ranks shared training images"
    for key, rows in one.items():
        assert collections.Counter(rows) == collections.Counter(two[0][key] + two[1][key]), f"epoch, step {key}"

    # One run directory, one writer of event files (rank 0), checkpoints written once.
    run, single_run = _only_run(nodes), _only_run(single)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert (run / "config.yaml").is_file() and (run / "hparams.yaml").is_file()
    events = sorted(run.glob("events.out.tfevents.*"))
    # A single process writes two event files as well (the fit writer, then a new one for the test after fit); what
    # matters is that every file is rank 0's: the name ends in <host>.<pid>.<n>.
    assert len(events) == len(list(single_run.glob("events.out.tfevents.*"))) == 2, events
    assert {int(f.name.split(".")[-2]) for f in events} == {ranks[0]["pid"]}, "event files not all from rank 0"
    names = _checkpoints(nodes, run)
    assert names == _checkpoints(single, single_run) and len(names) == 2 and "last.ckpt" in names, names
    assert "Results" in logs[0].read_text() and "Results" not in logs[1].read_text()  # rank 0 alone reports

    # The same weights, up to summation order.
    weights = [torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
               for r in (single_run, run)]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-5, atol=1e-6, msg=name)

    # The same curves, read back from the event files with TensorBoard's reader.
    got, want = read_scalars(run), read_scalars(single_run)
    for tag in ("train/loss", "val/loss", "val/acc"):
        assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]] and len(want[tag]) == 3, tag
        for (step, value), (_, expected) in zip(got[tag], want[tag], strict=True):
            # val/acc: the same count of 288 images right (one image more or less would be 0.0035)
            assert value == pytest.approx(expected, **ROUNDING), f"{tag} at step {step}"
    # Test: the 359 images once each, plus image 0 a second time on the two nodes (see the module docstring).
    loss0, correct0 = _image_zero(single_run / "checkpoints" / next(n for n in names if n.startswith("best-")))
    (_, acc_1), (_, acc_2) = want["test/acc"][-1], got["test/acc"][-1]
    (_, loss_1), (_, loss_2) = want["test/loss"][-1], got["test/loss"][-1]
    assert acc_2 == pytest.approx((TEST * acc_1 + correct0) / (TEST + 1), abs=1e-6)
    assert loss_2 == pytest.approx((TEST * loss_1 + loss0) / (TEST + 1), **ROUNDING)
    assert abs(acc_2 - acc_1) <= 1 / (TEST + 1) + 1e-6
    (_, val_1), (_, val_2) = want["val/loss"][-1], got["val/loss"][-1]
    print(f"val/loss {val_1:.7f} vs {val_2:.7f}, val/acc {want['val/acc'][-1][1]:.6f} vs {got['val/acc'][-1][1]:.6f}, "
          f"test/acc {acc_1:.6f} vs {acc_2:.6f}, test/loss {loss_1:.6f} vs "
          f"{loss_2:.6f} (image 0: loss {loss0:.4f}, correct {correct0:.0f})")
