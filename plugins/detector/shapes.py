"""Generated detection images: coloured circles, squares and triangles on noisy backgrounds, with exact boxes.

No real detection data ships offline in any dlbench dependency, so the default data is generated. Every image has
a random background colour with a brightness gradient, one to ``max_objects`` shapes of random class, size (15-40%
of the image side), position and colour (kept apart from the background's), and Gaussian pixel noise over all of
it. Shapes never overlap: on a grid whose cells are at most 15% of the image side (8 pixels at 64x64), no two
objects then have their centres in the same cell, which a one-object-per-cell detector needs. One seed decides
everything.
"""

from __future__ import annotations

import numpy as np
import torch

CLASSES = ("circle", "square", "triangle")
MIN_SIZE, MAX_SIZE = 0.15, 0.40
NOISE_STD = 18.0


def _place(count: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Up to ``count`` non-overlapping squares ``(x1, y1, size)`` in the unit square (rejection sampling)."""
    placed: list[tuple[float, float, float]] = []
    for _ in range(50 * count):
        if len(placed) == count:
            break
        size = rng.uniform(MIN_SIZE, MAX_SIZE)
        x1, y1 = rng.uniform(0, 1 - size, 2)
        if all(x1 >= px + ps or px >= x1 + size or y1 >= py + ps or py >= y1 + size for px, py, ps in placed):
            placed.append((x1, y1, size))
    return placed


def _mask(shape: int, x1: float, y1: float, size: float, pixels: int) -> np.ndarray:
    """Pixels (by their centres) inside a shape whose box is ``(x1, y1, x1 + size, y1 + size)``, in unit coordinates."""
    centres = (np.arange(pixels) + 0.5) / pixels
    y, x = centres[:, None], centres[None, :]
    if CLASSES[shape] == "circle":
        r = size / 2
        return (x - x1 - r) ** 2 + (y - y1 - r) ** 2 <= r * r
    inside = (x >= x1) & (x <= x1 + size) & (y >= y1) & (y <= y1 + size)
    if CLASSES[shape] == "square":
        return inside
    # Triangle: apex at the top middle of the box, base along its bottom edge.
    return inside & (np.abs(x - x1 - size / 2) <= (y - y1) / 2)


def render(n: int, image_size: int, max_objects: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images: uint8 ``(n, 3, S, S)``, boxes ``(n, max_objects, 4)`` as ``(x1, y1, x2, y2)`` fractions of the
    image side, labels ``(n, max_objects)`` with -1 where an image has fewer objects."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    boxes = np.zeros((n, max_objects, 4), dtype=np.float32)
    labels = np.full((n, max_objects), -1, dtype=np.int64)
    ramp = np.linspace(-1, 1, image_size, dtype=np.float32)
    for i in range(n):
        background = rng.uniform(30, 225, 3).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        gradient = 25 * (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])
        image = background[:, None, None] + gradient[None]
        for k, (x1, y1, size) in enumerate(_place(int(rng.integers(1, max_objects + 1)), rng)):
            shape = int(rng.integers(len(CLASSES)))
            colour = rng.uniform(0, 255, 3)
            while np.abs(colour - background).mean() < 60:
                colour = rng.uniform(0, 255, 3)
            image = np.where(_mask(shape, x1, y1, size, image_size), colour[:, None, None], image)
            boxes[i, k] = (x1, y1, x1 + size, y1 + size)
            labels[i, k] = shape
        images[i] = image
    images += rng.normal(0, NOISE_STD, images.shape).astype(np.float32)
    pixels = torch.from_numpy(images.round().clip(0, 255).astype(np.uint8))
    return pixels, torch.from_numpy(boxes), torch.from_numpy(labels)
