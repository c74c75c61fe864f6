"""In-memory image classification data: every split a uint8 tensor held on the training device.

:class:`ImageDataModule` does the common part (stratified validation split, normalisation, augmentation, batching on
the device); a dataset only says how to load its train and test images. Images are ``(N, C, H, W)`` uint8, labels
``(N,)`` int64; batches are ``(float images normalised per channel, labels)``.

The standard sets (MNIST, Fashion-MNIST, CIFAR-10) are read from a local copy (``--data.root DIR``) or downloaded
once from their publishers with checksums into ``$DLBENCH_DATA_DIR`` (default ``~/.cache/dlbench``).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from dlbench_plugins.images.folder import load_images, scan

from dlbench import DlbenchError
from dlbench.data import cifar
from dlbench.data.batches import in_trainer_precision, tensor_loader
from dlbench.data.download import Remote, data_root, extract, fetch
from dlbench.data.idx import read_images_labels

_SPLIT_ARGS = """
            batch_size: Images per training batch.
            val_fraction: Fraction of the training images held out for validation (stratified by class).
            augment: Random translations of up to 1/8 of the image side (3 pixels on 28x28, 4 on 32x32) in training.
            flip: Random horizontal flips during training (off for digits, where a flip changes the class).
            vflip: Random vertical flips during training (for images with no natural up, e.g. microscopy).
            rotate: Random rotations by up to this many degrees during training; 0 turns them off.
            seed: Seed of the train/validation split, kept apart from the training seed so that runs with
                different training seeds are validated on the same images."""


def _args_doc(*lines: str) -> str:
    """An ``Args:`` docstring: a datamodule's own arguments followed by the common ones (``dlbench info`` and the
    CLI help read each class's own docstring)."""
    own = "".join(f"\n            {line}" for line in lines)
    return f"\n        Args:{own}{_SPLIT_ARGS}\n        "


