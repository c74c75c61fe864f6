"""``dlbench predict`` for audio, gcn and detector, end to end: real tiny fits on the default data, then real
``dlbench predict`` processes on a copy of each run that has nothing but ``predictor.json`` to rebuild the
preprocessing from (its checkpoints stripped of their predictor record, its config's data module a class that does
not exist). Rows are checked against each model's forward on tensors the test prepares itself: WAV files written
here (one at 44.1 kHz stereo, one 8-bit at 16 kHz, one that is no WAV), the karate club graph as torch_geometric
ships it (every node, a ``--nodes`` subset, an unknown node), and a PNG of another size than the detector's."""

from __future__ import annotations

import json
import os
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from math import gcd
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import dlbench
from PIL import Image, ImageDraw

from dlbench.core import registry
from dlbench.data.predict import InputError, Source, predictor_from_record
from dlbench.data.wav import fit_length, log_mel, read_wav
from dlbench.runs.trained import TrainedRun

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PLUGINS = ("audio", "gcn", "detector")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models: threads only add overhead on a shared machine
FAST = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--test_after_fit", "false", "--log_graph", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false")
SUBSET = (33, 0, 5, 5)  # out of order, one twice
TOP_BOXES = 5


def _fit(plugin: str, home: Path) -> Path:
    fit = dlbench("fit", "--model", plugin, *registry.plugin(plugin).tiny_args, *FAST, cwd=home, env=ONE_THREAD)
    assert fit.returncode == 0, fit.stderr[-3000:]
    return home / "lightning_logs" / plugin / "version_0"


