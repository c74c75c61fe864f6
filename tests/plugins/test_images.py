"""The image datasets: the real MNIST and Fashion-MNIST, MNIST-layout folders written here, image folders of PNGs,
the shared split, statistics and augmentation, and the datasets as ``dlbench`` lists and runs them."""

from __future__ import annotations

import gzip
import json
import os
import struct
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import dlbench
from dlbench_plugins.images.data import (
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    augment,
    channel_stats,
    rotate,
    stratified_split,
)
from lightning.pytorch.plugins.precision import Precision
from PIL import Image

from dlbench.cli import main
from dlbench.cli.info import arguments
from dlbench.core.errors import DlbenchError
from dlbench.runs import last_scalars

SHARED = os.environ.get("DLBENCH_TEST_DATA")
needs_shared = pytest.mark.skipif(not SHARED, reason="DLBENCH_TEST_DATA is not set")
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# --- the real data -----------------------------------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize(("cls", "folder"), [(MNISTDataModule, "mnist"), (FashionMNISTDataModule, "fashion-mnist")])
def test_real_dataset_through_the_datamodule(cls, folder, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")  # the shared copy must be read, never downloaded
    dm = cls(root=str(Path(SHARED) / folder))
    train_x, train_y, test_x, test_y = dm.load()
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert train_x.dtype == test_x.dtype == torch.uint8 and train_y.dtype == test_y.dtype == torch.int64
    assert (dm.num_classes, dm.in_channels, dm.image_size, len(dm.class_names)) == (10, 1, 28, 10)
    for labels in (train_y, test_y):
        share = torch.bincount(labels, minlength=10).double() / len(labels)
        assert len(share) == 10 and share.min() > 0.08 and share.max() < 0.12  # all ten classes, none dominant
    assert 0 < train_x.float().mean() < 128 and train_x.max() == 255  # dark background, full-range strokes

    dm.setup("fit")
    train, val = dm.splits["train"], dm.splits["val"]
    assert len(train[0]) + len(val[0]) == 60000 and abs(len(val[0]) - 6000) <= 10
    val_share = torch.bincount(val[1], minlength=10).double() / torch.bincount(train_y, minlength=10)
    assert torch.allclose(val_share, torch.full((10,), 0.1, dtype=torch.float64), atol=0.002)  # stratified
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (128, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    full = dm.normalize(train[0][:5000])
    assert abs(full.mean()) < 0.05 and abs(full.std() - 1) < 0.05


# --- MNIST-layout folders written here ---------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder: Path, n_train: int = 40, n_test: int = 20, side: int = 28, gzipped: bool = True,
                  seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        IDX_NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if gzipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return arrays


@pytest.mark.parametrize("gzipped", [True, False])
def test_mnist_layout_folder(tmp_path, monkeypatch, gzipped):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    arrays = write_idx_set(tmp_path, gzipped=gzipped)
    train_x, train_y, test_x, test_y = FashionMNISTDataModule(root=str(tmp_path)).load()
    np.testing.assert_array_equal(train_x[:, 0].numpy(), arrays[IDX_NAMES[0]])
    np.testing.assert_array_equal(test_y.numpy(), arrays[IDX_NAMES[3]])
    assert train_x.shape == (40, 1, 28, 28) and train_y.dtype == torch.int64


def test_mnist_wrong_image_size(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    write_idx_set(tmp_path, side=20)
    with pytest.raises(DlbenchError, match="holds 20x20 images; mnist images are 28x28"):
        MNISTDataModule(root=str(tmp_path)).load()


def test_mnist_mismatched_pair(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    write_idx_set(tmp_path)
    labels = (np.arange(39) % 10).astype(np.uint8)
    (tmp_path / f"{IDX_NAMES[1]}.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DlbenchError, match="holds 40 images but .*train-labels-idx1-ubyte.gz holds 39 labels"):
        MNISTDataModule(root=str(tmp_path)).load()


def test_mnist_truncated_download_in_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    monkeypatch.setenv("DLBENCH_DATA_DIR", str(tmp_path))
    write_idx_set(tmp_path / "mnist")
    path = tmp_path / "mnist" / f"{IDX_NAMES[2]}.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DlbenchError, match=f"{path} is a damaged gzip file"):
        MNISTDataModule().load()


def test_mnist_offline_without_files_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    with pytest.raises(DlbenchError) as err:
        MNISTDataModule(root=str(tmp_path / "empty")).prepare_data()
    message = str(err.value)
    assert f"Put train-images-idx3-ubyte.gz in {tmp_path / 'empty'}" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in message


def test_remotes_are_the_official_files():
    for cls, host in ((MNISTDataModule, "ossci-datasets"), (FashionMNISTDataModule, "fashion-mnist.s3-website")):
        assert sorted(cls.remotes) == sorted(f"{n}.gz" for n in IDX_NAMES)
        assert all(host in r.urls[0] and r.urls[0].endswith(r.filename) and len(r.md5) == 32
                   for r in cls.remotes.values())
    assert CIFAR10DataModule.remote.urls == ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)


# --- image folders -------------------------------------------------------------------------------------------------

COLOURS = {"benign": (200, 30, 30), "malignant": (20, 40, 220), "normal": (30, 180, 60)}


def write_folder(root: Path, per_class: int = 10) -> Path:
    """Three classes of solid-colour PNGs in assorted sizes and modes, plus files a scan must skip."""
    for c, (name, colour) in enumerate(COLOURS.items()):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (20 + 3 * i, 30 + c), colour)
            if i % 3 == 1:
                image = image.convert("RGBA")
            elif i % 3 == 2:
                image = image.convert("P", palette=Image.Palette.ADAPTIVE)
            image.save(folder / f"{i:02d}.PNG" if i == 0 else folder / f"{i:02d}.png")
        (folder / "notes.txt").write_text("not an image")
        (folder / ".hidden.png").write_bytes(b"not even a png")
    (root / "README.md").write_text("a stray file at the top")
    (root / ".thumbnails").mkdir()
    return root


def test_image_folder_reads_classes_and_splits_by_class(tmp_path):
    dm = ImageFolderDataModule(root=str(write_folder(tmp_path / "data")), image_size=12, test_fraction=0.2)
    assert dm.class_names == ("benign", "malignant", "normal")
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (3, 3, 12)
    train_x, train_y, test_x, test_y = dm.load()
    assert train_x.shape == (24, 3, 12, 12) and test_x.shape == (6, 3, 12, 12) and train_x.dtype == torch.uint8
    assert torch.bincount(test_y).tolist() == [2, 2, 2] and torch.bincount(train_y).tolist() == [8, 8, 8]
    for x, y in ((train_x, train_y), (test_x, test_y)):
        for c, colour in enumerate(COLOURS.values()):
            pixels = x[y == c].permute(1, 0, 2, 3).reshape(3, -1).float()
            assert (pixels - torch.tensor(colour)[:, None]).abs().max() <= 1
    again = ImageFolderDataModule(root=dm.hparams.root, image_size=12, seed=5).load()
    assert torch.equal(again[3], test_y)  # the test split does not move with the validation seed


def test_image_folder_grey(tmp_path):
    dm = ImageFolderDataModule(root=str(write_folder(tmp_path)), image_size=8, in_channels=1)
    train_x, train_y, _, _ = dm.load()
    assert train_x.shape == (24, 1, 8, 8)
    luma = {c: round(0.299 * r + 0.587 * g + 0.114 * b) for c, (r, g, b) in enumerate(COLOURS.values())}
    for c, value in luma.items():
        assert (train_x[train_y == c].int() - value).abs().max() <= 1


def test_image_folder_sixteen_bit_images_are_scaled(tmp_path):
    for name, low in (("a", 0), ("b", 1000)):
        (tmp_path / name).mkdir()
        for i in range(3):
            ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 16 + low)  # a 12-bit scanner's range
            Image.fromarray(ramp).save(tmp_path / name / f"{i}.png")
    x, _, _, _ = ImageFolderDataModule(root=str(tmp_path), image_size=16, in_channels=1, test_fraction=0.3).load()
    assert x.min() == 0 and x.max() == 255  # not clipped to 255 everywhere, not left nearly black


@pytest.mark.parametrize(("setup", "message"), [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "has no class folders"),
    (lambda root: (root / "only").mkdir(parents=True) or (root / "only" / "a.png").write_bytes(b""),
     "only one class folder \\('only'\\)"),
    (lambda root: [(root / c).mkdir(parents=True) for c in "ab"] and (root / "a" / "x.png").write_bytes(b""),
     "class folder .*b holds no images"),
])
def test_image_folder_layout_errors(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DlbenchError, match=message):
        ImageFolderDataModule(root=str(root))


def test_image_folder_needs_a_root():
    with pytest.raises(DlbenchError, match="pass --data.root DIR.*one sub-folder per class"):
        ImageFolderDataModule()


def test_image_folder_corrupt_image_names_the_file(tmp_path):
    write_folder(tmp_path, per_class=3)
    bad = tmp_path / "normal" / "01.png"
    bad.write_bytes(bad.read_bytes()[:40])
    dm = ImageFolderDataModule(root=str(tmp_path))
    with pytest.raises(DlbenchError, match=f"cannot read image {bad}.*Remove or replace the file"):
        dm.load()


def test_image_folder_too_few_images(tmp_path):
    for name in "ab":
        (tmp_path / name).mkdir()
        Image.new("L", (4, 4)).save(tmp_path / name / "only.png")
    with pytest.raises(DlbenchError, match="too few for a test split"):
        ImageFolderDataModule(root=str(tmp_path)).load()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"in_channels": 2}, "in_channels must be 1 .* or 3"),
    ({"image_size": 2}, "image_size must be >= 4"),
    ({"test_fraction": 1.0}, "test_fraction must be in"),
    ({"rotate": -5}, "rotate must be in"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
])
def test_image_folder_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageFolderDataModule(root=str(write_folder(tmp_path, per_class=2)), **kwargs)