def augment(x: torch.Tensor, pad: int, flip: bool, vflip: bool = False, degrees: float = 0.0) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (reflect-pad then crop), optional horizontal and vertical flips and
    rotations by up to ``degrees``, applied per batch on the batch's device: no per-sample Python. Returns uint8
    images when there is no rotation, float images (still 0-255) otherwise."""
    n, _, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
        x = padded.gather(2, rows.expand(n, x.shape[1], h, padded.shape[3]))
        x = x.gather(3, cols.expand(n, x.shape[1], h, w))
    for on, dim in ((flip, 3), (vflip, 2)):
        if on:
            mask = torch.rand(n, device=x.device) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(dim), x)
    if degrees > 0:
        x = rotate(x, degrees)
    return x


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate each image by its own random angle in [-degrees, degrees] (bilinear, edges repeated outwards)."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(degrees)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(held_out, rest)``, each in increasing order: about ``fraction`` of every class held out, at least
    one image of each class that has two or more, never a class's last one. (numpy: torch's CPU sort is ~100x
    slower here.)"""
    y = labels.numpy()
    order = np.random.default_rng(seed).permutation(len(y))
    order = order[np.argsort(y[order], kind="stable")]  # grouped by class, random within each class
    counts = np.bincount(y)
    rank = np.arange(len(y)) - np.repeat(np.cumsum(counts) - counts, counts)
    take = np.minimum(np.maximum(np.rint(counts * fraction), 1), counts - 1)
    held = rank < np.repeat(take, counts)
    return torch.from_numpy(np.sort(order[held])), torch.from_numpy(np.sort(order[~held]))


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images ``(N, C, H, W)``, shaped ``(1, C, 1, 1)``: exact,
    from a 256-bin histogram per channel, so no float copy of the whole set is made."""
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        n = counts.sum()
        mean = (counts * values).sum() / n
        means.append(mean)
        stds.append(((counts * (values - mean) ** 2).sum() / (n - 1).clamp(min=1)).sqrt())
    shape = (1, x.shape[1], 1, 1)
    return torch.stack(means).float().view(shape), torch.stack(stds).float().clamp_min(1e-6).view(shape)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class ImageDataModule(L.LightningDataModule):
    """Base for image classification sets that fit in memory. Subclasses implement :meth:`load`."""

    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28
    class_names: tuple[str, ...] = ()
    """Names of the classes by label, for pictures and reports; empty when the data has none."""

    def __init__(self, batch_size: int = 128, val_fraction: float = 0.1, augment: bool = False,
                 flip: bool = False, vflip: bool = False, rotate: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if not 0 <= rotate <= 180:
            raise ValueError(f"rotate must be in [0, 180] degrees, got {rotate}")
        self.save_hyperparameters()
        self._loaded = False

    __init__.__doc__ = _args_doc()

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``train_x, train_y, test_x, test_y`` (uint8 NCHW images, int64 labels)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._loaded:
            return
        train_x, train_y, test_x, test_y = self.load()
        val_idx, train_idx = stratified_split(train_y, self.hparams.val_fraction, self.hparams.seed)
        if len(val_idx) == 0:
            raise DlbenchError(f"{len(train_x)} training images are too few to hold out a validation set "
                               f"(every class needs at least two). Add images or lower --data.val_fraction.")
        self.splits = {
            "train": (train_x[train_idx], train_y[train_idx]),
            "val": (train_x[val_idx], train_y[val_idx]),
            "test": (test_x, test_y),
        }
        self.mean, self.std = channel_stats(self.splits["train"][0])  # the training part only
        self._loaded = True

    def predictor(self):
        """What ``dlbench predict`` and ``dlbench serve`` need: size, channels, the training split's statistics and
        the class names (see :mod:`dlbench.data.predict`)."""
        from dlbench_plugins.images.predict import ImagePredictor

        self.setup("fit")
        return ImagePredictor(self.image_size, self.in_channels, self.mean.flatten().tolist(),
                              self.std.flatten().tolist(), self.class_names)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.device != x.device:  # moved once, not copied to the device for every batch
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return (x.float() - self.mean) / self.std

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, torch.Tensor):  # a model's example_input_array on its way to the model summary
            return batch
        x, y = batch
        if x.dtype == torch.uint8:
            trainer = self.trainer
            hp = self.hparams
            if trainer is not None and trainer.training and (hp.augment or hp.flip or hp.vflip or hp.rotate):
                x = augment(x, pad=max(1, self.image_size // 8) if hp.augment else 0, flip=hp.flip, vflip=hp.vflip,
                            degrees=hp.rotate)
            x = in_trainer_precision(self, self.normalize(x))
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
    class_names = tuple(str(d) for d in range(10))

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.1, augment: bool = False,
                 flip: bool = False, vflip: bool = False, rotate: float = 0.0, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, augment=augment, flip=flip, vflip=vflip,
                         rotate=rotate, seed=seed)

    __init__.__doc__ = _args_doc()

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


def _idx_remotes(mirrors: tuple[str, ...], md5: dict[str, str]) -> dict[str, Remote]:
    return {name: Remote(name, tuple(m + name for m in mirrors), md5=digest) for name, digest in md5.items()}


class MNISTDataModule(ImageDataModule):
    """MNIST: 28x28 grey hand-written digits, the official 60,000 training and 10,000 test images, from the four
    gzipped IDX files (a local copy, or downloaded once and checked against the official md5s)."""

    num_classes, in_channels, image_size = 10, 1, 28
    class_names = tuple(str(d) for d in range(10))
    dataset = "mnist"
    """Name of the cache folder under the data directory, and of the data in messages."""
    remotes = _idx_remotes(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"})

    def __init__(self, root: str | None = None, batch_size: int = 128, val_fraction: float = 0.1,
                 augment: bool = False, flip: bool = False, vflip: bool = False, rotate: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, augment=augment, flip=flip, vflip=vflip,
                         rotate=rotate, seed=seed)
        self.root = root

    __init__.__doc__ = _args_doc(
        "root: Folder holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz",
        "    and t10k-labels-idx1-ubyte.gz (gzipped or not); downloaded into $DLBENCH_DATA_DIR/mnist (or",
        "    /fashion_mnist; default ~/.cache/dlbench) when not given.")

    def _path(self, filename: str) -> Path:
        """A local copy of ``filename`` (gzipped, or unpacked without the .gz), else the downloaded file."""
        plain = data_root(self.dataset, self.root) / filename.removesuffix(".gz")
        if not (plain.parent / filename).is_file() and plain.is_file():
            return plain
        return fetch(self.dataset, self.remotes[filename], self.root)

    def prepare_data(self) -> None:
        for filename in self.remotes:
            self._path(filename)

    def _split(self, images: str, labels: str) -> tuple[torch.Tensor, torch.Tensor]:
        images_path, labels_path = self._path(images), self._path(labels)
        x, y = read_images_labels(images_path, labels_path, self.num_classes)
        if x.shape[1:] != (self.image_size, self.image_size):
            raise DlbenchError(f"{images_path} holds {x.shape[1]}x{x.shape[2]} images; {self.dataset} images are "
                               f"{self.image_size}x{self.image_size}. Check that --data.root holds the right files.")
        return _tensor(x).unsqueeze(1), torch.from_numpy(y)

    def load(self):
        train_x, train_y = self._split("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
        test_x, test_y = self._split("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
        return train_x, train_y, test_x, test_y


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: 28x28 grey Zalando article images in 10 classes, 60,000 for training and 10,000 for testing,
    in MNIST's IDX format and file names (a local copy, or downloaded once and checked against the official md5s)."""

    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
    dataset = "fashion_mnist"
    remotes = _idx_remotes(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"})


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: 32x32 colour images in 10 classes, the official 50,000 training and 10,000 test images, from the
    binary release (``cifar-10-binary.tar.gz``; never the pickled python release, which can run code on loading)."""

    num_classes, in_channels, image_size = 10, 3, 32
    class_names = cifar.CLASSES
    dataset = "cifar10"
    remote = Remote("cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                    md5="c32a1d4ab5d03f1284b67883e8d87530")
    extracted = "cifar-10-binary"
    """Folder, beside the archive, that it is extracted into (it then holds ``cifar-10-batches-bin/``)."""

    def __init__(self, root: str | None = None, batch_size: int = 128, val_fraction: float = 0.1,
                 augment: bool = True, flip: bool = True, vflip: bool = False, rotate: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, augment=augment, flip=flip, vflip=vflip,
                         rotate=rotate, seed=seed)
        self.root = root

    __init__.__doc__ = _args_doc(
        "root: Folder holding cifar-10-binary.tar.gz or the extracted cifar-10-batches-bin/ (or that folder",
        "    itself); downloaded into $DLBENCH_DATA_DIR/cifar10 (default ~/.cache/dlbench/cifar10) when not given.")

    def batches_folder(self) -> Path:
        """The folder holding the ``.bin`` batches: found under the root, or extracted from the (downloaded)
        archive."""
        directory = data_root(self.dataset, self.root)
        for folder in (directory, directory / cifar.FOLDER, directory / self.extracted / cifar.FOLDER):
            if (folder / cifar.TEST_FILE).is_file():
                return folder
        archive = fetch(self.dataset, self.remote, self.root)
        folder = extract(archive, directory / self.extracted) / cifar.FOLDER
        if not folder.is_dir():
            raise DlbenchError(f"{archive} holds no {cifar.FOLDER}/ folder; it is not the binary release of "
                               f"CIFAR-10. Delete it (and {directory / self.extracted}) and download it again.")
        return folder

    def prepare_data(self) -> None:
        self.batches_folder()

    def load(self):
        train_x, train_y, test_x, test_y = cifar.read_folder(self.batches_folder())
        return _tensor(train_x), torch.from_numpy(train_y), _tensor(test_x), torch.from_numpy(test_y)


class ImageFolderDataModule(ImageDataModule):
    """Your own images, one sub-folder per class (``ROOT/<class>/*.png``), decoded once with Pillow, resized to a
    square, held in memory as uint8 and split into train and test by class with a fixed seed. The source articles'
    lung-nodule example trains on 128x128 RGB images with horizontal and vertical flips and rotations of up to 20
    degrees: ``--data.image_size 128 --data.flip true --data.vflip true --data.rotate 20``."""

    TEST_SEED = 1234
    """Seed of the train/test split: fixed, so that every run is tested on the same images."""

    def __init__(self, root: str | None = None, image_size: int = 64, in_channels: int = 3,
                 test_fraction: float = 0.2, batch_size: int = 32, val_fraction: float = 0.1, augment: bool = False,
                 flip: bool = False, vflip: bool = False, rotate: float = 0.0, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, augment=augment, flip=flip, vflip=vflip,
                         rotate=rotate, seed=seed)
        if image_size < 4:
            raise ValueError(f"image_size must be >= 4, got {image_size}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.listing = scan(root)
        self.class_names = self.listing.classes
        self.num_classes, self.in_channels, self.image_size = len(self.class_names), in_channels, image_size

    __init__.__doc__ = _args_doc(
        "root: Folder with one sub-folder of images per class (PNG, JPEG, BMP, TIFF, ...); required.",
        "image_size: Side in pixels every image is resized to (squashed, not cropped).",
        "in_channels: 1 to read images as grey, 3 as RGB.",
        "test_fraction: Fraction of each class held out for testing, chosen with a fixed seed.")

    def load(self):
        x = load_images(self.listing.files, self.image_size, self.in_channels)
        y = torch.tensor(self.listing.labels, dtype=torch.int64)
        test, train = stratified_split(y, self.hparams.test_fraction, self.TEST_SEED)
        if len(test) == 0:
            raise DlbenchError(f"{self.hparams.root}: {len(y)} images are too few for a test split (every class "
                               f"needs at least two images). Add images.")
        return x[train], y[train], x[test], y[test]
