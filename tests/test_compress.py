"""``dlbench compress``: real tiny runs of mlp (digits) and lstm (sunspots) pruned, quantized and distilled, each
checked on what it claims; bad input ends in one paragraph and exit code 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import dlbench
from torch import nn

from dlbench.cli import main as dlbench_main
from dlbench.core.errors import DlbenchError
from dlbench.runs import last_scalars
from dlbench.runs.trained import TrainedRun
from dlbench.testing import QUIET, using_log_root
from dlbench.tools import compress

FAST = ["--repeats", "5"]
NO_SUMMARY = ["--", "--trainer.enable_model_summary", "false"]
"""The fine-tunes keep their epoch lines (stdout is not a terminal here): a person sees the training dlbench started."""


def _fit(logs: Path, *args: str) -> Path:
    with using_log_root(logs):
        assert dlbench_main(["fit", *args, *QUIET]) == 0
    return logs / args[1] / "version_0"


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory) -> Path:
    """``dlbench fit --model mlp --trainer.max_epochs 3`` on the bundled digits: about 89% test accuracy."""
    return _fit(tmp_path_factory.mktemp("logs"), "--model", "mlp", "--trainer.max_epochs", "3")


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory) -> Path:
    return _fit(tmp_path_factory.mktemp("logs"), "--model", "lstm", "--model.hidden_size", "16",
                "--trainer.max_epochs", "3")


def _table(output: Path) -> dict:
    report = json.loads((output / "compression.json").read_text())
    assert (output / "compression.md").read_text().count("\n| ") == 3  # header and the two rows
    return report


def test_prune_is_an_ordinary_run_with_the_weights_really_zeroed(mlp_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert compress.run([str(mlp_run), "--method", "prune", "--amount", "0.5", "--epochs", "1", *FAST,
                         *NO_SUMMARY]) == 0
    out = capsys.readouterr().out
    assert "non-zero params" in out and "\nbefore " in out and "\nafter " in out and "sparsity 50.0%" in out
    assert re.search(r"^epoch 1/1  step \d+ ", out, re.MULTILINE), out
    run = mlp_run.parent / "pruned-version_0"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    callbacks = [c["class_path"] for c in yaml.safe_load((run / "config.yaml").read_text())["trainer"]["callbacks"]]
    assert callbacks == ["dlbench.tools.compress.InitialWeights", "dlbench.tools.compress.OneShotPruning"]
    assert last_scalars(run)["compress/sparsity"] == pytest.approx(0.5, abs=1e-3)

    source = TrainedRun.open(run)
    assert source.checkpoint.name.startswith("best-")
    pruned = source.load_model()  # a plain MLPClassifier: the checkpoint holds the pruning made permanent
    weights = [m.weight for m in pruned.modules() if isinstance(m, nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.002)

    report = _table(run / "compress")
    before, after = report["before"], report["after"]
    assert after["nonzero_params"] < 0.53 * before["nonzero_params"]
    assert after["metrics"]["test/acc"] > 0.8 > 5 * after["metrics"]["test/acc_majority"]
    assert after["metrics"]["test/acc"] > before["metrics"]["test/acc"] - 0.05
    assert after["file_bytes"] == pytest.approx(before["file_bytes"], rel=0.01)  # dense: no smaller
    assert after["gzip_bytes"] < 0.75 * before["gzip_bytes"]
    assert (run / "compress" / "model.pt.gz").stat().st_size == after["gzip_bytes"]


def test_quantize_through_the_real_command(mlp_run, tmp_path):
    result = dlbench("compress", str(mlp_run), "--method", "quantize", *FAST, "--output", str(tmp_path / "q"),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 layers dynamically quantized to qint8" in result.stdout and "Traceback" not in result.stderr
    report = _table(tmp_path / "q")
    before, after = report["before"], report["after"]
    assert report["metric"] == "test/acc" and after["params"] == before["params"]
    assert after["file_bytes"] < 0.35 * before["file_bytes"]  # int8 weights: a quarter, plus scales and framing
    tolerance = 0.02  # stated: int8 dynamic quantization of a digits MLP moves accuracy by well under 2 points
    assert abs(after["metrics"]["test/acc"] - before["metrics"]["test/acc"]) <= tolerance

    quantized = compress.load_quantized(mlp_run, tmp_path / "q" / "model.pt")
    assert not [m for m in quantized.modules() if type(m) is nn.Linear]
    assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules()) == 3
    # An independent look at the saved model: the test split is one batch; its accuracy is the table's.
    source = TrainedRun.open(mlp_run)
    x, y = source.real_batch()
    with torch.no_grad():
        acc = (quantized(x).argmax(-1) == y).float().mean().item()
    assert acc == pytest.approx(after["metrics"]["test/acc"], abs=1e-6)


def test_quantize_lstm_converts_the_recurrent_layer(lstm_run, tmp_path, capsys):
    assert compress.run([str(lstm_run), "--method", "quantize", *FAST, "--output", str(tmp_path)]) == 0
    report = _table(tmp_path)
    assert report["metric"] == "test/rmse" and "lstm" in report["notes"][0]
    before, after = report["before"]["metrics"]["test/rmse"], report["after"]["metrics"]["test/rmse"]
    assert after < 1.1 * before  # within 10% of the float model's error
    quantized = compress.load_quantized(lstm_run, tmp_path / "model.pt")
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.LSTM) for m in quantized.modules())


def test_distill_a_smaller_student(mlp_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert compress.run([str(mlp_run), "--method", "distill", "--epochs", "3", *FAST, *NO_SUMMARY,
                         "--model.hidden_sizes", "[32]"]) == 0
    assert [int(n) for n in re.findall(r"^epoch (\d)/3 ", capsys.readouterr().out, re.MULTILINE)] == [1, 2, 3]
    run = mlp_run.parent / "distilled-from-mlp-version_0"
    report = _table(run / "compress")
    teacher, student = report["before"], report["after"]
    assert student["params"] < teacher["params"] / 10
    assert student["metrics"]["test/acc"] > 3 * student["metrics"]["test/acc_majority"]
    assert student["latency_ms"] < teacher["latency_ms"]
    assert last_scalars(run)["train/distill_kl"] > 0  # the teacher's term was really in the loss
    config = yaml.safe_load((run / "config.yaml").read_text())
    (callback,) = config["trainer"]["callbacks"]
    assert callback["class_path"] == "dlbench.tools.compress.Distillation"
    assert callback["init_args"]["teacher"].startswith(str(mlp_run.resolve()))


def test_distill_loss():
    logits = torch.randn(8, 10)
    assert compress.distill_loss(logits, logits, 4.0).item() == pytest.approx(0, abs=1e-6)
    other = torch.randn(8, 10)
    p, q = (other / 2).softmax(-1), (logits / 2).softmax(-1)
    expected = 4 * (p * (p.log() - q.log())).sum(-1).mean()
    assert compress.distill_loss(logits, other, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_no_checkpoint_is_one_paragraph_and_exit_2(tmp_path):
    (tmp_path / "run").mkdir()
    result = dlbench("compress", str(tmp_path / "run"), "--method", "quantize", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("dlbench: error:") and "no checkpoints/best-*.ckpt" in result.stderr
    assert result.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "distill", "--student", "mlpp"], "unknown plugin 'mlpp'. Did you mean 'mlp'?"),
    (["--method", "distill", "--student", "lstm"], "student 'lstm' is not a classifier"),
    (["--method", "distill", "--student", "autoencoder"], "student 'autoencoder' is not a classifier"),
    (["--method", "prune", "--amount", "1.5"], "between 0 and 1; got 1.5"),
])
def test_bad_input(mlp_run, args, message, capsys):
    assert dlbench_main(["compress", str(mlp_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_distilling_a_regressor_is_refused(lstm_run, capsys):
    assert dlbench_main(["compress", str(lstm_run), "--method", "distill"]) == 2
    err = capsys.readouterr().err
    assert "lstm is not a classifier: its forward returns a tensor of shape [46, 1]" in err
    assert "Distill one of:" in err and "mlp" in err and "prune or quantize lstm instead" in err


def test_a_model_without_quantizable_layers_is_refused():
    with pytest.raises(DlbenchError, match="no nn.Linear, nn.LSTM or nn.GRU layer.*Conv2d"):
        compress.quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()))