def _elsewhere(run: Path, to: Path, edit=None) -> Path:
    """The run as another machine gets it: config.yaml, predictor.json and checkpoints, the checkpoints without the
    predictor record (and changed by ``edit(state_dict)``), the config's data module a class that does not exist."""
    to.mkdir(parents=True)
    (to / "checkpoints").mkdir()
    (to / "predictor.json").write_text((run / "predictor.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"] = {"class_path": "nowhere.NoSuchDataModule", "init_args": {"root": "/nowhere"}}
    (to / "config.yaml").write_text(yaml.safe_dump(config))
    for path in (run / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        assert checkpoint["callbacks"].pop("SavePredictor")["record"]["state"]  # it was there
        if edit is not None:
            edit(checkpoint["state_dict"])
        torch.save(checkpoint, to / "checkpoints" / path.name)
    return to


def _confident(state_dict: dict) -> None:
    """A detector sure of a circle in every cell: a barely trained one scores nothing above the 0.5 threshold, and
    the rows need detections to map back to the input's pixels."""
    state_dict["head.bias"][0] = 8.0  # objectness
    state_dict["head.bias"][5] = 8.0  # class 0


def _write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> None:
    """``samples`` (frames, channels) in [-1, 1] as a PCM WAV file of 8-bit (unsigned) or 16-bit samples."""
    data = (samples * 127 + 128).astype(np.uint8) if width == 1 else (samples * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(data.tobytes())


def _tone(rate: int, seconds: float, hz: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave_ = 0.4 * np.sin(2 * np.pi * hz * t) * np.exp(-2 * t) + 0.02 * np.random.default_rng(0).normal(size=t.shape)
    return np.repeat(wave_[:, None], channels, axis=1).clip(-1, 1)


def _inputs(plugin: str, home: Path) -> list[str]:
    """The plugin's input files under ``home``, and the ``dlbench predict`` arguments that name them."""
    if plugin == "audio":
        (home / "wavs").mkdir()
        _write_wav(home / "wavs" / "a_tone.wav", _tone(8000, 0.6, 440), 8000)
        _write_wav(home / "wavs" / "b_stereo44k.wav", _tone(44100, 1.3, 300, channels=2), 44100)
        (home / "wavs" / "c_garbage.wav").write_bytes(b"ID3\x03 an mp3 renamed, not a WAV file" * 10)
        _write_wav(home / "d_8bit16k.wav", _tone(16000, 0.4, 700), 16000, width=1)
        return ["--input", "wavs", "d_8bit16k.wav"]
    if plugin == "detector":
        image = Image.new("RGB", (200, 120), (60, 110, 170))
        pen = ImageDraw.Draw(image)
        pen.ellipse((20, 20, 80, 80), fill=(250, 220, 0))
        pen.rectangle((120, 30, 170, 80), fill=(220, 30, 30))
        image.save(home / "wide.png")
        (home / "broken.png").write_text("not a picture")
        return ["--input", "wide.png", "broken.png", "--top_k", str(TOP_BOXES)]
    return []


def _predict(home: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess, list[dict] | None]:
    out = home / f"{name.replace('/', '_')}.jsonl"
    proc = dlbench("predict", "--run", "elsewhere/run", *args, "-o", str(out), cwd=home, env=ONE_THREAD)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else None
    return proc, rows


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> dict[str, dict]:
    """The three plugins fitted side by side, then predicted side by side from a copy of each run that has only
    predictor.json: audio and detector on their files, gcn on every node, on ``--nodes`` and on an unknown node."""
    homes = {p: tmp_path_factory.mktemp(p) for p in PLUGINS}
    with ThreadPoolExecutor(len(PLUGINS)) as pool:
        runs = dict(zip(PLUGINS, pool.map(lambda p: _fit(p, homes[p]), PLUGINS), strict=True))
        calls = {}
        for plugin, home in homes.items():
            _elsewhere(runs[plugin], home / "elsewhere" / "run", _confident if plugin == "detector" else None)
            calls[plugin] = _inputs(plugin, home)
        calls["gcn/nodes"] = ["--nodes", *map(str, SUBSET)]
        calls["gcn/unknown"] = ["--nodes", "3", "34"]
        results = dict(zip(calls, pool.map(lambda c: _predict(homes[c.split("/")[0]], c, *calls[c]), calls),
                           strict=True))
    return {name: {"home": homes[name.split("/")[0]], "run": runs[name.split("/")[0]],
                   "moved": homes[name.split("/")[0]] / "elsewhere" / "run", "proc": proc, "rows": rows}
            for name, (proc, rows) in results.items()}


def _state(case: dict) -> dict:
    return json.loads((case["run"] / "predictor.json").read_text())["state"]


def _model(case: dict):
    moved = TrainedRun.open(case["moved"])
    return moved.load_model()


def _done(case: dict, expected_rc: int = 0) -> list[dict]:
    proc = case["proc"]
    assert proc.returncode == expected_rc and case["rows"] is not None, proc.stderr[-3000:]
    assert "NoSuchDataModule" not in proc.stderr
    return case["rows"]


# audio


def _audio_features(path: Path, state: dict) -> torch.Tensor:
    """The test's own pipeline: read, resample with scipy, mix to mono, cut or pad, log-mel, normalise."""
    from scipy.signal import resample_poly

    samples = read_wav(path)
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
    sr = state["sample_rate"]
    if rate != sr:
        g = gcd(rate, sr)
        samples = torch.from_numpy(resample_poly(samples.double().numpy(), sr // g, rate // g, axis=1)).float()
    clip = fit_length(samples.mean(0), state["clip_samples"])
    feats = log_mel(clip[None], sr, n_mels=state["n_mels"], n_fft=state["n_fft"], hop_length=state["hop_length"])[0]
    assert state["features"] == "logmel"
    return (feats - torch.tensor(state["mean"])[:, None]) / torch.tensor(state["std"])[:, None]


def test_audio_rows_for_a_folder_and_a_file_in_order_with_the_garbage_as_an_error_row(predicted):
    case = predicted["audio"]
    rows = _done(case, expected_rc=2)
    assert [r["input"] for r in rows] == [os.path.join("wavs", n) for n in ("a_tone.wav", "b_stereo44k.wav",
                                                                            "c_garbage.wav")] + ["d_8bit16k.wav"]
    garbage = rows[2]
    assert set(garbage) == {"input", "error"}
    assert garbage["error"].startswith(os.path.join("wavs", "c_garbage.wav") + ": the file is not a readable PCM WAV")
    assert "dlbench: error: " + garbage["error"] in case["proc"].stderr
    names = _state(case)["class_names"]
    for row in (rows[0], rows[1], rows[3]):
        assert {"prediction", "probability", "top2", "top3_probability"} <= set(row)
        assert row["prediction"] in names and row["top2"] in names and row["top3"] in names
        assert row["probability"] >= row["top2_probability"] >= row["top3_probability"]


def test_audio_notes_say_what_was_resampled_mixed_and_cut(predicted):
    case = predicted["audio"]
    rows = _done(case, expected_rc=2)
    assert "note" not in rows[0]  # 8 kHz mono, shorter than a clip: exactly what the run trained on
    assert rows[1]["note"] == "2 channels mixed to mono; resampled from 44100 Hz to 8000 Hz; only the first 0.99 s " \
                              "of 1.30 s heard"
    assert rows[3]["note"] == "resampled from 16000 Hz to 8000 Hz"
    assert f"dlbench: {os.path.join('wavs', 'b_stereo44k.wav')}: 2 channels mixed to mono" in case["proc"].stderr


def test_audio_predictions_are_the_models_forward_on_the_tests_own_features(predicted):
    case = predicted["audio"]
    rows = _done(case, expected_rc=2)
    state = _state(case)
    files = [case["home"] / "wavs" / "a_tone.wav", case["home"] / "wavs" / "b_stereo44k.wav",
             case["home"] / "d_8bit16k.wav"]
    x = torch.stack([_audio_features(f, state) for f in files])
    assert x.shape == (3, state["n_mels"], state["clip_samples"] // state["hop_length"] + 1)
    with torch.no_grad():
        probs = _model(case)(x).softmax(-1)
    for row, p in zip((rows[0], rows[1], rows[3]), probs, strict=True):
        top = p.topk(3)
        assert [row["prediction"], row["top2"], row["top3"]] == [state["class_names"][i] for i in top.indices]
        assert [row["probability"], row["top2_probability"], row["top3_probability"]] == \
            pytest.approx(top.values.tolist(), abs=1e-4)


def test_audio_an_upload_reads_as_its_file_does(predicted):
    case = predicted["audio"]
    predictor = predictor_from_record(json.loads((case["run"] / "predictor.json").read_text()), "test")
    path = case["home"] / "d_8bit16k.wav"
    from_file, = predictor.read(Source(name="d_8bit16k.wav", path=path), {})
    upload, = predictor.read(Source(name="upload.wav", data=path.read_bytes()), {})
    assert torch.equal(from_file.value[0], upload.value[0]) and upload.extra == from_file.extra
    with pytest.raises(InputError, match=r"^upload\.wav: the file is not a readable PCM WAV file"):
        predictor.read(Source(name="upload.wav", data=b"RIFF...."), {})


# gcn


def _karate_probs(case: dict) -> torch.Tensor:
    """The model's class probabilities of every node of the karate club as torch_geometric ships it."""
    from torch_geometric.datasets import KarateClub

    data = KarateClub()[0]
    with torch.no_grad():
        return _model(case)(data.x, data.edge_index).softmax(-1)


def _check_nodes(rows: list[dict], nodes, probs: torch.Tensor, names: list[str]) -> None:
    assert [r["input"] for r in rows] == [f"node {n}" for n in nodes]
    for row, n in zip(rows, nodes, strict=True):
        top = probs[n].topk(3)
        assert [row["prediction"], row["top2"], row["top3"]] == [names[i] for i in top.indices]
        assert [row["probability"], row["top2_probability"], row["top3_probability"]] == \
            pytest.approx(top.values.tolist(), abs=1e-5)


def test_gcn_predicts_every_node_of_its_graph_by_default(predicted):
    case = predicted["gcn"]
    rows = _done(case)
    state = _state(case)
    assert state["datamodule"] == "dlbench_plugins.gcn.data:KarateClubDataModule" and state["num_nodes"] == 34
    assert set(rows[0]) == {"input", "prediction", "probability", "top2", "top2_probability", "top3",
                            "top3_probability"}
    _check_nodes(rows, range(34), _karate_probs(case), state["class_names"])


def test_gcn_predicts_the_nodes_asked_for_in_their_order(predicted):
    case = predicted["gcn/nodes"]
    rows = _done(case)
    _check_nodes(rows, SUBSET, _karate_probs(case), _state(case)["class_names"])
    assert rows[2] == rows[3]


def test_gcn_an_unknown_node_is_an_error_naming_the_valid_range(predicted):
    case = predicted["gcn/unknown"]
    proc = case["proc"]
    assert proc.returncode == 2 and case["rows"] is None, proc.stderr[-3000:]  # a DlbenchError: nothing predicted
    assert "--nodes 34: not in the run's graph, whose 34 nodes are numbered 0..33" in proc.stderr
    assert "Traceback" not in proc.stderr


# detector


def _expected_boxes(case: dict, path: Path, state: dict) -> list[dict]:
    """The test's own detections of one image: letterboxed as the COCO data is, normalised, the model's forward and
    decoding, the threshold and top_k, the boxes mapped back to the image's pixels."""
    from dlbench_plugins.detector.coco import letterbox

    canvas, scale, px, py, w, h = letterbox(path, state["image_size"])
    x = (torch.from_numpy(canvas).permute(2, 0, 1).float() - torch.tensor(state["mean"])[:, None, None]) \
        / torch.tensor(state["std"])[:, None, None]
    model = _model(case)
    with torch.no_grad():
        found = model.detect(model(x[None]))[0]
    keep = found["scores"] >= 0.5
    out = []
    for box, score, label in list(zip(found["boxes"][keep].tolist(), found["scores"][keep].tolist(),
                                      found["labels"][keep].tolist(), strict=True))[:TOP_BOXES]:
        x0, y0, x1, y1 = box
        mapped = [(x0 - px) / scale, (y0 - py) / scale, (x1 - px) / scale, (y1 - py) / scale]
        mapped = [min(max(v, 0.0), float(w if i % 2 == 0 else h)) for i, v in enumerate(mapped)]
        out.append({"label": state["class_names"][label], "score": score, "box": mapped})
    return out


def test_detector_one_row_an_image_with_boxes_in_the_inputs_own_pixels(predicted):
    case = predicted["detector"]
    rows = _done(case, expected_rc=2)
    assert [r["input"] for r in rows] == ["wide.png", "broken.png"]
    row = rows[0]
    assert (row["width"], row["height"]) == (200, 120)
    boxes = row["boxes"]
    assert row["detections"] == len(boxes) and 0 < len(boxes) <= TOP_BOXES
    scores = [b["score"] for b in boxes]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.5
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        assert 0 <= x0 <= x1 <= 200 and 0 <= y0 <= y1 <= 120, b
        assert b["label"] in _state(case)["class_names"]
    assert rows[1] == {"input": "broken.png", "error": "broken.png: not an image Pillow can read (PNG, JPEG, BMP, GIF, "
                                                       "TIFF, WebP). Give an image file, or remove it from the inputs."}


def test_detector_boxes_are_the_models_detections_mapped_back(predicted):
    case = predicted["detector"]
    rows = _done(case, expected_rc=2)
    expected = _expected_boxes(case, case["home"] / "wide.png", _state(case))
    got = rows[0]["boxes"]
    assert [b["label"] for b in got] == [e["label"] for e in expected]
    assert [b["score"] for b in got] == pytest.approx([e["score"] for e in expected], abs=1e-4)
    for b, e in zip(got, expected, strict=True):
        assert b["box"] == pytest.approx(e["box"], abs=0.06)


def test_detector_draws_the_boxes_on_the_input_image(predicted):
    case = predicted["detector"]
    rows = _done(case, expected_rc=2)
    drawn = Path(rows[0]["image"])
    drawn = drawn if drawn.is_absolute() else case["home"] / drawn
    assert drawn.name == "wide_boxes.png" and drawn.is_file()
    with Image.open(drawn) as image:
        assert image.size == (200, 120)
        pixels = np.asarray(image.convert("RGB"))
    with Image.open(case["home"] / "wide.png") as original:
        assert (pixels != np.asarray(original.convert("RGB"))).any()  # something was drawn on it
    assert "1 predictions (1 inputs failed)" in case["proc"].stderr and "1 images beside it" in case["proc"].stderr
