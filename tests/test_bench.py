"""``dlbench bench`` end to end (one model that trains, one that fails), its argument handling, and the monitor
callbacks whose throughput the leaderboard reports."""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import time

import pytest
import yaml
from conftest import dlbench

from dlbench.core.errors import DlbenchError
from dlbench.runs import bench, read_scalars


def test_bench_ranks_the_model_that_trains_and_reports_the_one_that_fails(tmp_path):
    # mlp refuses the LSTM's arguments (it has no hidden_size): its runs fail, the lstm's go on.
    out = tmp_path / "board"
    result = dlbench("bench", "--models", "lstm,mlp", "--seeds", "2", "--max_epochs", "2", "--output", str(out),
                     "--", "--model.hidden_size", "8", "--model.num_layers", "1", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    runs = list(csv.DictReader(io.StringIO((out / "runs.csv").read_text())))
    assert [(r["model"], int(r["seed"]), r["status"]) for r in runs] == [
        ("lstm", 42, "ok"), ("lstm", 43, "ok"), ("mlp", 42, "failed"), ("mlp", 43, "failed")]
    scores = []
    for r in runs[:2]:  # each run is an ordinary run directory, trained with its own seed and the extra arguments
        run_dir = tmp_path / r["run_dir"]
        hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
        assert hparams["seed"] == int(r["seed"]) and hparams["model"]["hidden_size"] == 8
        assert hparams["trainer"]["max_epochs"] == 2
        scores.append(read_scalars(run_dir)["test/rmse"][-1][1])
        assert float(r["score"]) == pytest.approx(scores[-1], rel=1e-6)
        assert float(r["peak_rss_mb"]) > 50 and float(r["train_seconds"]) > 0
        assert 0 <= float(r["time_to_best"]) <= float(r["train_seconds"]) + 1
    assert "unknown argument --model.hidden_size" in runs[2]["reason"]

    board = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    lstm, mlp = board
    assert lstm["model"] == "lstm" and lstm["rank"] == "1" and lstm["metric"] == "test/rmse"
    assert float(lstm["mean"]) == pytest.approx(statistics.fmean(scores), rel=1e-6)
    assert float(lstm["std"]) == pytest.approx(statistics.stdev(scores), rel=1e-5)
    assert lstm["seeds"] == "2/2" and lstm["status"] == "ok" and float(lstm["samples_per_second"]) > 0
    assert int(lstm["params"]) == 4 * (1 * 8 + 8 * 8 + 2 * 8) + 8 + 1  # one LSTM layer of 8 units and a linear head
    assert mlp["model"] == "mlp" and mlp["rank"] == "" and mlp["mean"] == "" and mlp["seeds"] == "0/2"
    assert mlp["status"].startswith("failed: ") and "unknown argument --model.hidden_size" in mlp["status"]

    markdown = (out / "leaderboard.md").read_text()
    assert "| 1 | lstm |" in markdown and "| mlp |" in markdown and "torch" in markdown
    assert "`dlbench bench --models lstm,mlp --seeds 2 --max_epochs 2 --output " in markdown
    assert markdown.count("\n| lstm | 4") == 2  # the per-run table: both seeds
    assert (out / "logs" / "mlp-seed42.stderr.log").read_text().strip().splitlines()[-1].startswith(
        "dlbench: error: bad argument: unknown argument --model.hidden_size")
    assert "| 1 | lstm |" in result.stdout  # the leaderboard is printed too


@pytest.mark.parametrize(("argv", "message"), [
    (["--models", "lstm,lstn"], "unknown plugin 'lstn'. Did you mean 'lstm'?"),
    (["--kind", "series", "--data", "sunspot"], "unknown dataset 'sunspot'. Did you mean 'sunspots'"),
])
def test_unknown_names_are_refused_before_anything_trains(tmp_path, argv, message):
    start = time.monotonic()
    result = dlbench("bench", *argv, "--max_epochs", "1", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"dlbench: error: {message}" in result.stderr and "Traceback" not in result.stderr
    assert "[1/" not in result.stderr  # no run started: lstm, first in the list, did not train
    assert list(tmp_path.iterdir()) == []  # no bench-*/ folder, no lightning_logs/
    assert time.monotonic() - start < 60


def _parse(*argv: str) -> argparse.Namespace:
    from dlbench.cli import _parser

    return _parser().parse_args(["bench", *argv])


def test_arguments_become_fit_commands():
    args = _parse("--models", "lstm", "--seeds", "3", "--max_time", "01:30:00", "--data", "sunspots", "--",
                  "--trainer.accelerator", "cpu")
    assert bench.seeds_for(args.seeds) == [42, 43, 44] and bench.seeds_for("7,3,7") == [7, 3]
    cmd = bench.fit_command("lstm", 43, args)
    assert cmd[1:] == ["-m", "dlbench", "fit", "--model", "lstm", "--seed_everything", "43", "--data", "sunspots",
                       "--trainer.max_time", "00:01:30:00", "--trainer.max_epochs", "-1",
                       "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu"]
    assert bench.lightning_time("5:00") == "00:00:05:00"
    assert "lstm" in bench.models_for(_parse("--kind", "series"))
    for bad in (lambda: bench.seeds_for("0"), lambda: bench.seeds_for("x"), lambda: bench.lightning_time("5m"),
                lambda: bench.models_for(_parse("--kind", "no_such_kind"))):
        with pytest.raises(DlbenchError):
            bad()
    with pytest.raises(SystemExit):  # an epoch count and a time budget at once
        _parse("--models", "lstm", "--max_epochs", "2", "--max_time", "00:01:00")


def test_monitor_callbacks_log_speed_learning_rate_parameters_and_histograms(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlbench.testing import build
    from dlbench.train.monitor import LearningRate, TrainingSpeed, WeightHistograms

    class SlowValidation(Callback):
        """Validation that takes at least a second, and the whole epoch's wall time as seen from outside."""

        def __init__(self) -> None:
            self.epoch_seconds: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            time.sleep(1.0)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.epoch_seconds.append(time.perf_counter() - self.start)

    model, datamodule, _ = build("lstm", "--model.hidden_size", "8", "--model.num_layers", "1",
                                 log_dir=tmp_path / "unused")
    slow = SlowValidation()
    logger = TensorBoardLogger(tmp_path, name="monitor", version=0, default_hp_metric=False)
    trainer = L.Trainer(max_epochs=3, logger=logger, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[TrainingSpeed(), LearningRate(), WeightHistograms(every_n_epochs=2), slow])
    trainer.fit(model, datamodule=datamodule)

    scalars = read_scalars(logger.log_dir)
    seconds = [v for _, v in scalars["train/epoch_seconds"]]
    speed = [v for _, v in scalars["train/samples_per_second"]]
    assert len(seconds) == len(speed) == 3
    n_train = len(datamodule.train_xy[0])
    for s, v, outside in zip(seconds, speed, slow.epoch_seconds, strict=True):
        assert s * v == pytest.approx(n_train, rel=1e-6)  # every training sample counted once per epoch
        assert 0 < s <= outside - 1.0 + 0.05  # the second of validation is not training time
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([model.hparams.lr] * 3)
    assert scalars["model/params"] == [(0, sum(p.numel() for p in model.parameters()))]
    assert "train/peak_memory_mb" not in scalars  # CPU: no device memory to report

    acc = EventAccumulator(logger.log_dir, size_guidance={"histograms": 0})
    acc.Reload()
    assert set(acc.Tags()["histograms"]) == {f"weights/{name}" for name, _ in model.named_parameters()}
    steps = [e.step for e in acc.Histograms("weights/head.weight")]
    assert steps == [2 * trainer.num_training_batches]  # after the second epoch only, of three
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        WeightHistograms(every_n_epochs=0)


def test_batch_size_reads_shapes_of_any_batch_layout():
    import torch

    from dlbench.train.monitor import batch_size

    x = torch.zeros(5, 3)
    assert batch_size(x) == 5 and batch_size((x, torch.zeros(5))) == 5 and batch_size([[x], "meta"]) == 5
    assert batch_size({"image": torch.zeros(4, 1, 8, 8), "label": torch.zeros(4)}) == 4
    assert batch_size(torch.tensor(1.0)) == 1 and batch_size("text") == 0 and batch_size({}) == 0

    class Graphs:
        num_graphs = 6

    assert batch_size(Graphs()) == 6
