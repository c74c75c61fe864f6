"""``dlbench predict`` and ``dlbench serve`` on image classifiers: real fits, real PNG files written by the test, real
processes, a real LitServe server on 127.0.0.1."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import dlbench
from PIL import Image

from dlbench.data.predict import predictor_from_record
from dlbench.runs.trained import TrainedRun

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _snapshot(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file() and p.relative_to(run).parts[0] not in ("predictions", "evaluations")}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """An mlp trained on scikit-learn's 8x8 digits for a few epochs."""
    home = tmp_path_factory.mktemp("digits")
    fit = dlbench("fit", "--model", "mlp", "--trainer.max_epochs", "4", "--test_after_fit", "false", cwd=home)
    assert fit.returncode == 0, fit.stderr[-2000:]
    return home / "lightning_logs" / "mlp" / "version_0"


def _digit_pngs(folder: Path, n: int = 12) -> list[tuple[Path, int]]:
    """Test digits of scikit-learn's set as 40x40 RGB PNGs: another size and mode than the 8x8 grey training images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(n):
        k = len(digits.target) - 1 - i
        pixels = (digits.images[k] * 255 / 16).round().astype(np.uint8)
        path = folder / f"digit_{i:02d}.png"
        Image.fromarray(pixels).resize((40, 40), Image.Resampling.NEAREST).convert("RGB").save(path)
        written.append((path, int(digits.target[k])))
    return written


def test_predict_rows_match_the_models_forward_and_the_run_is_untouched(digits_run, tmp_path):
    pngs = _digit_pngs(tmp_path / "in")
    (tmp_path / "in" / "notes.png").write_text("not an image")
    before = _snapshot(digits_run)
    result = dlbench("predict", "--run", str(digits_run), "--input", str(tmp_path / "in"), "--top_k", "2",
                     cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # one input failed: its line, and the others predicted
    assert "notes.png: not an image" in result.stderr and "Traceback" not in result.stderr
    assert "dirpath" not in result.stderr and "GPU available" not in result.stderr
    assert _snapshot(digits_run) == before
    assert sorted(p.name for p in digits_run.parent.iterdir()) == ["version_0"]  # no new training run
    (folder,) = (digits_run / "predictions").iterdir()
    with open(folder / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["input"]).name for r in rows] == sorted([p.name for p, _ in pngs] + ["notes.png"])  # input order
    by_name = {Path(r["input"]).name: r for r in rows}
    assert set(by_name) == {p.name for p, _ in pngs} | {"notes.png"}
    assert by_name["notes.png"]["error"] and not by_name["notes.png"]["prediction"]
    assert {"prediction", "probability", "top2", "top2_probability"} <= set(rows[0])

    # The same files through the run's own preprocessing (rebuilt from predictor.json) and the model's forward.
    predictor = predictor_from_record(json.loads((digits_run / "predictor.json").read_text()), "test")
    model = TrainedRun.open(digits_run).load_model()
    x = torch.stack([predictor.normalize(torch.from_numpy(
        np.asarray(Image.open(p).convert("L").resize((8, 8), Image.Resampling.BILINEAR), dtype=np.uint8)[None].copy()))
        for p, _ in pngs])
    with torch.no_grad():
        probs = model(x).softmax(-1)
    for (path, _), p in zip(pngs, probs, strict=True):
        row = by_name[path.name]
        assert row["prediction"] == str(int(p.argmax()))
        assert float(row["probability"]) == pytest.approx(float(p.max()), abs=1e-5)
    right = sum(by_name[p.name]["prediction"] == str(label) for p, label in pngs)
    assert right >= 9, f"{right} of {len(pngs)} digits right"


def test_output_file_formats_and_a_folder_refused(digits_run, tmp_path):
    (png, _), = _digit_pngs(tmp_path / "in", n=1)
    for name in ("rows.jsonl", "rows.csv"):
        result = dlbench("predict", "--run", str(digits_run), "-i", str(png), "-o", str(tmp_path / name),
                         "--trainer.precision", "bf16-mixed", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert row["input"] == str(png) and row["prediction"] in [str(d) for d in range(10)]
    with open(tmp_path / "rows.csv") as f:
        assert next(csv.DictReader(f))["prediction"] == row["prediction"]
    refused = dlbench("predict", "--run", str(digits_run), "-i", str(png), "-o", str(tmp_path), cwd=tmp_path)
    assert refused.returncode == 2 and "is a folder" in refused.stderr


def test_a_run_without_saved_preprocessing_says_what_it_lacks_and_data_rebuilds_it(digits_run, tmp_path):
    old = tmp_path / "old_run"
    (old / "checkpoints").mkdir(parents=True)
    (old / "config.yaml").write_bytes((digits_run / "config.yaml").read_bytes())
    saved = torch.load(digits_run / "checkpoints" / "last.ckpt", weights_only=True)
    saved["callbacks"] = {k: v for k, v in saved["callbacks"].items() if k != "SavePredictor"}
    torch.save(saved, old / "checkpoints" / "last.ckpt")
    (png, _), = _digit_pngs(tmp_path / "in", n=1)
    lacking = dlbench("predict", "--run", str(old), "-i", str(png), cwd=tmp_path)
    assert lacking.returncode == 2 and "predictor.json" in lacking.stderr and "--data" in lacking.stderr
    rebuilt = dlbench("predict", "--run", str(old), "-i", str(png), "--data", "-o", str(tmp_path / "r.jsonl"),
                      cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads((tmp_path / "r.jsonl").read_text())["prediction"] in [str(d) for d in range(10)]


MNIST = Path(os.environ.get("DLBENCH_TEST_DATA", "/nonexistent")) / "mnist"


@pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="needs MNIST under $DLBENCH_TEST_DATA/mnist (CI sets it to ../shared/data)")
def test_200_mnist_test_digits_as_png_files_at_95_percent(tmp_path):
    fit = dlbench("fit", "--model", "mlp", "--data", "mnist", "--data.root", str(MNIST), "--trainer.max_epochs", "1",
                  "--test_after_fit", "false", "--trainer.enable_progress_bar", "false", cwd=tmp_path, timeout=600)
    assert fit.returncode == 0, fit.stderr[-2000:]
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(200):
        Image.fromarray(images[i]).save(folder / f"{i:03d}_{labels[i]}.png")
    result = dlbench("predict", "--run", str(tmp_path / "lightning_logs" / "mlp" / "version_0"), "-i", str(folder),
                     "-o", str(tmp_path / "p.csv"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200
    right = sum(Path(r["input"]).stem.split("_")[1] == r["prediction"] for r in rows)
    assert right >= 190, f"{right} of 200 MNIST test digits right"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post_file(url: str, path: Path, timeout: float = 60) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_serve_answers_50_concurrent_requests_as_predict_does_and_survives_garbage(digits_run, tmp_path):
    pngs = [p for p, _ in _digit_pngs(tmp_path / "in", n=10)]
    expected = dlbench("predict", "--run", str(digits_run), "-i", *map(str, pngs), "-o", str(tmp_path / "p.jsonl"),
                       cwd=tmp_path)
    assert expected.returncode == 0, expected.stderr
    rows = {Path(r["input"]).name: r for r in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DLBENCH_LOG_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "dlbench", "serve", "--run", str(digits_run), "--port", str(port),
                               "--max_batch_size", "8"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the server did not come up in 120 s")
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda i: (pngs[i % 10], _post_file(f"{url}/predict", pngs[i % 10])), range(50)))
        for path, (status, answer) in answers:
            assert status == 200, answer
            want = rows[path.name]
            assert answer["prediction"] == want["prediction"]
            assert answer["probability"] == pytest.approx(want["probability"], abs=1e-5)
        garbage = tmp_path / "garbage.png"
        garbage.write_bytes(b"\x89PNG but not really")
        status, answer = _post_file(f"{url}/predict", garbage)
        assert status == 400 and "not an image" in answer["error"]
        status, answer = _post_file(f"{url}/predict", pngs[0])
        assert status == 200 and answer["prediction"] == rows[pngs[0].name]["prediction"]
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
