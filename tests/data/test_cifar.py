"""The CIFAR-10 binary-release parser and datamodule on small batches in the real format, written here."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from dlbench_plugins.images.data import CIFAR10DataModule

from dlbench.core.errors import DlbenchError
from dlbench.data import cifar


def records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Batch-file bytes as the release lays them out: per image, its label byte then R, G and B planes row by row."""
    planes = images.reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1).tobytes()


def fake_batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, size=n)


def write_release(folder: Path, n: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A ``cifar-10-batches-bin`` folder: five training batches and a test batch of ``n`` images each."""
    folder.mkdir(parents=True)
    batches = {name: fake_batch(n, i) for i, name in enumerate([*cifar.TRAIN_FILES, cifar.TEST_FILE])}
    for name, (x, y) in batches.items():
        (folder / name).write_bytes(records(x, y))
    (folder / "batches.meta.txt").write_text("\n".join(cifar.CLASSES) + "\n")
    return batches


def test_record_layout_is_label_then_rgb_planes():
    image = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    image[0, 0, 0, 1] = 10  # red, row 0, column 1
    image[0, 1, 2, 0] = 20  # green, row 2, column 0
    image[0, 2, 31, 31] = 30  # blue, last pixel
    data = records(image, np.array([7]))
    assert len(data) == cifar.RECORD == 3073
    assert data[0] == 7 and data[1 + 1] == 10 and data[1 + 1024 + 2 * 32] == 20 and data[-1] == 30
    x, y = cifar.parse_batch(data)
    np.testing.assert_array_equal(x, image)
    assert y.tolist() == [7] and y.dtype == np.int64
    assert x.flags.c_contiguous and x.flags.writeable


def test_folder_concatenates_training_batches_in_order(tmp_path):
    batches = write_release(tmp_path / cifar.FOLDER, n=6)
    train_x, train_y, test_x, test_y = cifar.read_folder(tmp_path / cifar.FOLDER)
    assert train_x.shape == (30, 3, 32, 32) and test_x.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(train_x[6:12], batches["data_batch_2.bin"][0])
    np.testing.assert_array_equal(train_y[24:], batches["data_batch_5.bin"][1])
    np.testing.assert_array_equal(test_y, batches["test_batch.bin"][1])


def test_truncated_batch(tmp_path):
    x, y = fake_batch(3, 0)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(records(x, y)[:-100])
    with pytest.raises(DlbenchError, match=r"data_batch_1\.bin is 9119 bytes, not a whole number of 3073-byte"):
        cifar.read_batch(path)


def test_empty_batch(tmp_path):
    path = tmp_path / "test_batch.bin"
    path.write_bytes(b"")
    with pytest.raises(DlbenchError, match="is empty"):
        cifar.read_batch(path)


def test_label_out_of_range(tmp_path):
    x, y = fake_batch(4, 0)
    y[2] = 10
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(records(x, y))
    with pytest.raises(DlbenchError, match=r"data_batch_3\.bin, record 2: label 10 is not a class"):
        cifar.read_batch(path)


def test_pickled_python_release_is_not_mistaken_for_binary(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(b"\x80\x02}q\x00(X\x05\x00\x00\x00batch" + b"\x00" * 40)  # how a pickle starts
    with pytest.raises(DlbenchError, match="not a whole number"):
        cifar.read_batch(path)


def test_missing_batch(tmp_path):
    write_release(tmp_path / cifar.FOLDER, n=2)
    (tmp_path / cifar.FOLDER / "data_batch_4.bin").unlink()
    with pytest.raises(DlbenchError, match=r"data_batch_4\.bin is missing.*Extract the whole archive"):
        cifar.read_folder(tmp_path / cifar.FOLDER)


def make_archive(tmp_path: Path, n: int = 20) -> tuple[Path, dict]:
    source = tmp_path / "build"
    batches = write_release(source / cifar.FOLDER, n=n)
    archive = tmp_path / "root" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source / cifar.FOLDER, arcname=cifar.FOLDER)
    return archive, batches


def test_datamodule_extracts_the_archive_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    archive, batches = make_archive(tmp_path)
    dm = CIFAR10DataModule(root=str(archive.parent), val_fraction=0.2)
    train_x, train_y, test_x, test_y = dm.load()
    assert (archive.parent / "cifar-10-binary" / cifar.FOLDER / cifar.TEST_FILE).is_file()
    assert train_x.dtype == torch.uint8 and train_x.shape == (100, 3, 32, 32) and train_y.dtype == torch.int64
    np.testing.assert_array_equal(test_x.numpy(), batches[cifar.TEST_FILE][0])
    # A second datamodule reads the extracted folder; the archive is no longer needed.
    archive.unlink()
    dm = CIFAR10DataModule(root=str(archive.parent), val_fraction=0.2)
    dm.setup("fit")
    assert len(dm.splits["train"][0]) + len(dm.splits["val"][0]) == 100
    assert dm.mean.shape == (1, 3, 1, 1)
    x, y = next(iter(dm.val_dataloader()))
    x, y = dm.on_after_batch_transfer((x, y), 0)
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("layout", ["batches_folder", "parent_folder"])
def test_datamodule_reads_an_extracted_copy(tmp_path, monkeypatch, layout):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    write_release(tmp_path / cifar.FOLDER, n=5)
    root = tmp_path / cifar.FOLDER if layout == "batches_folder" else tmp_path
    train_x, _, test_x, _ = CIFAR10DataModule(root=str(root)).load()
    assert len(train_x) == 25 and len(test_x) == 5


def test_truncated_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    archive, _ = make_archive(tmp_path)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DlbenchError, match="cannot extract .*corrupt or truncated"):
        CIFAR10DataModule(root=str(archive.parent)).load()
    assert not (archive.parent / "cifar-10-binary").exists()  # no half-extracted folder left behind


def test_archive_of_something_else(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("not cifar")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "other", arcname="other")
    with pytest.raises(DlbenchError, match="holds no cifar-10-batches-bin/ folder"):
        CIFAR10DataModule(root=str(tmp_path)).load()


def test_offline_without_data_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    with pytest.raises(DlbenchError, match=r"Put cifar-10-binary\.tar\.gz in .*cifar-10-binary\.tar\.gz"):
        CIFAR10DataModule(root=str(tmp_path)).load()


def test_attributes_before_setup():
    dm = CIFAR10DataModule(root="/nonexistent")
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 3, 32)
    assert dm.class_names[0] == "airplane" and len(dm.class_names) == 10