# --- split, statistics, augmentation -----------------------------------------------------------------------------


def test_stratified_split_per_class():
    labels = torch.tensor([0] * 50 + [1] * 7 + [2] * 2 + [3])
    held, rest = stratified_split(labels, 0.2, seed=0)
    assert torch.bincount(labels[held], minlength=4).tolist() == [10, 1, 1, 0]  # never a class's only image
    assert sorted(torch.cat([held, rest]).tolist()) == list(range(len(labels)))
    assert torch.equal(held, held.sort().values)
    assert torch.equal(held, stratified_split(labels, 0.2, seed=0)[0])
    assert not torch.equal(held, stratified_split(labels, 0.2, seed=1)[0])


def test_channel_stats_match_float_statistics():
    x = torch.randint(0, 256, (64, 3, 5, 7), dtype=torch.uint8)
    x[:, 1] //= 4
    mean, std = channel_stats(x)
    assert mean.shape == std.shape == (1, 3, 1, 1)
    torch.testing.assert_close(mean, x.float().mean(dim=(0, 2, 3), keepdim=True))
    torch.testing.assert_close(std, x.float().std(dim=(0, 2, 3), keepdim=True))


def test_flips_give_the_image_or_its_mirror():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 2, 6, 6), dtype=torch.uint8)
    for kwargs, dim in (({"flip": True}, 3), ({"flip": False, "vflip": True}, 2)):
        out = augment(x, pad=0, **kwargs)
        same = (out == x).flatten(1).all(1)
        mirrored = (out == x.flip(dim)).flatten(1).all(1)
        assert (same | mirrored).all() and mirrored.any() and same.any()


