"""Prediction for every model on image data: a user's PNG/JPEG files (any size and mode) become the normalised
``(C, S, S)`` tensors the run trained on, and the outputs come back as class names with probabilities, or as PNG
files for models that make images (reconstructions, samples)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dlbench_plugins.images.folder import decode
from PIL import Image

from dlbench.data.predict import Example, InputError, Predictor, Sink, Source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def class_rows(probs: torch.Tensor, names: Sequence[str], top_k: int) -> list[dict[str, Any]]:
    """``prediction`` (a class name), its ``probability``, and the next ``top_k - 1`` classes with theirs."""
    k = max(1, min(top_k, probs.shape[1]))
    values, indices = probs.topk(k, dim=1)
    rows = []
    for vals, idx in zip(values.tolist(), indices.tolist(), strict=True):
        row: dict[str, Any] = {"prediction": _name(names, idx[0]), "probability": round(vals[0], 6)}
        for rank in range(1, k):
            row[f"top{rank + 1}"] = _name(names, idx[rank])
            row[f"top{rank + 1}_probability"] = round(vals[rank], 6)
        rows.append(row)
    return rows


def _name(names: Sequence[str], index: int) -> str:
    return names[index] if index < len(names) else str(index)


class ImagePredictor(Predictor):
    """Images as the run's data module prepared them: grey or RGB, squashed to ``size`` x ``size`` (bilinear), uint8,
    then normalised by the per-channel mean and standard deviation of the run's training split."""

    inputs = "image"
    extensions = IMAGE_SUFFIXES

    def __init__(self, size: int, channels: int, mean: Sequence[float], std: Sequence[float],
                 class_names: Sequence[str] = ()) -> None:
        self.size, self.channels = int(size), int(channels)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        self.class_names = tuple(class_names)

    def state(self) -> dict[str, Any]:
        return {"size": self.size, "channels": self.channels, "mean": self.mean.flatten().tolist(),
                "std": self.std.flatten().tolist(), "class_names": list(self.class_names)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ImagePredictor:
        return cls(state["size"], state["channels"], state["mean"], state["std"], state.get("class_names", ()))

    def describe(self) -> str:
        mode = "grey" if self.channels == 1 else "RGB"
        return f"images (PNG, JPEG, ...; read as {mode}, resized to {self.size}x{self.size})"

    def pixels(self, source: Source) -> torch.Tensor:
        """The uint8 ``(C, S, S)`` image of a source; InputError for a file that is not an image."""
        try:
            array = decode(source.stream(), self.size, self.channels)
        except InputError:
            raise
        except Exception:
            raise InputError(f"{source.name}: not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP). Give "
                             f"an image file, or remove it from the inputs.") from None
        return torch.from_numpy(np.array(array, dtype=np.uint8))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() - self.mean) / self.std

    def denormalize(self, images: torch.Tensor) -> np.ndarray:
        """``(N, C, S, S)`` normalised images back to ``(N, S, S[, C])`` uint8 arrays for PNG files."""
        pixels = (images.float() * self.std + self.mean).clamp(0, 255).round().to(torch.uint8)
        array = pixels.permute(0, 2, 3, 1).numpy()
        return array[..., 0] if self.channels == 1 else array

    def read(self, source: Source, options: dict[str, Any]) -> list[Example]:
        return [Example(source.name, (self.normalize(self.pixels(source)),))]

    def export_module(self, model) -> torch.nn.Module:
        return RawPixels(model, self.mean, self.std)

    def raw_inputs(self, inputs: tuple) -> tuple:
        return (inputs[0].float() * self.std + self.mean, *inputs[1:])

    def write_inputs(self, batch, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, array in enumerate(self.denormalize(batch[0])):
            paths.append(folder / f"{i:04d}.png")
            Image.fromarray(array).save(paths[-1])
        return paths

    def generate(self, options: dict[str, Any]) -> list[Example]:
        n = int(options.get("num_samples") or 16)
        if n < 1:
            raise InputError(f"--num_samples must be >= 1, got {n}")
        seed = int(options.get("seed") or 0)
        return [Example(f"sample_{i}", (torch.tensor(seed * 1_000_003 + i),)) for i in range(n)]

    def rows(self, outputs: dict[str, Any], examples: Sequence[Example], options: dict[str, Any],
             sink: Sink) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [{"input": e.key} for e in examples]
        if "probs" in outputs:
            for row, extra in zip(rows, class_rows(outputs["probs"], self.class_names, int(options.get("top_k") or 3)),
                                  strict=True):
                row.update(extra)
        if "images" in outputs:
            arrays = self.denormalize(outputs["images"])
            for row, array, example in zip(rows, arrays, examples, strict=True):
                row["image"] = sink.image(f"{file_stem(example.key)}", array)
        for key, values in outputs.items():  # per-sample numbers a model adds (a reconstruction error, ...)
            if key not in ("probs", "images") and isinstance(values, torch.Tensor) and values.dim() == 1:
                for row, value in zip(rows, values.tolist(), strict=True):
                    row[key] = round(float(value), 6)
        return rows


class RawPixels(torch.nn.Module):
    """A model that takes pixel values (0-255, float, ``(N, C, S, S)``) and normalises them itself, as the run's
    data module did: what ``dlbench export`` writes, so the exported file takes images as they are."""

    def __init__(self, model: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).clone())

    def forward(self, pixels: torch.Tensor, *rest):
        return self.model((pixels - self.mean) / self.std, *rest)


def file_stem(key: str) -> str:
    name = key.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name
