"""In-memory object detection data: square uint8 images with their boxes and classes, batched on the device.

:class:`DetectionDataModule` does the common part (normalisation with training statistics, optional horizontal
flips, batching); a dataset only says how to load its splits. A split is three tensors: images ``(N, 3, S, S)``
uint8, boxes ``(N, M, 4)`` as ``(x1, y1, x2, y2)`` fractions of the image side, and labels ``(N, M)`` int64 with -1
padding the images that have fewer than ``M`` objects. Batches are ``(normalised float images, boxes, labels)``.
"""

from __future__ import annotations

import lightning as L
import torch
from dlbench_plugins.detector import shapes

from dlbench.data.batches import in_trainer_precision, tensor_loader

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def hflip(images: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror images and their boxes left to right (padding boxes stay zero-sized)."""
    flipped = torch.stack([1 - boxes[..., 2], boxes[..., 1], 1 - boxes[..., 0], boxes[..., 3]], dim=-1)
    return images.flip(-1), torch.where(boxes.any(-1, keepdim=True), flipped, boxes)


class DetectionDataModule(L.LightningDataModule):
    """Base for detection sets that fit in memory. Subclasses set ``num_classes`` and ``class_names`` in
    ``__init__`` and implement :meth:`load`."""

    def __init__(self, image_size: int = 64, flip: bool = False, batch_size: int = 32) -> None:
        """
        Args:
            image_size: Side of the square images, in pixels.
            flip: Random horizontal flips of training images (and their boxes).
            batch_size: Images per training batch.
        """
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        # Sizes the model receives through linked arguments (see dlbench.core.spec.DATA_KINDS).
        self.image_size = image_size
        self.num_classes = 1
        self.class_names: list[str] = []
        self.splits: dict[str, Split] = {}

    def load(self) -> dict[str, Split]:
        """``{"train" | "val" | "test": (images, boxes, labels)}`` as described in the module docstring."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.splits = self.load()
        train = self.splits["train"][0].float()
        self.mean = train.mean(dim=(0, 2, 3), keepdim=True)
        self.std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

    def predictor(self):
        """What ``dlbench predict`` and ``dlbench serve`` need: the image side, the training split's per-channel
        statistics and the class names (see :mod:`dlbench.data.predict`)."""
        from dlbench_plugins.detector.predict import DetectionPredictor

        self.setup("fit")
        return DetectionPredictor(self.image_size, self.mean.flatten().tolist(), self.std.flatten().tolist(),
                                  list(self.class_names))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 3 and batch[0].dtype == torch.uint8):
            return batch  # the model summary's example input, or a batch already prepared
        images, boxes, labels = batch
        trainer = self.trainer
        if self.hparams.flip and trainer is not None and trainer.training:
            mirrored, mirrored_boxes = hflip(images, boxes)
            pick = torch.rand(len(images), device=images.device) < 0.5
            images = torch.where(pick[:, None, None, None], mirrored, images)
            boxes = torch.where(pick[:, None, None], mirrored_boxes, boxes)
        images = (images.float() - self.mean.to(images.device)) / self.std.to(images.device)
        return in_trainer_precision(self, images), boxes, labels

    def _loader(self, split: str, shuffle: bool):
        size = self.hparams.batch_size if shuffle else max(self.hparams.batch_size, 256)
        return tensor_loader(self, *self.splits[split], batch_size=size, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("test", shuffle=False)


class ShapesDataModule(DetectionDataModule):
    """Generated images of coloured circles, squares and triangles with exact boxes (see
    ``dlbench_plugins.detector.shapes``); the default data of the ``detector`` plugin."""

    def __init__(self, num_train: int = 3000, num_val: int = 300, num_test: int = 300, max_objects: int = 4,
                 seed: int = 0, image_size: int = 64, flip: bool = False, batch_size: int = 32) -> None:
        """
        Args:
            num_train: Generated training images.
            num_val: Generated validation images.
            num_test: Generated test images.
            max_objects: Most shapes in one image (each image has 1 to max_objects).
            seed: Seed of the generator, kept apart from the training seed so that every run sees the same images.
            image_size: Side of the square images, in pixels.
            flip: Random horizontal flips of training images (and their boxes).
            batch_size: Images per training batch.
        """
        if min(num_train, num_val, num_test, max_objects) < 1:
            raise ValueError(f"num_train, num_val, num_test and max_objects must be >= 1, got {num_train}, "
                             f"{num_val}, {num_test}, {max_objects}")
        super().__init__(image_size=image_size, flip=flip, batch_size=batch_size)
        self.num_classes = len(shapes.CLASSES)
        self.class_names = list(shapes.CLASSES)

    def load(self) -> dict[str, Split]:
        h = self.hparams
        # One generator stream per split: changing num_train leaves the test images as they were.
        return {split: shapes.render(n, h.image_size, h.max_objects, seed=h.seed * 3 + i)
                for i, (split, n) in enumerate((("train", h.num_train), ("val", h.num_val), ("test", h.num_test)))}
