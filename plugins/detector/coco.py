"""COCO-format detection data: an instances JSON (``images``, ``annotations``, ``categories``) and a folder of images.

Images are decoded with Pillow, letterboxed to ``image_size`` (scaled so that the longer side fits, centred on grey
padding, aspect ratio kept) and held in memory as uint8, so this suits small and medium sets (COCO 2017 val, 5,000
images, takes about 60 MB at 64x64). Boxes are converted from COCO's ``[x, y, width, height]`` in pixels to corners
scaled like their image. Crowd annotations (``iscrowd: 1``) are skipped, as COCO's own detection training does.
Category ids, which COCO numbers sparsely (1-90), become classes 0..C-1 in id order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from dlbench_plugins.detector.data import DetectionDataModule, Split

from dlbench import DlbenchError

PAD_VALUE = 114  # grey letterbox padding, as YOLO implementations use
BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image (COCO boxes carry float rounding) before it is an error


def read_annotations(path: str | Path) -> dict:
    """The parsed JSON of a COCO instances file, checked for the keys and types this loader relies on."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DlbenchError(f"COCO annotation file {path} does not exist. Pass an existing file with "
                           f"--data.annotations.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DlbenchError(f"COCO annotation file {path} is not valid JSON ({err}). Fix or re-download it.") from None
    problem = _structure_problem(data)
    if problem:
        raise DlbenchError(f"COCO annotation file {path} is malformed: {problem}. A COCO instances file holds lists "
                           f"'images' (id, file_name), 'annotations' (id, image_id, category_id, bbox) and "
                           f"'categories' (id, name).")
    return data


def _structure_problem(data) -> str | None:
    if not isinstance(data, dict):
        return "the top level is not an object"
    for key, fields in (("images", ("id", "file_name")), ("annotations", ("image_id", "category_id", "bbox")),
                        ("categories", ("id",))):
        items = data.get(key)
        if not isinstance(items, list):
            return f"'{key}' is missing or not a list"
        for i, item in enumerate(items):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                return f"{key}[{i}] has no {', '.join(repr(f) for f in missing)}"
    if not data["categories"]:
        return "'categories' is empty"
    return None


def categories(data: dict) -> tuple[dict[int, int], list[str]]:
    """COCO category id -> class index (in id order), and the class names."""
    cats = sorted(data["categories"], key=lambda c: c["id"])
    return {c["id"]: i for i, c in enumerate(cats)}, [str(c.get("name", c["id"])) for c in cats]


