"""In-memory image classification data: every split a uint8 tensor held on the training device.

:class:`ImageDataModule` does the common part (validation split, normalisation, augmentation, batching on the
device); a dataset only says how to load its train and test images. Images are ``(N, C, H, W)`` uint8, labels
``(N,)`` int64; batches are ``(float images normalised per channel, labels)``.
"""

from __future__ import annotations

import lightning as L
import torch

from dlbench.data.batches import tensor_loader


def augment(x: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (reflect-pad then crop) and optional horizontal flips, applied
    per batch on the batch's device: no per-sample Python."""
    n, _, h, w = x.shape
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
        x = padded.gather(2, rows.expand(n, x.shape[1], h, padded.shape[3]))
        x = x.gather(3, cols.expand(n, x.shape[1], h, w))
    if flip:
        mask = torch.rand(n, device=x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


class ImageDataModule(L.LightningDataModule):
    """Base for image classification sets that fit in memory. Subclasses implement :meth:`load`."""

    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28

    def __init__(self, batch_size: int = 128, val_fraction: float = 0.1, augment: bool = False,
                 flip: bool = False, seed: int = 0) -> None:
        """
        Args:
            batch_size: Images per training batch.
            val_fraction: Fraction of the training images held out for validation.
            augment: Random translations of up to 2 pixels (1 on images under 16 pixels) during training.
            flip: Random horizontal flips during training (off for digits, where a flip changes the class).
            seed: Seed of the train/validation split, kept apart from the training seed so that runs with
                different training seeds are validated on the same images.
        """
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self._loaded = False

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``train_x, train_y, test_x, test_y`` (uint8 NCHW images, int64 labels)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._loaded:
            return
        train_x, train_y, test_x, test_y = self.load()
        g = torch.Generator().manual_seed(self.hparams.seed)
        order = torch.randperm(len(train_x), generator=g)
        n_val = max(1, int(len(train_x) * self.hparams.val_fraction))
        val_idx, train_idx = order[:n_val], order[n_val:]
        # Per-channel statistics of the training part only.
        train_float = train_x[train_idx].float()
        self.mean = train_float.mean(dim=(0, 2, 3), keepdim=True)
        self.std = train_float.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        self.splits = {
            "train": (train_x[train_idx], train_y[train_idx]),
            "val": (train_x[val_idx], train_y[val_idx]),
            "test": (test_x, test_y),
        }
        self._loaded = True

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean.to(x.device)) / self.std.to(x.device)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if x.dtype == torch.uint8:
            trainer = self._trainer
            training = trainer is not None and trainer.training
            if training and (self.hparams.augment or self.hparams.flip):
                x = augment(x, pad=(1 if self.image_size < 16 else 2) if self.hparams.augment else 0,
                            flip=self.hparams.flip)
            x = self.normalize(x)
        return x, y

    def _loader(self, split: str, shuffle: bool):
        x, y = self.splits[split]
        size = self.hparams.batch_size if shuffle else max(self.hparams.batch_size, 1024)
        return tensor_loader(self, x, y, batch_size=size, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("test", shuffle=False)


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled 8x8 digits (1,797 images), split 80/20 into train and test with a fixed seed."""

    num_classes, in_channels, image_size = 10, 1, 8

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.1, augment: bool = False,
                 flip: bool = False, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, augment=augment, flip=flip, seed=seed)

    def load(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixel values are 0..16; scale to 0..255 so every image set shares the uint8 convention.
        x = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
        y = torch.from_numpy(digits.target).long()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
        n_test = len(x) // 5
        test, train = order[:n_test], order[n_test:]
        return x[train], y[train], x[test], y[test]
