"""``dlbench export``: a real tiny LSTM run to ONNX and TorchScript, checked on real data; clear errors otherwise."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dlbench.cli import main as cli_main
from dlbench.cli import main as dlbench_main
from dlbench.core.errors import DlbenchError
from dlbench.runs.trained import NotExportable, TrainedRun, flat_outputs, forward_inputs
from dlbench.testing import QUIET, using_log_root
from dlbench.tools import export
from dlbench.tools.export import ATOL, RTOL, max_difference

ONNX_MISSING = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(bool(ONNX_MISSING), reason=f"not installed: {', '.join(ONNX_MISSING)}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run: ``dlbench fit --model lstm --model.hidden_size 8 --trainer.max_epochs 1``."""
    logs = tmp_path_factory.mktemp("logs")
    with using_log_root(logs):
        code = dlbench_main(["fit", "--model", "lstm", "--model.hidden_size", "8", "--trainer.max_epochs", "1",
                             *QUIET])
    assert code == 0
    return logs / "lstm" / "version_0"


def _model_and_batch(run: Path):
    source = TrainedRun.open(run)
    model = source.load_model()
    return model, forward_inputs(model, source.real_batch())


@needs_onnx
def test_onnx_export_of_a_run_takes_and_returns_the_series_own_units(run_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "dlbench", "export", str(run_dir), "--format", "onnx"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    exported = run_dir / "export" / "lstm.onnx"
    assert f"exported {exported}" in result.stdout and "max abs difference" in result.stdout
    assert "batch size: dynamic" in result.stdout
    described = run_dir / "export" / "lstm.preprocessing.json"
    assert f"preprocessing: {described}" in result.stdout and "folded into the graph" in result.stdout
    record = json.loads(described.read_text())
    state = record["predictor"]["state"]
    assert record["folded"] is True and state["column"] == "sunspots" and state["window"] == 10
    # An independent check with onnxruntime: raw sunspot numbers in, the next year's number out, on the test windows
    # and on a batch size the exporter never saw, against the model's own forward on standardised values.
    import onnxruntime

    model, (x,) = _model_and_batch(run_dir)
    raw = x * state["std"] + state["mean"]
    assert float(raw.min()) >= 0 and float(raw.max()) > 50  # sunspot counts, not standardised values
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    for batch, normed in ((raw, x), (raw[:7], x[:7])):
        (got,) = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
        with torch.no_grad():
            want = model(normed) * state["std"] + state["mean"]
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=RTOL, atol=1e-3)
    # The same window as a CSV through dlbench predict gives the same forecast as the exported file.
    csv_file = tmp_path / "window.csv"
    csv_file.write_text("sunspots\n" + "\n".join(f"{v:.9g}" for v in raw[0, :, 0].tolist()) + "\n")
    predicted = subprocess.run([sys.executable, "-m", "dlbench", "predict", "--run", str(run_dir), "-i", str(csv_file),
                                "-o", str(tmp_path / "p.jsonl")], capture_output=True, text=True, timeout=600)
    assert predicted.returncode == 0, predicted.stderr
    (row,) = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    (got,) = session.run(None, {session.get_inputs()[0].name: raw[:1].numpy()})
    assert row["step_1"] == pytest.approx(float(got[0, 0]), abs=1e-3)


def test_torchscript_export_of_a_checkpoint_file(run_dir, tmp_path, capsys):
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    output = tmp_path / "lstm.pt"
    assert cli_main(["export", str(checkpoint), "--format", "torchscript", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert f"exported {output}" in out and "test batch (float32 [46, 10, 1]) and on its first 23 rows" in out
    model, (x,) = _model_and_batch(run_dir)
    loaded = torch.jit.load(str(output))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x[:5]), model(x[:5]), rtol=RTOL, atol=ATOL)
    assert not list(tmp_path.glob(".export-*")), "the temporary export directory was left behind"


@needs_onnx
def test_output_into_an_existing_folder_is_named_as_cp_would(run_dir, tmp_path, capsys):
    folder = tmp_path / "exports"
    folder.mkdir()
    assert cli_main(["export", str(run_dir), "-o", str(folder)]) == 0
    out = capsys.readouterr().out
    written = folder / "lstm-version_0.onnx"
    # No temporary folder left beside it; the run's preprocessing is described beside the model.
    assert sorted(p.name for p in folder.iterdir()) == [written.name, "lstm-version_0.preprocessing.json"]
    # The size printed is the file's, not the folder's 4 KiB.
    assert f"exported {written} ({written.stat().st_size / 1024:.0f} KiB, onnx) from {run_dir}" in out


def test_checkpoint_into_an_existing_folder_takes_its_stem(run_dir, tmp_path, capsys):
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert cli_main(["export", str(checkpoint), "--format", "torchscript", "-o", str(tmp_path)]) == 0
    written = tmp_path / "last.torchscript.pt"
    assert f"exported {written} ({written.stat().st_size / 1024:.0f} KiB, torchscript)" in capsys.readouterr().out
    assert torch.jit.load(str(written)) is not None


