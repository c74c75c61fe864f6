"""A folder of images with one sub-folder per class, decoded once with Pillow into a uint8 tensor.

Decoding is the one place where image data needs per-sample work; it runs once, in a few threads (Pillow releases
the GIL while it decodes and resizes), and the result is held in memory like every other image set.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dlbench import DlbenchError

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"})
"""File name endings read as images (case-insensitive); other files are ignored."""
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_LAYOUT = "The folder must hold one sub-folder per class, each with that class's images (e.g. ROOT/benign/*.png, " \
          "ROOT/malignant/*.png)."


@dataclass(frozen=True)
class FolderListing:
    """The classes (sub-folder names, sorted) and every image file with its class index."""

    classes: tuple[str, ...]
    files: tuple[Path, ...]
    labels: tuple[int, ...]


def _visible(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def scan(root: str | Path | None) -> FolderListing:
    """List ``root``'s class folders and images; anything that cannot be trained on ends in a DlbenchError."""
    if root is None:
        raise DlbenchError(f"image_folder needs the folder of images: pass --data.root DIR. {_LAYOUT}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DlbenchError(f"image folder {root} does not exist or is not a folder. Pass an existing folder with "
                           f"--data.root. {_LAYOUT}")
    with os.scandir(root) as it:
        class_dirs = [e for e in _visible(list(it)) if e.is_dir()]
    classes, files, labels = [], [], []
    for entry in class_dirs:
        with os.scandir(entry.path) as it:
            images = [Path(e.path) for e in _visible(list(it)) if e.is_file() and Path(e.name).suffix.lower() in
                      SUFFIXES]
        if not images:
            raise DlbenchError(f"class folder {entry.path} holds no images (files ending in "
                               f"{', '.join(sorted(SUFFIXES))}). Add images or remove the folder.")
        labels += [len(classes)] * len(images)
        classes.append(entry.name)
        files += images
    if len(classes) < 2:
        found = f"only one class folder ({classes[0]!r})" if classes else "no class folders"
        raise DlbenchError(f"image folder {root} has {found}; classification needs at least two. {_LAYOUT}")
    return FolderListing(tuple(classes), tuple(files), tuple(labels))


def decode(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as a ``(channels, size, size)`` uint8 array: converted to grey or RGB and resized (squashed, not
    cropped) to ``size`` x ``size``. 16-bit and float images (common in medical imaging) are scaled by their own
    minimum and maximum, since their value range varies from scanner to scanner."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as img:
            img.draft(mode, (size, size))  # JPEG: decode at a reduced scale when the image is much larger
            if img.mode in _HIGH_DEPTH_MODES:
                values = np.asarray(img, dtype=np.float32)
                lo, hi = float(values.min()), float(values.max())
                scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
                img = Image.fromarray(scaled.round().astype(np.uint8))
            img = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DlbenchError(f"cannot read image {path}: {err}. Remove or replace the file.") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def load_images(files: tuple[Path, ...], size: int, channels: int, threads: int | None = None) -> torch.Tensor:
    """Decode ``files`` into one ``(N, channels, size, size)`` uint8 tensor."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DlbenchError("image_folder decodes images with Pillow, which is not installed: pip install pillow") \
            from None
    out = np.empty((len(files), channels, size, size), dtype=np.uint8)
    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i, array in enumerate(pool.map(lambda p: decode(p, size, channels), files)):
            out[i] = array
    return torch.from_numpy(out)
