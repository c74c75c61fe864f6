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
    assert "NOAA" in out and "public domain" in out and "val/rmse (lower is better)" in out
    assert "score         test/rmse, against the baseline test/rmse_persistence (persistence" in out
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


def _test_metric(stdout_and_err: str, tag: str) -> float:
    """A test metric from the table Lightning prints after ``dlbench test``."""
    for line in stdout_and_err.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == tag:
            return float(fields[1])
    raise AssertionError(f"{tag} not printed:\n{stdout_and_err}")


def test_best_and_last_name_a_trained_runs_files_in_a_new_process(tmp_path):
    fit = dlbench("fit", "--model", "lstm", "--model.hidden_size", "8", "--trainer.max_epochs", "4", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    run = tmp_path / "lightning_logs" / "lstm" / "version_0"
    fitted = last_scalars(run)["test/rmse"]  # fit tested its best checkpoint
    best = next((run / "checkpoints").glob("best-*.ckpt"))

    by_config = dlbench("test", "--config", str(run / "config.yaml"), "--ckpt_path", "best", cwd=tmp_path)
    assert by_config.returncode == 0, by_config.stderr
    assert f"checkpoint path at {best}" in by_config.stderr
    assert _test_metric(by_config.stdout, "test/rmse") == pytest.approx(fitted, rel=1e-5)

    by_run = dlbench("validate", "--run", str(run), "--ckpt_path", "last", cwd=tmp_path)
    assert by_run.returncode == 0, by_run.stderr
    assert f"checkpoint path at {run / 'checkpoints' / 'last.ckpt'}" in by_run.stderr

    default = dlbench("test", "--run", str(run), cwd=tmp_path)  # --run alone: the best checkpoint
    assert f"checkpoint path at {best}" in default.stderr

    # A run directory written before the subpackages: its config names the old module paths of logger and plugin.
    old = run.parent / "version_old"
    old.mkdir()
    (old / "checkpoints").mkdir()
    (old / "checkpoints" / best.name).write_bytes(best.read_bytes())
    text = (run / "config.yaml").read_text()
    assert "dlbench.train.logger.RunLogger" in text
    (old / "config.yaml").write_text(text.replace("dlbench.train.logger.", "dlbench.tensorboard.")
                                     .replace("dlbench.train.checkpoint_io.", "dlbench.checkpoint_io."))
    legacy = dlbench("test", "--run", str(old), cwd=tmp_path)
    assert legacy.returncode == 0, legacy.stderr
    assert _test_metric(legacy.stdout, "test/rmse") == pytest.approx(fitted, rel=1e-5)


@pytest.mark.parametrize("args, must_say", [
    (["test", "--model", "lstm", "--ckpt_path", "best"], "--ckpt_path best needs the run it belongs to"),
    (["test", "--run", "nowhere"], "run directory nowhere does not exist"),
    (["fit", "--run", "nowhere"], "--run goes with validate, test and predict"),
])
def test_best_without_a_run_says_how_to_name_one(tmp_path, args, must_say):
    result = dlbench(*args, cwd=tmp_path)
    assert result.returncode == 2 and must_say in result.stderr and "Traceback" not in result.stderr


def test_output_to_a_file_is_a_line_an_epoch(tmp_path):
    result = dlbench("fit", "--model", "lstm", "--model.hidden_size", "8", "--trainer.max_epochs", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr and "it/s" not in result.stdout + result.stderr
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    values = [float(line.split("val/rmse ")[1].split()[0]) for line in epochs]
    scalars = {step: value for step, value in __import__("dlbench.runs", fromlist=["read_scalars"])
               .read_scalars(tmp_path / "lightning_logs" / "lstm" / "version_0")["val/rmse"]}
    assert values == pytest.approx(list(scalars.values()), rel=1e-3)  # each line shows its own epoch's metrics
    assert all("train/loss" in line for line in epochs)
    assert "test done" in result.stdout


def test_list_fits_100_columns(tmp_path):
    for env in ({}, {"COLUMNS": "100"}):
        result = dlbench("list", cwd=tmp_path, env=env)
        assert result.returncode == 0
        widest = max(len(line) for line in result.stdout.splitlines())
        assert widest <= 100, result.stdout
        assert "lstm" in result.stdout and "sunspots" in result.stdout


def test_help_is_the_parsers(tmp_path):
    top = dlbench("--help", cwd=tmp_path)
    assert top.returncode == 0
    for command in ("fit", "validate", "test", "predict", "list", "info", "compare", "bench", "sweep", "export",
                    "compress", "new-plugin"):
        assert f"\n    {command}" in top.stdout, command
    fit = dlbench("fit", "--help", cwd=tmp_path)
    assert fit.returncode == 0 and "usage: dlbench fit" in fit.stdout and "--resume RUN_DIR" in fit.stdout
    test = dlbench("test", "--help", cwd=tmp_path)
    assert "--run RUN_DIR" in test.stdout and "best and last" in test.stdout
    plugin = dlbench("fit", "--model", "lstm", "--help", cwd=tmp_path)  # LightningCLI's own, with every argument
    assert plugin.returncode == 0 and "--trainer.max_epochs" in plugin.stdout and "--test_after_fit" in plugin.stdout