def test_missing_output_folder_is_one_line_before_the_export(run_dir, tmp_path):
    output = tmp_path / "missing" / "x.onnx"
    result = subprocess.run([sys.executable, "-m", "dlbench", "export", str(run_dir), "-o", str(output)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"dlbench: error: cannot write {output}: its folder {output.parent} does "
                                          f"not exist. Create it first or choose another -o."]
    assert result.stdout == "" and not output.parent.exists()


@pytest.mark.parametrize(("output", "message"), [
    ("/proc/nope/x.onnx", "cannot write /proc/nope/x.onnx: its folder /proc/nope does not exist. Create it first"),
    ("/proc/x.onnx", "cannot write /proc/x.onnx: its folder /proc takes no new files ("),
    ("{tmp}/new/", "cannot write {tmp}/new/: the folder {tmp}/new does not exist. Create it first"),
    ("{tmp}/file/x.onnx", "cannot write {tmp}/file/x.onnx: {tmp}/file is a file, not a folder"),
])
def test_unwritable_outputs_are_one_line(run_dir, tmp_path, capsys, monkeypatch, output, message):
    if output.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    (tmp_path / "file").write_text("not a folder")

    def slow_export(*args, **kwargs):
        raise AssertionError("the output was checked only after the export")

    monkeypatch.setattr(export, "export_model", slow_export)
    assert cli_main(["export", str(run_dir), "-o", output.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dlbench: error: {message.format(tmp=tmp_path)}") and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_run_dir_prefers_the_best_checkpoint(run_dir):
    source = TrainedRun.open(run_dir)
    assert source.checkpoint.name.startswith("best-") and source.checkpoint.parent == run_dir / "checkpoints"
    assert source.model_class == "dlbench_plugins.lstm.model.LSTMForecaster"
    assert source.data_class == "dlbench_plugins.lstm.data.SeriesDataModule" and source.plugin_name == "lstm"


def test_checkpoint_without_config_uses_its_saved_class_paths(run_dir, tmp_path):
    alone = tmp_path / "alone.ckpt"
    alone.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    source = TrainedRun.open(alone)
    assert source.run_dir is None and source.data_args["window"] == 10
    assert source.data_class == "dlbench_plugins.lstm.data.SeriesDataModule"


@pytest.mark.parametrize(("content", "message"), [
    (b"this is not a checkpoint", "is corrupt"),
    (None, "corrupt or truncated"),
])
def test_corrupt_checkpoint_is_a_clear_error(run_dir, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.ckpt"
    whole = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    bad.write_bytes(content if content is not None else whole[: len(whole) // 2])
    assert cli_main(["export", str(bad), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not bad.with_suffix(".torchscript.pt").exists()


def test_missing_paths_are_clear_errors(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert cli_main(["export", str(tmp_path / "run")]) == 2
    assert "holds no checkpoints/best-*.ckpt or checkpoints/last.ckpt" in capsys.readouterr().err


def test_inputs_not_in_the_data_are_reported_with_the_reason():
    generator = SimpleNamespace(example_input_array=torch.zeros(2, 16))
    with pytest.raises(NotExportable, match=r"forward takes \(float32 \[2, 16\]\), but a test batch begins with "
                                            r"\(float32 \[8, 1, 28, 28\]\)"):
        forward_inputs(generator, (torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(NotExportable, match="sets no example_input_array"):
        forward_inputs(SimpleNamespace(example_input_array=None), torch.zeros(3, 4))
    graph = SimpleNamespace(example_input_array=(torch.zeros(2, 4), torch.zeros(2, 2, dtype=torch.long)))
    with pytest.raises(NotExportable, match="batches are Graph objects, not tensors"):
        forward_inputs(graph, type("Graph", (), {})())
    tokens = SimpleNamespace(example_input_array=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(NotExportable, match="int64"):
        forward_inputs(tokens, (torch.zeros(3, 5), torch.zeros(3)))
    two = SimpleNamespace(example_input_array=(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long)))
    batch = (torch.ones(5, 3), torch.ones(5, 9, dtype=torch.long), torch.zeros(5))
    assert [t.shape for t in forward_inputs(two, batch)] == [(5, 3), (5, 9)]


def test_differences_beyond_tolerance_fail_and_leave_no_file(tmp_path, monkeypatch):
    expected = [torch.tensor([1.0, 100.0])]
    assert max_difference(expected, [torch.tensor([1.000001, 100.005])], "x") == pytest.approx(0.005, rel=1e-3)
    with pytest.raises(DlbenchError, match="differs from PyTorch on x by up to 0.001") as err:
        max_difference(expected, [torch.tensor([1.001, 100.0])], "x")
    assert err.value.exit_code == 1
    with pytest.raises(DlbenchError, match="do not match"):
        max_difference(expected, [torch.tensor([1.0])], "x")

    model = torch.nn.Linear(3, 2).eval()
    _, run = export.EXPORTERS["torchscript"]

    def traced(model, inputs, path):
        torch.jit.save(torch.jit.trace(model, inputs), str(path))
        return True

    def off_by_a_little(path, inputs):
        return [o + 1e-3 for o in run(path, inputs)]

    monkeypatch.setitem(export.EXPORTERS, "torchscript", (traced, off_by_a_little))
    output = tmp_path / "out" / "model.pt"
    with pytest.raises(DlbenchError, match="the file was not kept"):
        export.export_model(model, (torch.randn(4, 3),), "torchscript", output)
    assert list(output.parent.iterdir()) == []
    monkeypatch.setitem(export.EXPORTERS, "torchscript", (traced, run))
    result = export.export_model(model, (torch.randn(4, 3),), "torchscript", output)
    assert result.batch_sizes == (4, 2) and result.max_abs_diff == 0.0 and output.is_file()
    assert flat_outputs({"a": torch.ones(1), "b": [torch.zeros(2)]})[1].shape == (2,)