def test_translation_keeps_content_and_shape():
    torch.manual_seed(0)
    x = torch.zeros(32, 1, 16, 16, dtype=torch.uint8)
    x[:, :, 6:10, 6:10] = 255
    out = augment(x, pad=2, flip=False)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert ((out == 255).flatten(1).sum(1) == 16).all()  # the square moved, whole
    assert not (out == x).flatten(1).all(1).all()


def test_rotation():
    torch.manual_seed(0)
    flat = torch.full((4, 3, 10, 10), 77, dtype=torch.uint8)
    torch.testing.assert_close(rotate(flat, 30), flat.float())  # edges repeat outwards: no black corners
    x = torch.zeros(8, 1, 21, 21, dtype=torch.uint8)
    x[:, :, 10, :] = 255  # a horizontal bar
    out = rotate(x, 45)
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 255
    assert (out[:, 0, 10, 10] > 200).all()  # the centre stays
    assert (out[:, 0, 10, 0] < 250).any()  # the bar's ends have moved


def test_augmentation_only_while_training():
    dm = DigitsDataModule(flip=True)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    plain = dm.normalize(batch[0])
    dm.trainer = SimpleNamespace(training=False, precision_plugin=Precision())  # full precision: no conversion
    torch.testing.assert_close(dm.on_after_batch_transfer(batch, 0)[0], plain)
    dm.trainer = SimpleNamespace(training=True, precision_plugin=Precision())
    torch.manual_seed(0)
    out = dm.on_after_batch_transfer(batch, 0)[0]
    mirrored = (out == dm.normalize(batch[0].flip(3))).flatten(1).all(1)
    assert ((out == plain).flatten(1).all(1) | mirrored).all() and mirrored.any()


