"""The IDX format of MNIST and Fashion-MNIST, read with numpy and validated field by field.

An IDX file is two zero bytes, a dtype code, the number of dimensions, one big-endian uint32 per dimension, then the
values in C order, big-endian. Files may be gzipped (the published form) or plain; the gzip magic decides, not the
name. Every departure from the format ends in a :class:`~dlbench.core.errors.DlbenchError` that names the file.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from dlbench.core.errors import DlbenchError

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX dtype codes and the numpy dtypes they denote."""

_GZIP_MAGIC = b"\x1f\x8b"
_FIX = "Delete it so that it is downloaded again, or replace it with an intact copy of the original file."


def _bad(path: Path, problem: str) -> DlbenchError:
    return DlbenchError(f"{path} is not a valid IDX file: {problem}. {_FIX}")


def read_bytes(path: str | Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DlbenchError(f"{path} does not exist. Give the folder holding it with --data.root.") from None
    except OSError as err:
        raise DlbenchError(f"cannot read {path}: {err.strerror}. Check the path and its permissions.") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:  # truncated stream, bad CRC or length, corrupt deflate data
        raise DlbenchError(f"{path} is a damaged gzip file ({err}); it was probably cut short while downloading. "
                           f"{_FIX}") from None


def parse_idx(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """The array an IDX byte string holds, in native byte order; ``path`` only names it in error messages."""
    path = Path(path)
    if len(data) < 4:
        raise _bad(path, f"it holds {len(data)} bytes, fewer than the 4-byte header")
    if data[0] != 0 or data[1] != 0:
        raise _bad(path, f"wrong magic number 0x{data[:4].hex()} (an IDX file starts with two zero bytes)")
    code, ndim = data[2], data[3]
    if code not in DTYPES:
        raise _bad(path, f"unknown dtype code 0x{code:02x} (known: {', '.join(f'0x{c:02x}' for c in DTYPES)})")
    if ndim == 0:
        raise _bad(path, "it declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _bad(path, f"it declares {ndim} dimensions but ends inside the header after {len(data)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        what = "truncated" if actual < expected else "longer than declared"
        raise _bad(path, f"{what}: shape {shape} of {dtype.name} needs {expected} bytes of data, the file has "
                         f"{actual}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def read_idx(path: str | Path, ndim: int | None = None, dtype: str | np.dtype | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not), checking its number of dimensions and dtype when they are given."""
    path = Path(path)
    array = parse_idx(read_bytes(path), path)
    if ndim is not None and array.ndim != ndim:
        raise _bad(path, f"expected {ndim} dimensions, found shape {array.shape}")
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise _bad(path, f"expected {np.dtype(dtype).name} values, found {array.dtype.name}")
    return array


def read_images_labels(images: str | Path, labels: str | Path,
                       num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """An image file ``(N, H, W)`` of uint8 and its label file ``(N,)`` of uint8 with values below ``num_classes``:
    the MNIST layout. Returns ``(N, H, W)`` uint8 images and ``(N,)`` int64 labels."""
    x = read_idx(images, ndim=3, dtype="u1")
    y = read_idx(labels, ndim=1, dtype="u1")
    if len(x) != len(y):
        raise DlbenchError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels; the two files do "
                           f"not belong together. Replace them with a matching pair of original files.")
    if len(y) and (top := int(y.max())) >= num_classes:
        raise DlbenchError(f"{labels} holds label {top}, but this dataset has {num_classes} classes (0 to "
                           f"{num_classes - 1}). Check that the file belongs to this dataset.")
    return x, y.astype(np.int64)
