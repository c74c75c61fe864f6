"""``dlbench predict`` with the generative image models, as a user runs it: real tiny fits (one a plugin, side by
side, shared by the module's tests), then real ``dlbench predict`` processes, side by side. Reconstructions
(autoencoder, vae ``--input``) must be PNG files of the run's image size whose pixels are the model's own forward pass
on the same input tensors, with the per-sample error beside them; draws (vae, gan ``--num_samples``) must be the
decoder's images of noise fixed by each sample's seed, byte for byte the same on a second run; a file that is not an
image is an error row (exit 2) while the other inputs are still done; a GAN given ``--input`` is a clear error. A
``dlbench`` process spends most of its time importing torch and Lightning, so there are as few as the checks allow
(nine) and they run three at a time."""

from __future__ import annotations

import csv
import filecmp
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import dlbench
from dlbench_plugins.images.predict import ImagePredictor
from PIL import Image

from dlbench.cli import main as dlbench_main
from dlbench.core import registry
from dlbench.data.predict import Source
from dlbench.runs.trained import TrainedRun

PLUGINS = ("autoencoder", "vae", "gan")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models: threads only add overhead on a shared machine
FAST = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--test_after_fit", "false", "--log_graph", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false")
DRAW = ("--num_samples", "4", "--seed", "1")


def _fit(name: str, home: Path) -> Path:
    result = dlbench("fit", "--model", name, *registry.plugin(name).tiny_args, *FAST, cwd=home, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    return home / "lightning_logs" / name / "version_0"


def _write_inputs(root: Path) -> list[str]:
    """``imgs/`` (a grey PNG and an RGB JPEG, neither the run's size) and ``notes.txt``, which is no image; the
    ``--input`` arguments that name them."""
    (root / "imgs").mkdir()
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(root / "imgs" / "a.png")
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "imgs" / "b.jpg")
    (root / "notes.txt").write_text("not an image\n")
    return ["--input", str(root / "imgs"), str(root / "notes.txt")]


def _predict(run: Path, out: Path, *args: str) -> tuple[int, list[dict[str, str]], str]:
    result = dlbench("predict", "--run", str(run), "-o", str(out), *args, cwd=run.parents[2], env=ONE_THREAD)
    rows = list(csv.DictReader(out.open())) if out.is_file() else []
    return result.returncode, rows, result.stderr


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> dict[str, dict]:
    """The three plugins fitted side by side, then predicted side by side: reconstructions of the autoencoder and
    the vae, and ``--num_samples 4 --seed 1`` of the vae and the gan, twice each. ``predicted[call]`` holds the run,
    the exit code, the rows (read from the CSV file) and the standard error."""
    homes = {name: tmp_path_factory.mktemp(name) for name in PLUGINS}
    inputs = _write_inputs(tmp_path_factory.mktemp("inputs"))
    calls = {"autoencoder/recon": inputs, "vae/recon": inputs, "vae/draw": DRAW, "vae/again": DRAW,
             "gan/draw": DRAW, "gan/again": DRAW}
    with ThreadPoolExecutor(len(PLUGINS)) as pool:
        runs = dict(zip(PLUGINS, pool.map(lambda name: _fit(name, homes[name]), PLUGINS), strict=True))

        def call(name: str) -> tuple[int, list[dict[str, str]], str]:
            plugin = name.split("/")[0]
            return _predict(runs[plugin], homes[plugin] / f"{name.replace('/', '_')}.csv", *calls[name])

        results = dict(zip(calls, pool.map(call, calls), strict=True))
    return {name: {"run": runs[name.split("/")[0]], "code": code, "rows": rows, "stderr": stderr,
                   "inputs": Path(inputs[1]).parent}
            for name, (code, rows, stderr) in results.items()} | {"runs": runs}


def run_predictor(run: Path) -> ImagePredictor:
    return ImagePredictor.from_state(json.loads((run / "predictor.json").read_text())["state"])


def png(path: str) -> np.ndarray:
    return np.asarray(Image.open(path))


def assert_pixels(path: str, expected: np.ndarray, predictor: ImagePredictor) -> None:
    """The PNG file has the run's image size and the expected uint8 pixels, within one level of rounding."""
    image = png(path)
    assert image.shape[:2] == (predictor.size, predictor.size), path
    assert image.shape == expected.shape, path
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1, path


