"""Runs are never lost or corrupted: interruption and resume, kill -9, concurrent starts, bad input, unsafe files."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
import torch
from conftest import dlbench

from dlbench.runs import read_scalars

STEPS = 207  # an epoch of the run below: 207 training windows one at a time, about a second, room to stop inside it
SMALL = ("--model", "lstm", "--model.hidden_size", "16", "--data.batch_size", "1", "--trainer.max_epochs", "4",
         "--trainer.enable_progress_bar", "false")


def _start(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DLBENCH_LOG_DIR", None)
    return subprocess.Popen([sys.executable, "-m", "dlbench", "fit", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(run: Path, steps: int, process: subprocess.Popen, timeout: float = 240) -> None:
    status, deadline = run / "status.json", time.time() + timeout
    while time.time() < deadline:
        if status.exists() and json.loads(status.read_text()).get("steps", 0) >= steps:
            return
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the run did not reach the step in time")


def _curve(run: Path, tag: str) -> list[tuple[int, float]]:
    return read_scalars(run)[tag]


SIGNAL_AT = '''
import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SignalAt(Callback):
    """Sends this process ``signum`` once, when training has taken ``step`` steps: the signal a user's Ctrl-C or a
    scheduler's SIGTERM delivers, at a known batch however loaded the machine is. ``marker`` records that it was
    sent, so the run resumed from the same config is not stopped again."""

    def __init__(self, step: int, signum: int, marker: str) -> None:
        self.step, self.signum, self.marker = step, signum, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), self.signum)
'''


def _stop_in_second_epoch(tmp_path: Path, monkeypatch, how: signal.Signals) -> tuple[Path, dict]:
    """A run sent ``how`` halfway through its second epoch; checks it stopped there, said how to resume, and wrote
    ``last.ckpt`` at the step it stopped."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "dlbench_signal_at.py").write_text(SIGNAL_AT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    at = STEPS + STEPS // 2
    callback = [{"class_path": "dlbench_signal_at.SignalAt",
                 "init_args": {"step": at, "signum": int(how), "marker": str(hook / "sent")}}]
    run = tmp_path / "lightning_logs" / "lstm" / "version_0"
    process = _start(tmp_path, *SMALL, "--trainer.callbacks", json.dumps(callback))
    _, err = process.communicate(timeout=300)
    assert (hook / "sent").exists(), err
    assert process.returncode == 130, err
    assert f"Resume with: dlbench fit --resume {Path('lightning_logs/lstm/version_0')}" in err
    assert "Traceback" not in err
    status = json.loads((run / "status.json").read_text())
    # Stopped at the batch boundary right after the signal (inside the second epoch), not at the epoch's end.
    assert status["status"] == "interrupted" and status["steps"] == at
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == status["steps"]  # the checkpoint was written where it stopped
    return run, status