def letterbox(path: Path, image_size: int) -> tuple[np.ndarray, float, int, int, int, int]:
    """Decode ``path`` and fit it into an ``image_size`` square: (HWC uint8 array, scale, pad x, pad y, width,
    height of the original)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise DlbenchError(f"COCO image {path} does not exist. Check --data.images (the folder the 'file_name' "
                           f"entries are relative to).") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DlbenchError(f"COCO image {path} cannot be decoded ({err}). Replace the file or remove it and its "
                           f"annotations.") from None
    canvas, scale, px, py = letterbox_image(rgb, image_size)
    return canvas, scale, px, py, *rgb.size


def letterbox_image(rgb, image_size: int, pad_value: int = PAD_VALUE) -> tuple[np.ndarray, float, int, int]:
    """Fit an RGB Pillow image into an ``image_size`` square, scaled so that its longer side fits (bilinear) and
    centred on ``pad_value`` grey: (HWC uint8 array, scale, pad x, pad y). A point ``(x, y)`` of the image lands at
    ``(x * scale + pad x, y * scale + pad y)``."""
    from PIL import Image

    w, h = rgb.size
    scale = image_size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.full((image_size, image_size, 3), pad_value, dtype=np.uint8)
    px, py = (image_size - nw) // 2, (image_size - nh) // 2
    canvas[py:py + nh, px:px + nw] = np.asarray(rgb.resize((nw, nh), Image.BILINEAR))
    return canvas, scale, px, py


def _box(ann: dict, w: int, h: int, where: str) -> list[float]:
    bbox = ann["bbox"]
    ok = isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
    if not ok or not all(math.isfinite(v) for v in bbox):
        raise DlbenchError(f"{where}: bbox {bbox!r} is not four finite numbers [x, y, width, height].")
    x, y, bw, bh = bbox
    if bw <= 0 or bh <= 0:
        raise DlbenchError(f"{where}: bbox {bbox} has a width or height <= 0. Fix or remove the annotation.")
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + bw > w + t or y + bh > h + t:
        raise DlbenchError(f"{where}: bbox {bbox} lies outside the {w}x{h} image. Fix the annotation (COCO boxes "
                           f"are [x, y, width, height] in pixels from the top left corner).")
    return [max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh)]


def load_coco(data: dict, image_dir: Path, image_size: int, json_path: Path) -> Split:
    """Every image of ``data`` letterboxed, with its non-crowd boxes (fractions of the side) and class indices."""
    class_of, _ = categories(data)
    images = sorted(data["images"], key=lambda im: im["id"])
    index_of = {im["id"]: i for i, im in enumerate(images)}
    per_image: list[list[dict]] = [[] for _ in images]
    for k, ann in enumerate(data["annotations"]):
        where = f"{json_path}, annotation {ann.get('id', f'#{k}')}"
        if ann["image_id"] not in index_of:
            raise DlbenchError(f"{where}: image_id {ann['image_id']!r} is not among the file's images.")
        if ann["category_id"] not in class_of:
            raise DlbenchError(f"{where}: category_id {ann['category_id']!r} is not among the file's categories.")
        if not ann.get("iscrowd", 0):
            per_image[index_of[ann["image_id"]]].append(ann)
    most = max(1, max((len(a) for a in per_image), default=0))
    pixels = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    boxes = torch.zeros(len(images), most, 4)
    labels = torch.full((len(images), most), -1, dtype=torch.long)
    for i, (image, anns) in enumerate(zip(images, per_image, strict=True)):
        path = image_dir / image["file_name"]
        pixels[i], scale, px, py, w, h = letterbox(path, image_size)
        if (image.get("width", w), image.get("height", h)) != (w, h):
            raise DlbenchError(f"{json_path}: image {image['id']} ({path}) is {w}x{h} pixels but the file says "
                               f"{image.get('width')}x{image.get('height')}. Fix the annotation file.")
        for j, ann in enumerate(anns):
            x1, y1, x2, y2 = _box(ann, w, h, f"{json_path}, annotation {ann.get('id', '?')} of {path.name}")
            boxes[i, j] = torch.tensor([x1 * scale + px, y1 * scale + py, x2 * scale + px, y2 * scale + py])
            labels[i, j] = class_of[ann["category_id"]]
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), boxes / image_size, labels


def _subset(split: Split, idx: torch.Tensor) -> Split:
    return tuple(t[idx] for t in split)


class CocoDataModule(DetectionDataModule):
    """Detection data in the COCO format, from your own files. Without ``test_annotations``, the test and
    validation images are random fractions of ``annotations``' images (fixed by ``seed``)."""

    def __init__(self, annotations: str | None = None, images: str | None = None, test_annotations: str | None = None,
                 test_images: str | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 seed: int = 0, image_size: int = 64, flip: bool = False, batch_size: int = 32) -> None:
        """
        Args:
            annotations: COCO instances JSON of the training images (e.g. instances_train2017.json); required.
            images: Folder the 'file_name' entries are relative to; the JSON's folder when not given.
            test_annotations: COCO instances JSON of a separate test set (e.g. instances_val2017.json).
            test_images: Folder of the test images; the test JSON's folder when not given.
            val_fraction: Fraction of the training images held out for validation.
            test_fraction: Fraction of the images held out for testing when there is no test_annotations.
            seed: Seed of the random splits, kept apart from the training seed.
            image_size: Side of the square, letterboxed images, in pixels.
            flip: Random horizontal flips of training images (and their boxes).
            batch_size: Images per training batch.
        """
        held_out = val_fraction + (0 if test_annotations else test_fraction)
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and held_out < 1):
            raise ValueError(f"val_fraction and test_fraction must be in (0, 1) and leave images for training, got "
                             f"{val_fraction} and {test_fraction}")
        if annotations is None:
            raise DlbenchError("the coco dataset reads your own COCO-format files: give --data.annotations "
                               "PATH/instances.json (and --data.images FOLDER when the 'file_name' entries are not "
                               "relative to the JSON's folder).")
        super().__init__(image_size=image_size, flip=flip, batch_size=batch_size)
        # The categories are read now: the model's size depends on them before setup() decodes any image.
        self.coco = read_annotations(annotations)
        _, self.class_names = categories(self.coco)
        self.num_classes = len(self.class_names)
        self.test_coco = read_annotations(test_annotations) if test_annotations else None
        if self.test_coco is not None and categories(self.test_coco) != categories(self.coco):
            raise DlbenchError(f"COCO files {annotations} and {test_annotations} list different categories; train "
                               f"and test must share one category list.")

    def load(self) -> dict[str, Split]:
        h = self.hparams
        main_path = Path(h.annotations)
        everything = load_coco(self.coco, Path(h.images) if h.images else main_path.parent, h.image_size, main_path)
        n = len(everything[0])
        order = torch.randperm(n, generator=torch.Generator().manual_seed(h.seed))
        n_test = 0 if self.test_coco is not None else max(1, round(n * h.test_fraction))
        n_val = max(1, round(n * h.val_fraction))
        if n - n_test - n_val < 1:
            raise DlbenchError(f"{main_path} has {n} images, too few to split into training, validation and test "
                               f"images. Add images or lower --data.val_fraction / --data.test_fraction.")
        splits = {"test": _subset(everything, order[:n_test]), "val": _subset(everything, order[n_test:n_test + n_val]),
                  "train": _subset(everything, order[n_test + n_val:])}
        if self.test_coco is not None:
            test_path = Path(h.test_annotations)
            splits["test"] = load_coco(self.test_coco, Path(h.test_images) if h.test_images else test_path.parent,
                                       h.image_size, test_path)
        return splits
