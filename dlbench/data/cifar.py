"""The *binary* release of CIFAR-10 (``cifar-10-binary.tar.gz``), read with numpy.

Each of ``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin`` is a run of 3073-byte records: one
label byte (0-9), then a 32x32 image as 1024 red, 1024 green and 1024 blue bytes, rows in order. The pickled
"python version" of the same data is deliberately not supported: unpickling a downloaded file can run any code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlbench.core.errors import DlbenchError

SIDE, CHANNELS, NUM_CLASSES = 32, 3, 10
RECORD = 1 + CHANNELS * SIDE * SIDE
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
FOLDER = "cifar-10-batches-bin"
"""The folder the official archive unpacks to."""
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_FIX = "Delete it (and the archive it came from) so that it is downloaded again, or replace it with an intact copy."


def parse_batch(data: bytes, path: str | Path = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Records of one batch file as ``(N, 3, 32, 32)`` uint8 images and ``(N,)`` int64 labels."""
    if not data:
        raise DlbenchError(f"CIFAR-10 batch {path} is empty. {_FIX}")
    if len(data) % RECORD:
        raise DlbenchError(f"CIFAR-10 batch {path} is {len(data)} bytes, not a whole number of {RECORD}-byte records "
                           f"(it is truncated or not a batch of the binary release). {_FIX}")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if (top := int(labels.max())) >= NUM_CLASSES:
        row = int(np.argmax(labels >= NUM_CLASSES))
        raise DlbenchError(f"CIFAR-10 batch {path}, record {row}: label {top} is not a class (0-9); the file is "
                           f"corrupt or not from the binary release of CIFAR-10. {_FIX}")
    images = records[:, 1:].copy().reshape(-1, CHANNELS, SIDE, SIDE)  # contiguous and writable
    return images, labels


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``*.bin`` batch file; see :func:`parse_batch`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DlbenchError(f"CIFAR-10 batch {path} is missing; the binary release holds {', '.join(TRAIN_FILES)} "
                           f"and {TEST_FILE} in one folder. Extract the whole archive again.") from None
    except OSError as err:
        raise DlbenchError(f"cannot read CIFAR-10 batch {path}: {err.strerror}. Check its permissions.") from None
    return parse_batch(data, path)


def read_folder(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The official split from a ``cifar-10-batches-bin`` folder: ``train_x, train_y, test_x, test_y`` with the
    five training batches concatenated in order."""
    folder = Path(folder)
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    test_x, test_y = read_batch(folder / TEST_FILE)
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test_x, test_y
