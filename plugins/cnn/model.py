"""A small convolutional classifier: blocks of convolution, batch norm, ReLU and 2x2 max pooling, then a dense
head with dropout.

Follows the source articles' CNN example (32 then 64 filters of 3x3, each followed by 2x2 max pooling, a 64-unit
dense layer, Adam), with batch norm after each convolution, dropout in the head, AdamW with a cosine decay of the
learning rate, and "same" padding, so that each block halves the image and the network fits any image size from
8x8 digits to 32x32 CIFAR-10. A confusion matrix of the validation set goes to TensorBoard at every validation-epoch
end.
"""

from __future__ import annotations

import torch
from dlbench_plugins.classifier import Classifier
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from dlbench import PictureBudget


class CNNClassifier(Classifier):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 channels: tuple[int, ...] = (32, 64), kernel_size: int = 3, hidden_size: int = 64,
                 dropout: float = 0.3, lr: float = 2e-3, weight_decay: float = 1e-4) -> None:
        """
        Args:
            num_classes: Classes to tell apart (linked from the data).
            in_channels: Channels of the input images (linked from the data).
            image_size: Height and width of the square input images (linked from the data).
            channels: Filters of each convolution block; every block halves the image with 2x2 max pooling.
            kernel_size: Side of the square convolution kernels (odd, "same" padding).
            hidden_size: Units of the dense layer before the output layer; 0 for none.
            dropout: Dropout before each dense layer.
            lr: Peak AdamW learning rate (cosine decay over the run).
            weight_decay: AdamW weight decay.
        """
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        for name, value in (("in_channels", in_channels), ("image_size", image_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of sizes >= 1, got {list(channels)}")
        if image_size >> len(channels) < 1:
            raise ValueError(f"channels has {len(channels)} blocks, but a {image_size}x{image_size} image can be "
                             f"halved by pooling at most {image_size.bit_length() - 1} times; use fewer blocks")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if hidden_size < 0:
            raise ValueError(f"hidden_size must be >= 0, got {hidden_size}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()

        blocks: list[nn.Module] = []
        width = in_channels
        for c in channels:
            # No conv bias: the batch norm right after it has its own shift.
            blocks += [nn.Conv2d(width, c, kernel_size, padding=kernel_size // 2, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(), nn.MaxPool2d(2)]
            width = c
        self.features = nn.Sequential(*blocks)
        flat = width * (image_size >> len(channels)) ** 2
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout)]
        if hidden_size:
            head += [nn.Linear(flat, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
            flat = hidden_size
        self.head = nn.Sequential(*head, nn.Linear(flat, num_classes))
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)

        self.init_metrics(num_classes)
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.pictures = PictureBudget()  # the confusion matrix is a matplotlib figure: ~0.1 s to draw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> class logits ``(N, num_classes)``."""
        return self.head(self.features(x))

    def observe(self, stage: str, logits: torch.Tensor, y: torch.Tensor) -> None:
        if stage == "val":
            self.val_confusion.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        # compute() on every rank: under DDP it is a collective that sums the counts of all processes.
        counts = self.val_confusion.compute().cpu()
        self.val_confusion.reset()
        if not self.pictures.due(self.trainer) or not self.trainer.is_global_zero:
            return
        if isinstance(self.logger, TensorBoardLogger):
            names = getattr(self.trainer.datamodule, "class_names", ())
            with self.pictures.drawing():
                self.logger.experiment.add_figure("val/confusion_matrix", confusion_figure(counts, names),
                                                  self.global_step)


def confusion_figure(counts: torch.Tensor, class_names: tuple[str, ...] = ()) -> Figure:
    """A matplotlib figure of a confusion matrix: rows are true classes, columns predictions, cells counts."""
    n = len(counts)
    names = list(class_names) if len(class_names) == n else [str(i) for i in range(n)]
    # Fixed margins in inches instead of a layout engine, which would double the drawing time of every epoch.
    longest = max(len(name) for name in names)
    margin, top = 0.5 + 0.07 * longest, 0.2
    side = min(0.45 * n, 9.0)  # inches: many classes shrink the cells rather than grow the picture without bound
    width = height = margin + side + top
    fig = Figure(figsize=(width, height))  # no pyplot: no global figure registry to leak into
    fig.subplots_adjust(left=margin / width, bottom=margin / height, right=1 - top / width, top=1 - top / height)
    ax = fig.add_subplot()
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_xticks(range(n), names, rotation=90 if longest > 2 else 0, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    if n <= 20:  # beyond that the numbers no longer fit their cells
        threshold = counts.max().item() / 2
        for index, value in enumerate(counts.flatten().tolist()):
            ax.text(index % n, index // n, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > threshold else "black")
    return fig