def test_example_input_passes_through_untouched():
    dm = DigitsDataModule()
    example = torch.zeros(2, 1, 8, 8)  # Lightning sends a model's example_input_array through this hook too
    assert dm.on_after_batch_transfer(example, 0) is example


def test_every_datamodule_argument_is_documented():
    for cls in (DigitsDataModule, MNISTDataModule, FashionMNISTDataModule, CIFAR10DataModule, ImageFolderDataModule):
        undocumented = [name for name, _, _, help_text in arguments(cls) if not help_text]
        assert not undocumented, f"{cls.__name__}: {undocumented}"


# --- through the dlbench command ---------------------------------------------------------------------------------


def test_list_shows_the_image_datasets(tmp_path):
    result = dlbench("list", "--datasets", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    for name in ("digits", "mnist", "fashion_mnist", "cifar10", "image_folder"):
        assert not entries[name]["broken"], entries[name]["error"]
        assert entries[name]["data_kind"] == "images" and entries[name]["source"]
    table = dlbench("list", "--datasets", cwd=tmp_path).stdout
    assert all(any(line.startswith(f"{n} ") and "BROKEN" not in line for line in table.splitlines())
               for n in ("mnist", "fashion_mnist", "cifar10", "image_folder"))


TINY_MODEL = '''
import lightning as L
import torch


class Tiny(L.LightningModule):
    def __init__(self, num_classes: int = 3, in_channels: int = 3, image_size: int = 16):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(in_channels * image_size * image_size, num_classes)
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)

    def forward(self, x):
        return self.net(x.flatten(1))

    def _step(self, batch, stage):
        x, y = batch
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 16, 16)
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
'''


def test_fit_on_an_image_folder(tmp_path):
    (tmp_path / "tiny_image_model.py").write_text(textwrap.dedent(TINY_MODEL))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    root = write_folder(tmp_path / "images")
    result = dlbench("fit", "--model", "tiny_image_model.Tiny", "--data", "image_folder", "--data.root", str(root),
                     "--data.image_size", "16", "--data.augment", "true", "--data.flip", "true", "--data.vflip",
                     "true", "--data.rotate", "20", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar",
                     "false", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "lightning_logs" / "tiny").glob("version_*")
    scalars = last_scalars(run)
    assert np.isfinite(scalars["test/loss"]) and np.isfinite(scalars["val/loss"])
    config = (run / "config.yaml").read_text()
    assert "ImageFolderDataModule" in config and "rotate: 20" in config


def test_fit_without_a_root_is_a_short_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny_image_model.py").write_text(textwrap.dedent(TINY_MODEL))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--model", "tiny_image_model.Tiny", "--data", "image_folder"]) == 2
    err = capsys.readouterr().err
    assert "image_folder needs the folder of images: pass --data.root DIR" in err and "Traceback" not in err