def test_sigterm_stops_at_a_batch_boundary_with_a_checkpoint(tmp_path, monkeypatch):
    _stop_in_second_epoch(tmp_path, monkeypatch, signal.SIGTERM)


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """Ctrl-C stops at a batch boundary with a checkpoint; the resumed run matches, number for number, a run that
    was never stopped (same batches, same random draws)."""
    run, status = _stop_in_second_epoch(tmp_path, monkeypatch, signal.SIGINT)

    resumed = dlbench("fit", "--resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert not (run.parent / "version_1").exists()  # same run directory, no second run

    straight = dlbench("fit", *SMALL, cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    reference = run.parent / "version_1"
    for tag in ("val/loss", "val/rmse", "test/rmse"):
        steps, values = zip(*_curve(run, tag), strict=True)
        ref_steps, ref_values = zip(*_curve(reference, tag), strict=True)
        assert steps == ref_steps, tag
        assert values == pytest.approx(ref_values, rel=1e-6), tag
    # The epoch mean of the training loss in the interrupted epoch averages only the batches run after the resume
    # (metric accumulators are not checkpointed); every other epoch's value is identical.
    stopped_epoch = status["steps"] // STEPS
    train, train_ref = _curve(run, "train/loss"), _curve(reference, "train/loss")
    assert [s for s, _ in train] == [s for s, _ in train_ref]
    del train[stopped_epoch], train_ref[stopped_epoch]
    assert [v for _, v in train] == pytest.approx([v for _, v in train_ref], rel=1e-6)

    again = dlbench("fit", "--resume", str(run), cwd=tmp_path)
    assert again.returncode == 0 and "already finished" in again.stdout


def test_kill_9_then_resume_continues_from_the_last_checkpoint_without_duplicate_steps(tmp_path):
    run = tmp_path / "lightning_logs" / "lstm" / "version_0"
    process = _start(tmp_path, *SMALL)
    _wait_for_steps(run, 2 * STEPS, process)
    time.sleep(0.2)
    process.kill()
    process.wait()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "running"  # nobody could mark it: the process died mid-write of nothing
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] % STEPS == 0

    resumed = dlbench("fit", "--resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    steps = [s for s, _ in _curve(run, "train/loss")]
    assert steps == [STEPS * (e + 1) - 1 for e in range(4)]  # one point an epoch, none twice, none missing
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


def test_concurrent_starts_get_distinct_run_directories(tmp_path):
    quick = ("--model", "lstm", "--model.hidden_size", "8", "--trainer.max_epochs", "1",
             "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1", "--test_after_fit", "false",
             "--trainer.enable_progress_bar", "false")
    processes = [_start(tmp_path, *quick) for _ in range(4)]
    for p in processes:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    runs = sorted((tmp_path / "lightning_logs" / "lstm").iterdir())
    assert [r.name for r in runs] == [f"version_{i}" for i in range(4)]
    for r in runs:  # each run complete and its own
        assert (r / "config.yaml").is_file() and (r / "checkpoints" / "last.ckpt").is_file()
        assert json.loads((r / "status.json").read_text())["status"] == "finished"


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_whose_pickle_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(str(marker))}, evil)
    result = dlbench("test", "--model", "lstm", "--ckpt_path", str(evil), cwd=tmp_path)
    assert result.returncode == 2
    assert "could run code" in result.stderr and "--weights_only false" in result.stderr
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the same file through torch's own safe loader
        torch.load(evil, weights_only=True)
    assert not marker.exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("finished")
    result = dlbench("fit", "--model", "lstm", "--model.hidden_size", "8", "--trainer.max_epochs", "2", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "lightning_logs" / "lstm" / "version_0"


def _bad_inputs(tmp: Path, run: Path) -> dict[str, tuple[list[str], dict, int, str]]:
    (tmp / "broken.yaml").write_text("model: [unclosed\n")
    (tmp / "unknown_key.yaml").write_text("model:\n  class_path: dlbench_plugins.lstm.model.LSTMForecaster\n"
                                          "  init_args:\n    hidden_sizes: 3\n")
    ckpt = run / "checkpoints" / "last.ckpt"
    (tmp / "truncated.ckpt").write_bytes(ckpt.read_bytes()[:5000])
    (tmp / "not_a_checkpoint.ckpt").write_text("hello")
    (tmp / "bad.csv").write_text("year,value\n1,2\n2,oops\n")
    other = {"state_dict": {"encoder.weight": torch.zeros(2, 2)}, "hyper_parameters": {"_class_path": "other.Model"}}
    torch.save(other, tmp / "other_plugin.ckpt")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2, 2)}}, tmp / "other_weights.ckpt")
    # Standard datasets given by path, in their real formats but cut short: MNIST's gzipped IDX files, an FSDD WAV.
    (tmp / "mnist").mkdir()
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (100, 28, 28))
    idx = gzip.compress(header + bytes(range(256)) * 300)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp / "mnist" / f"{name}.gz").write_bytes(idx[: len(idx) // 2])
    (tmp / "fsdd").mkdir()
    with wave.open(str(tmp / "fsdd" / "3_jackson_0.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(bytes(8000))
    (tmp / "fsdd" / "3_jackson_0.wav").write_bytes((tmp / "fsdd" / "3_jackson_0.wav").read_bytes()[:30])
    blocker = tmp / "a_file"
    blocker.write_text("")
    return {
        "unknown dataset": (["fit", "--model", "lstm", "--data", "sunspot"], {}, 2, "Did you mean 'sunspots'"),
        "incompatible data": (["fit", "--model", "lstm", "--data", "digits"], {}, 2, "expects series data"),
        "zero batch size": (["fit", "--model", "lstm", "--data.batch_size", "0"], {}, 2, "batch_size must be >= 1"),
        "negative lr": (["fit", "--model", "lstm", "--model.lr", "-1"], {}, 2, "lr must be > 0"),
        "malformed yaml": (["fit", "--config", "broken.yaml"], {}, 2, "not valid YAML"),
        "unknown config key": (["fit", "--config", "unknown_key.yaml"], {}, 2, "hidden_sizes"),
        "truncated gzip IDX file": (["fit", "--model", "mlp", "--data", "mnist", "--data.root", "mnist"], {}, 2,
                                    "damaged gzip file"),
        "truncated WAV file": (["fit", "--model", "audio", "--data", "fsdd", "--data.root", "fsdd"], {}, 2,
                               "3_jackson_0.wav is not a readable PCM WAV file"),
        "missing data file": (["fit", "--model", "lstm", "--data.path", "nope.csv"], {}, 2, "does not exist"),
        "corrupt data file": (["fit", "--model", "lstm", "--data.path", "bad.csv"], {}, 2, "line 3"),
        "truncated checkpoint": (["test", "--model", "lstm", "--ckpt_path", "truncated.ckpt"], {}, 2,
                                 "corrupt or truncated"),
        "not a checkpoint": (["test", "--model", "lstm", "--ckpt_path", "not_a_checkpoint.ckpt"], {}, 2,
                             "corrupt or truncated"),
        "checkpoint of another plugin": (["test", "--model", "lstm", "--ckpt_path", "other_plugin.ckpt"], {}, 2,
                                         "saved by other.Model"),
        "checkpoint of other weights": (["test", "--model", "lstm", "--ckpt_path", "other_weights.ckpt"], {}, 2,
                                        "does not fit LSTMForecaster"),
        "missing checkpoint": (["test", "--model", "lstm", "--ckpt_path", "gone.ckpt"], {}, 2, "does not exist"),
        "resume of a missing run": (["fit", "--resume", "lightning_logs/lstm/version_99"], {}, 2, "does not exist"),
        "unwritable log directory": (["fit", "--model", "lstm"], {"DLBENCH_LOG_DIR": str(blocker / "runs")}, 2,
                                     "cannot write runs under"),
    }


CASES = ["unknown dataset", "incompatible data", "zero batch size", "negative lr", "malformed yaml",
         "unknown config key", "missing data file", "corrupt data file",
         "truncated gzip IDX file", "truncated WAV file", "truncated checkpoint", "not a checkpoint",
         "checkpoint of another plugin", "checkpoint of other weights", "missing checkpoint", "resume of a missing run",
         "unwritable log directory"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_ends_with_a_clear_message_and_loses_nothing(case, finished_run, tmp_path):
    args, env, code, says = _bad_inputs(tmp_path, finished_run)[case]
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    result = dlbench(*args, cwd=tmp_path, env=env)
    assert result.returncode == code, result.stderr
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()} == before


def test_nan_keeps_the_last_good_checkpoint(tmp_path):
    result = dlbench("fit", "--model", "lstm", "--model.lr", "1e30", "--trainer.max_epochs", "3", cwd=tmp_path)
    assert result.returncode == 2  # a learning rate of 1e30 is the user's mistake: one paragraph, exit 2
    assert ("NaN or infinite at step" in result.stderr or "diverged" in result.stderr) \
        and "smaller --model.lr (now 1e+30" in result.stderr and "--trainer.gradient_clip_val" in result.stderr
    assert "Traceback" not in result.stderr
    run = tmp_path / "lightning_logs" / "lstm" / "version_0"
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), ckpt.name