def check_reconstructions(name: str, case: dict) -> None:
    assert case["code"] == 2, case["stderr"][-3000:]  # one input failed; the others are still done
    root, rows = case["inputs"], case["rows"]
    assert [r["input"] for r in rows] == [str(root / "imgs" / "a.png"), str(root / "imgs" / "b.jpg"),
                                          str(root / "notes.txt")]
    assert "not an image" in rows[2]["error"] and not rows[2]["image"]
    predictor, model = run_predictor(case["run"]), TrainedRun.open(case["run"]).load_model()
    for row in rows[:2]:
        assert not row["error"], row
        # The same tensor the predictor gives the model, through the model's own forward pass.
        (x,) = predictor.read(Source(name=row["input"], path=Path(row["input"])), {})[0].value
        with torch.no_grad():
            recon = model(x.unsqueeze(0))
        assert recon.shape == (1, predictor.channels, predictor.size, predictor.size)
        assert_pixels(row["image"], predictor.denormalize(recon)[0], predictor)
        mse = float((recon[0] - x).square().mean())  # per pixel, in the normalised space
        assert float(row["mse"]) == pytest.approx(mse, rel=1e-4, abs=2e-6), (name, row)


def check_draws(name: str, first: dict, again: dict, decode) -> None:
    """``--num_samples 4 --seed 1``: sample i is the decoder's image of standard normal noise seeded by the seed the
    predictor gave it; a second run writes the same bytes; seed 2's images are other images."""
    assert first["code"] == 0, first["stderr"][-3000:]
    assert again["code"] == 0, again["stderr"][-3000:]
    rows = first["rows"]
    assert [r["input"] for r in rows] == [f"sample_{i}" for i in range(4)] == [r["input"] for r in again["rows"]]
    for one, other in zip(rows, again["rows"], strict=True):
        assert one["image"] != other["image"] and filecmp.cmp(one["image"], other["image"], shallow=False)

    predictor, model = run_predictor(first["run"]), TrainedRun.open(first["run"]).load_model()
    latent_dim = model.hparams.latent_dim

    def expected(seed: int) -> np.ndarray:
        seeds = predictor.collate([e.value for e in predictor.generate({"num_samples": 4, "seed": seed})])[0]
        z = torch.stack([torch.randn(latent_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        with torch.no_grad():
            return predictor.denormalize(decode(model, z))

    for row, pixels in zip(rows, expected(1), strict=True):
        assert_pixels(row["image"], pixels, predictor)
    drawn = np.stack([png(r["image"]) for r in rows])
    assert not np.array_equal(drawn, expected(2)), f"{name}: --seed 2 would draw the images --seed 1 drew"
    assert len({image.tobytes() for image in drawn}) > 1, f"{name}: the four samples are all alike"


def test_autoencoder_reconstructs_each_image_with_its_error(predicted):
    check_reconstructions("autoencoder", predicted["autoencoder/recon"])


def test_vae_reconstructs_inputs(predicted):
    check_reconstructions("vae", predicted["vae/recon"])


def test_vae_draws_repeatable_samples_from_the_prior(predicted):
    check_draws("vae", predicted["vae/draw"], predicted["vae/again"], lambda model, z: model.to_image(model.decode(z)))


def test_gan_draws_repeatable_samples(predicted):
    check_draws("gan", predicted["gan/draw"], predicted["gan/again"], lambda model, z: model(z))


def test_gan_refuses_inputs(predicted, tmp_path, capsys, monkeypatch):
    # In this process (a fresh one costs seconds of imports), after the processes above: the command stops before it
    # predicts anything (and so before it sets the variables a multi-device prediction hands its processes).
    for name in ("DLBENCH_PREDICT_DIR", "DLBENCH_PREDICT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "rows.csv"
    images = predicted["vae/recon"]["inputs"] / "imgs"
    code = dlbench_main(["predict", "--run", str(predicted["runs"]["gan"]), "-o", str(out), "--input", str(images)])
    stderr = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "gan" in stderr and "drop --input" in stderr.lower(), stderr[-3000:]
