"""The real ``dlbench`` command in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT, dlbench
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from dlbench.runs import last_scalars, read_run

QUICK = ("--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false")


def test_list_and_help_import_no_torch(tmp_path):
    code = ("import sys; from dlbench.cli import main; main(['list']); main(['list', '--json']); main(['--help']);"
            "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'lightning', 'jsonargparse', 'tensorboard')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip().endswith("HEAVY []")


def test_list_shows_plugins_with_provider(tmp_path):
    result = dlbench("list", cwd=tmp_path)
    assert result.returncode == 0
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("lstm ")]
    assert "series" in row and "sunspots" in row and "dlbench 0.1.0" in row


def test_list_json(tmp_path):
    result = dlbench("list", "--json", cwd=tmp_path)
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    lstm = entries["lstm"]
    assert lstm["distribution"] == "dlbench" and lstm["data_kind"] == "series" and lstm["monitor"] == "val/rmse"
    assert lstm["broken"] is False and lstm["default_data"] == "sunspots"


def test_info_lists_arguments_and_data_source(tmp_path):
    result = dlbench("info", "lstm", cwd=tmp_path)
    assert result.returncode == 0
    out = result.stdout
    assert "NOAA" in out and "public domain" in out and "val/rmse (min)" in out
    assert "--model.hidden_size" in out and "int" in out and "Units in each LSTM layer" in out
    assert "--data.window" in out and "[set from the data]" in out


@pytest.mark.parametrize("args, exit_code, must_say", [
    (["fit", "--model", "lstn"], 2, ["unknown plugin 'lstn'", "Did you mean 'lstm'", "dlbench list"]),
    (["fit", "--model", "lstm", "--model.hidden_size", "many"], 2, ["hidden_size"]),
    (["fit", "--model", "lstm", "--model.no_such_arg", "3"], 2, ["no_such_arg"]),
    (["fit", "--model", "lstm", "--trainer.max_epochs", "x"], 2, ["max_epochs"]),
    (["fit", "--model", "lstm", "--model.lr", "-0.1"], 2, ["lr must be > 0", "dlbench info lstm"]),
    (["fit", "--model", "lstm", "--data.batch_size", "0"], 2, ["batch_size must be >= 1"]),
    (["fit", "--model", "lstm", "--data.path", "nowhere.csv"], 2, ["nowhere.csv does not exist"]),
    (["fit"], 2, ["which model", "--model NAME"]),
    (["fitt", "--model", "lstm"], 2, ["unknown command 'fitt'", "fit"]),
    (["info", "nope"], 2, ["unknown plugin 'nope'"]),
])
def test_bad_input_is_a_short_message_with_exit_code_2(tmp_path, args, exit_code, must_say):
    result = dlbench(*args, cwd=tmp_path)
    assert result.returncode == exit_code, result.stderr
    for text in must_say:
        assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lightning_logs").exists() or not any((tmp_path / "lightning_logs").rglob("*.ckpt"))


def test_debug_switch_shows_the_traceback(tmp_path):
    result = dlbench("fit", "--model", "lstn", "--debug", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" in result.stderr


def _hparams_plugin_content(run_dir):
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    contents = acc.PluginTagToContent("hparams")
    parsed = {}
    for tag, raw in contents.items():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        parsed[tag] = data
    return parsed


def test_fit_writes_a_complete_run_and_its_config_reproduces_it(tmp_path):
    first = dlbench("fit", "--model", "lstm", "--model.hidden_size", "16", *QUICK, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "lightning_logs" / "lstm" / "version_0"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(name.startswith("best-") for name in ckpts)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2  # the final epoch of three, whichever epoch was best

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["class_path"] == "dlbench_plugins.lstm.model.LSTMForecaster"
    assert config["data"]["class_path"] == "dlbench_plugins.lstm.data.SeriesDataModule"
    assert config["model"]["init_args"]["hidden_size"] == 16
    assert config["seed_everything"] == 42

    scalars = last_scalars(run)
    for tag in ("train/loss", "val/loss", "val/rmse", "val/rmse_best", "test/rmse", "test/rmse_persistence",
                "train/lr", "train/samples_per_second", "train/epoch_seconds", "model/params"):
        assert tag in scalars, tag

    hp = _hparams_plugin_content(run)
    session = hp["_hparams_/session_start_info"].session_start_info.hparams
    assert session["model/hidden_size"].number_value == 16
    assert session["seed"].number_value == 42
    assert session["plugin"].string_value == "lstm"
    # No experiment summary of its own: TensorBoard then builds one from every run in the directory, whatever plugin.
    assert "_hparams_/experiment" not in hp and "hp_metric" not in scalars
    assert read_run(run).monitor == "val/rmse"  # dlbench compare takes the monitor from config.yaml

    again = dlbench("fit", "--config", str(run / "config.yaml"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rerun = tmp_path / "lightning_logs" / "lstm" / "version_1"
    assert last_scalars(rerun)["test/rmse"] == pytest.approx(scalars["test/rmse"], rel=1e-5)


def test_overrides_and_print_config(tmp_path):
    result = dlbench("fit", "--model", "lstm", "--model.hidden_size", "24", "--data.window", "6", "--print_config",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["model"]["init_args"]["hidden_size"] == 24
    assert config["data"]["init_args"]["window"] == 6
    assert config["trainer"]["logger"]["init_args"]["name"] == "lstm"


def test_window_reaches_the_model_through_the_link(tmp_path):
    result = dlbench("fit", "--model", "lstm", "--data.window", "5", "--trainer.fast_dev_run", "true",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test/rmse" in result.stderr  # fit ends with the test of the model and a summary


def test_example_third_party_plugin_installs_lists_and_runs(tmp_path):
    pip = [sys.executable, "-m", "pip"]
    example = ROOT / "examples" / "dlbench-example-iris"
    install = subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(example)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    try:
        listed = dlbench("list", cwd=tmp_path)
        (row,) = [line for line in listed.stdout.splitlines() if line.startswith("iris_mlp ")]
        assert "dlbench-example-iris 1.0.0" in row
        run = dlbench("fit", "--model", "iris_mlp", "--trainer.fast_dev_run", "true", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        off = dlbench("fit", "--model", "iris_mlp", cwd=tmp_path, env={"DLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"})
        assert off.returncode == 2 and "DLBENCH_DISABLE_PLUGIN_AUTOLOAD" in off.stderr
    finally:
        subprocess.run([*pip, "uninstall", "-y", "-q", "dlbench-example-iris"], capture_output=True)
    assert "iris_mlp" not in dlbench("list", cwd=tmp_path).stdout


def test_compile_option_reports_compile_time_apart(tmp_path):
    result = dlbench("fit", "--model", "lstm", "--model.hidden_size", "8", "--compile", "true", "--trainer.max_epochs",
                     "1", "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dlbench: torch.compile took" in result.stderr
    scalars = last_scalars(tmp_path / "lightning_logs" / "lstm" / "version_0")
    assert scalars["train/compile_seconds"] > 0
