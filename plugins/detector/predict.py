"""Prediction on a user's images for the detector: each image, of any size, is letterboxed into the run's square
(scaled so that its longer side fits, centred on grey, as the COCO data is; a square image is simply resized) and
normalised with the training split's statistics. Detections come back in the input image's own pixels: one row an
image with its ``boxes`` (class name, score, corners) above a score threshold, and a PNG of the image with them
drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dlbench_plugins.detector.coco import PAD_VALUE, letterbox_image
from dlbench_plugins.images.predict import IMAGE_SUFFIXES, file_stem

from dlbench.data.predict import Example, InputError, Predictor, Sink, Source

SCORE_THRESHOLD = 0.5
"""Detections scoring below this are left out of the rows (``score_threshold`` in the options overrides it)."""
COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))


def decode_rgb(source: Source):
    """The source as an RGB Pillow image; InputError naming it when Pillow cannot read it."""
    from PIL import Image

    try:
        with Image.open(source.stream()) as image:
            return image.convert("RGB")
    except InputError:
        raise
    except Exception:  # Pillow raises many kinds for files that are not images, and DecompressionBombError
        raise InputError(f"{source.name}: not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP). Give an "
                         f"image file, or remove it from the inputs.") from None


class DetectionPredictor(Predictor):
    """Images letterboxed to the run's square and normalised per channel; see the module docstring."""

    inputs = "image"
    extensions = IMAGE_SUFFIXES

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], class_names: Sequence[str] = (),
                 pad_value: int = PAD_VALUE) -> None:
        self.image_size, self.pad_value = int(image_size), int(pad_value)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        self.class_names = tuple(class_names)

    def state(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
                "class_names": list(self.class_names), "pad_value": self.pad_value}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DetectionPredictor:
        return cls(**state)

    def describe(self) -> str:
        return f"images (PNG, JPEG, ...; any size, letterboxed to {self.image_size}x{self.image_size})"

    def tensor(self, rgb) -> tuple[torch.Tensor, float, int, int]:
        """The normalised ``(3, S, S)`` input of an RGB Pillow image, with the letterbox's scale and padding."""
        canvas, scale, px, py = letterbox_image(rgb, self.image_size, self.pad_value)
        pixels = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))
        return (pixels.float() - self.mean) / self.std, scale, px, py

    def write_inputs(self, batch, folder: Path) -> list[Path]:
        """The test batch's (square, letterboxed) images as PNG files: read back, they letterbox to themselves."""
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        pixels = (batch[0].float().cpu() * self.std + self.mean).clamp(0, 255).round().to(torch.uint8)
        paths = []
        for i, image in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
            paths.append(folder / f"{i:04d}.png")
            Image.fromarray(image).save(paths[-1])
        return paths

    def read(self, source: Source, options: dict[str, Any]) -> list[Example]:
        rgb = decode_rgb(source)
        x, scale, px, py = self.tensor(rgb)
        # The source, not the decoded image, is kept for drawing: the rows decode it again, so a folder of large
        # photos is not held in memory all at once.
        return [Example(source.name, (x,), {"size": rgb.size, "scale": scale, "pad": (px, py), "source": source})]

    def detections(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, extra: dict[str, Any],
                   threshold: float, top_k: int | None) -> list[dict[str, Any]]:
        """One image's detections at or above ``threshold``, best first, at most ``top_k``, with their boxes in the
        input image's pixels."""
        w, h = extra["size"]
        px, py = extra["pad"]
        keep = (labels >= 0) & (scores >= threshold)
        order = scores[keep].argsort(descending=True)
        boxes, scores, labels = boxes[keep][order], scores[keep][order], labels[keep][order]
        if top_k is not None:
            boxes, scores, labels = boxes[:top_k], scores[:top_k], labels[:top_k]
        corners = (boxes - torch.tensor([px, py, px, py], dtype=boxes.dtype)) / extra["scale"]
        corners = torch.stack([corners[:, 0].clamp(0, w), corners[:, 1].clamp(0, h), corners[:, 2].clamp(0, w),
                               corners[:, 3].clamp(0, h)], dim=1)
        return [{"label": self.class_names[c] if c < len(self.class_names) else str(c), "score": round(s, 4),
                 "box": [round(v, 1) for v in box]}
                for box, s, c in zip(corners.tolist(), scores.tolist(), labels.tolist(), strict=True)]

    def draw(self, source: Source, found: list[dict[str, Any]]) -> np.ndarray:
        """The input image with its detections drawn: a box and "label score" in a colour per class."""
        from PIL import ImageDraw

        image = decode_rgb(source)
        pen = ImageDraw.Draw(image)
        width = max(1, round(min(image.size) / 160))
        for det in found:
            index = self.class_names.index(det["label"]) if det["label"] in self.class_names else 0
            colour = COLOURS[index % len(COLOURS)]
            x1, y1, x2, y2 = det["box"]
            pen.rectangle((x1, y1, x2, y2), outline=colour, width=width)
            text = f"{det['label']} {det['score']:.2f}"
            left, top, right, bottom = pen.textbbox((x1, y1), text)
            up = max(0.0, y1 - (bottom - top) - 2)
            pen.rectangle((x1, up, x1 + right - left + 2, up + bottom - top + 2), fill=colour)
            pen.text((x1 + 1, up), text, fill=(255, 255, 255))
        return np.asarray(image)

    def rows(self, outputs: dict[str, Any], examples: Sequence[Example], options: dict[str, Any],
             sink: Sink) -> list[dict[str, Any]]:
        threshold = float(options.get("score_threshold", SCORE_THRESHOLD))
        top_k = options.get("top_k")
        top_k = None if top_k is None else max(0, int(top_k))
        rows = []
        for i, example in enumerate(examples):
            found = self.detections(outputs["boxes"][i].float(), outputs["scores"][i].float(), outputs["labels"][i],
                                    example.extra, threshold, top_k)
            w, h = example.extra["size"]
            row: dict[str, Any] = {"input": example.key, "width": w, "height": h, "detections": len(found),
                                   "boxes": found}
            if sink.folder is not None:
                row["image"] = sink.image(f"{file_stem(example.key)}_boxes", self.draw(example.extra["source"], found))
            rows.append(row)
        return rows
