"""What a person reads while and after a fit runs: the console of ``dlbench fit --model lstm`` as a whole (one pipe,
as ``dlbench fit ... 2>&1 | tee log`` shows it), the Results block's verdict on the baseline, an interruption and
its resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runs_fixtures import hook_dir, hook_env, run_in_process, signal_callback

from dlbench.core import registry
from dlbench.train.results import Verdict, verdict

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  step (\d+)  ([\d.]+) s  (.*)$")


def console(*args: str, cwd: Path, env: dict | None = None) -> tuple[int, list[str], float]:
    """``dlbench ARGS`` in a process of its own, stdout and stderr into one pipe (their order as a user sees it):
    the exit code, the lines and the wall time."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("DLBENCH_LOG_DIR", "DLBENCH_PROGRESS")}
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "dlbench", *args], cwd=cwd, env=full_env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    return done.returncode, done.stdout.splitlines(), time.monotonic() - started


def epoch_lines(lines: list[str]) -> list[tuple[int, int, int, float, dict[str, float]]]:
    """(epoch, of, step, seconds, metrics) of every epoch line."""
    found = []
    for line in lines:
        match = EPOCH_LINE.match(line)
        if match:
            parts = match.group(5).split("  ")
            metrics = {k: float(v) for k, v in (p.split(" ") for p in parts)}
            found.append((int(match.group(1)), int(match.group(2)), int(match.group(3)), float(match.group(4)),
                          metrics))
    return found


def results(lines: list[str]) -> dict[str, str]:
    """The Results block as label -> text (continuation lines joined to their label)."""
    block, label = {}, None
    for line in lines[lines.index("Results") + 1:]:
        if not line.startswith("  "):
            break
        head, text = line[2:18].strip(), line[19:]
        if head:
            label = head
            block[label] = text
        elif label:
            block[label] += " " + text.strip()
    return block


def test_the_console_of_a_fit_is_what_a_person_needs(tmp_path):
    code, lines, _ = console("fit", "--model", "lstm", "--trainer.max_epochs", "20", cwd=tmp_path)
    text = "\n".join(lines)
    assert code == 0, text
    assert all(len(line) <= 120 for line in lines), max(lines, key=len)
    assert "TPU" not in text and "GPU available" not in text, text  # no accelerator this machine lacks
    assert "Trainer already configured" not in text and "LossMean" not in text and "| Name" not in text, text
    models = [line for line in lines if line.startswith("model ")]
    assert len(models) == 1 and models[0].startswith("model LSTMForecaster: 50.5 K parameters (all trainable)"), \
        models
    epochs = epoch_lines(lines)
    assert [e[0] for e in epochs] == list(range(1, 21)) and {e[1] for e in epochs} == {20}, text
    stop = next(i for i, line in enumerate(lines) if line.startswith("training stopped: max_epochs=20"))
    assert stop > max(i for i, line in enumerate(lines) if EPOCH_LINE.match(line)), text  # after the last epoch

    # One way of counting epochs: the best checkpoint's name is the epoch line with the best val/rmse, from 1.
    best_epoch, _, best_step, _, _ = min(epochs, key=lambda e: e[4]["val/rmse"])
    block = results(lines)
    assert block["best checkpoint"].endswith(f"best-epoch={best_epoch}-step={best_step}.ckpt"), block
    assert (tmp_path / block["best checkpoint"]).is_file()

    # The verdict: the score, its baseline in words, the direction and the margin, with the numbers logged.
    score = float(re.fullmatch(r"test/rmse (\S+)", block["score"]).group(1))
    baseline = float(re.match(r"(\S+)  persistence: the last value repeated \(test/rmse_persistence\)$",
                              block["baseline"]).group(1))
    assert score < baseline
    margin = float(re.match(r"lower is better: beats the baseline by (\S+) \(\d+% lower\)$", block["verdict"]).group(1))
    assert margin == pytest.approx(baseline - score, rel=2e-3, abs=2e-3)
    assert "Restoring states" not in text and "Loaded model weights" not in text  # the block names the checkpoint


def test_a_run_that_did_not_beat_its_baseline_says_so_and_the_full_summary_lists_layers_only(tmp_path):
    result = run_in_process("fit", "--model", "lstm", "--trainer.max_epochs", "1", "--summary", "full",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    block = results(result.stderr.splitlines())
    assert block["verdict"].startswith("lower is better: did NOT beat the baseline ("), block
    assert "train longer (--trainer.max_epochs) or try another --model.lr" in block["verdict"]
    rows = [line for line in result.stderr.splitlines() if re.match(r"^\d+ \| ", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["lstm", "head"], result.stderr  # no metric objects
    assert not any(line.startswith("model LSTMForecaster") for line in result.stderr.splitlines())


@pytest.mark.parametrize(("mode", "score", "baseline", "words"), [
    ("max", 0.701, 0.231, "higher is better: beats the baseline by 0.47 (203% higher)"),
    ("max", 0.0, 0.381, "higher is better: did NOT beat the baseline (0 vs 0.381)"),
    ("min", 14.5, 29.3, "lower is better: beats the baseline by 14.8 (51% lower)"),
    ("min", 2.0, 2.0, "lower is better: only ties the baseline"),
    ("min", float("nan"), 2.0, "lower is better: did NOT beat the baseline (nan vs 2)"),
])
def test_verdict_sentences(mode, score, baseline, words):
    found = Verdict("test/x", score, "test/x_base", baseline, mode, "base")
    assert found.sentence().startswith(words)


def test_every_built_in_names_its_score_and_baseline_in_words():
    for entry in registry.entries(registry.PLUGINS):
        spec = entry.spec
        found = verdict(spec, {spec.score: 1.0, spec.baseline: 2.0})
        assert found is not None and found.label and found.label != spec.baseline, entry.name
        assert found.mode in ("min", "max")


def test_ctrl_c_is_an_interruption_and_the_resume_times_and_names_epochs_rightly(tmp_path):
    hook = hook_dir(tmp_path)
    env = hook_env(hook)
    stop = signal_callback(10, signal.SIGINT, tmp_path / "sent")  # inside the second epoch (7 steps an epoch)
    code, lines, _ = console("fit", "--model", "lstm", "--trainer.max_epochs", "4", "--trainer.callbacks", stop,
                             cwd=tmp_path, env=env)
    text = "\n".join(lines)
    assert code == 130, text
    assert "error" not in text.lower(), text
    assert "dlbench: training interrupted during epoch 2/4, at step 10; checkpoint saved to " in text, text
    assert "Resume with: dlbench fit --resume lightning_logs/lstm/version_0" in text

    code, lines, wall = console("fit", "--resume", "lightning_logs/lstm/version_0", cwd=tmp_path, env=env)
    text = "\n".join(lines)
    assert code == 0, text
    assert "exists and is not empty" not in text, text  # the run's own checkpoint directory
    epochs = epoch_lines(lines)
    assert [e[0] for e in epochs] == [2, 3, 4], text
    assert all(0 <= e[3] <= wall for e in epochs), epochs  # each epoch's time is its own, not since boot
    names = sorted(p.name for p in (tmp_path / "lightning_logs/lstm/version_0/checkpoints").glob("best-*.ckpt"))
    assert len(names) == 1 and re.fullmatch(r"best-epoch=[1-4]-step=\d+\.ckpt", names[0]), names
