"""The IDX parser on small files in the real format, written here, and on damaged ones."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from dlbench.core.errors import DlbenchError
from dlbench.data.idx import parse_idx, read_idx, read_images_labels


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file as the format's specification lays it out: magic, big-endian dimensions, big-endian values."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, gzipped: bool = True) -> Path:
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = np.array([0, 3, 9, 1, 1, 2, 9], dtype=np.uint8)
    x_path = write(tmp_path / "images-idx3-ubyte.gz", idx_bytes(images, 0x08))
    y_path = write(tmp_path / "labels-idx1-ubyte.gz", idx_bytes(labels, 0x08))
    return images, labels, x_path, y_path


def test_gzipped_pair_round_trips(pair):
    images, labels, x_path, y_path = pair
    x, y = read_images_labels(x_path, y_path, num_classes=10)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert x.dtype == np.uint8 and y.dtype == np.int64


def test_plain_file_is_read_by_content_not_name(tmp_path):
    images = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / "looks-gzipped.gz", idx_bytes(images, 0x08), gzipped=False)
    np.testing.assert_array_equal(read_idx(path), images)


@pytest.mark.parametrize(("code", "dtype"), [(0x09, "i1"), (0x0B, "i2"), (0x0C, "i4"), (0x0D, "f4"), (0x0E, "f8")])
def test_every_dtype_code_reads_big_endian_values(code, dtype):
    values = np.array([[-3, 0, 1], [7, 100, -100]], dtype=dtype)
    got = parse_idx(idx_bytes(values, code))
    np.testing.assert_array_equal(got, values)
    assert got.dtype == np.dtype(dtype)
    assert got.dtype.isnative


def test_unknown_dtype_code(tmp_path):
    path = write(tmp_path / "f.gz", bytes([0, 0, 0x0A, 1]) + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DlbenchError, match=r"f\.gz.*unknown dtype code 0x0a"):
        read_idx(path)


def test_wrong_magic_names_file_and_fix(tmp_path):
    images = np.zeros((2, 2, 2), dtype=np.uint8)
    data = bytearray(idx_bytes(images, 0x08))
    data[0] = 0x50  # e.g. a PNG or an HTML error page saved under the IDX name
    path = write(tmp_path / "train-images-idx3-ubyte.gz", bytes(data))
    with pytest.raises(DlbenchError, match="wrong magic number") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "Delete it" in str(err.value)


def test_short_payload(tmp_path):
    images = np.ones((3, 4, 4), dtype=np.uint8)
    path = write(tmp_path / "short.gz", idx_bytes(images, 0x08)[:-5])
    with pytest.raises(DlbenchError, match=r"short\.gz.*truncated.*needs 48 bytes.*has 43"):
        read_idx(path)


def test_long_payload(tmp_path):
    path = write(tmp_path / "long.gz", idx_bytes(np.ones(4, dtype=np.uint8), 0x08) + b"\x00")
    with pytest.raises(DlbenchError, match="longer than declared"):
        read_idx(path)


def test_header_cut_inside_dimensions(tmp_path):
    path = write(tmp_path / "header.gz", bytes([0, 0, 8, 3]) + struct.pack(">I", 10))
    with pytest.raises(DlbenchError, match="ends inside the header"):
        read_idx(path)


def test_tiny_and_zero_dimension_files(tmp_path):
    with pytest.raises(DlbenchError, match="fewer than the 4-byte header"):
        read_idx(write(tmp_path / "tiny.gz", b"\x00\x00"))
    with pytest.raises(DlbenchError, match="0 dimensions"):
        read_idx(write(tmp_path / "zero.gz", bytes([0, 0, 8, 0])))


def test_truncated_gzip_names_file(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(50, 8, 8), dtype=np.uint8)
    whole = gzip.compress(idx_bytes(images, 0x08))
    path = tmp_path / "cut.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DlbenchError, match=r"cut\.gz is a damaged gzip file.*cut short"):
        read_idx(path)


def test_corrupt_gzip_crc(tmp_path):
    data = bytearray(gzip.compress(idx_bytes(np.ones((3, 2, 2), dtype=np.uint8), 0x08)))
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DlbenchError, match="damaged gzip"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DlbenchError, match="does not exist.*--data.root"):
        read_idx(tmp_path / "nope.gz")


def test_expected_shape_and_dtype(pair):
    _, _, x_path, y_path = pair
    with pytest.raises(DlbenchError, match="expected 1 dimensions"):
        read_idx(x_path, ndim=1)
    with pytest.raises(DlbenchError, match="expected int32 values"):
        read_idx(y_path, dtype=">i4")


def test_image_and_label_counts_must_agree(tmp_path, pair):
    _, _, x_path, _ = pair
    y_path = write(tmp_path / "six-labels.gz", idx_bytes(np.zeros(6, dtype=np.uint8), 0x08))
    with pytest.raises(DlbenchError, match="holds 7 images but .* holds 6 labels"):
        read_images_labels(x_path, y_path, num_classes=10)


def test_labels_must_be_classes(pair):
    _, _, x_path, y_path = pair
    with pytest.raises(DlbenchError, match="label 9, but this dataset has 5 classes"):
        read_images_labels(x_path, y_path, num_classes=5)


def test_labels_file_given_as_images(pair):
    _, _, x_path, y_path = pair
    with pytest.raises(DlbenchError, match="expected 3 dimensions"):
        read_images_labels(y_path, x_path, num_classes=10)


@pytest.mark.skipif(not os.environ.get("DLBENCH_TEST_DATA"), reason="DLBENCH_TEST_DATA is not set")
def test_real_mnist_test_set():
    folder = Path(os.environ["DLBENCH_TEST_DATA"]) / "mnist"
    x, y = read_images_labels(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz", 10)
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert np.bincount(y, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
