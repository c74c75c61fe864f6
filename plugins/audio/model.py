"""A 1-D convolutional speech-command classifier over log-mel (or MFCC) frames.

Follows the source articles' example: Conv1D layers sliding along time over 100 frames of 40 features, ten
classes. Each layer is convolution, batch norm, ReLU and max-pooling by 2 in time; the last feature map is pooled
over time (mean and max, so both "how much" and "whether at all" of a pattern count) into a linear head. Accuracy is
reported next to the majority-class baseline, and a confusion matrix goes to TensorBoard after every validation.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from dlbench import LossMean, MajorityAccuracy, PictureBudget


def conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm1d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool1d(2, ceil_mode=True),
    )


def confusion_figure(matrix: torch.Tensor, names: list[str]):
    """A matplotlib figure of a confusion matrix (rows: true class, columns: predicted), counts written in."""
    from matplotlib.figure import Figure

    n = len(matrix)
    fig = Figure(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n), dpi=100)
    ax = fig.subplots()
    ax.imshow(matrix.cpu(), cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    top = float(matrix.max()) or 1.0
    for (i, j), count in zip(torch.cartesian_prod(torch.arange(n), torch.arange(n)).tolist(),
                             matrix.flatten().tolist(), strict=True):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                    color="white" if count > top / 2 else "black")
    fig.tight_layout()
    return fig


class SpeechCommandCNN(L.LightningModule):
    def __init__(self, num_classes: int = 10, n_mels: int = 40, n_frames: int = 100, channels: int = 64,
                 num_layers: int = 3, kernel_size: int = 5, dropout: float = 0.2, lr: float = 3e-3,
                 weight_decay: float = 1e-2, class_names: list[str] | None = None) -> None:
        """
        Args:
            num_classes: Number of words (linked from the data; ten in the articles' example).
            n_mels: Features per frame, the input channels of the first convolution (linked from the data; 40 in
                the articles' example).
            n_frames: Frames per clip (linked from the data; 100 in the articles' example).
            channels: Channels of every convolution layer.
            num_layers: Convolution blocks, each halving the time resolution.
            kernel_size: Frames each convolution spans (odd).
            dropout: Dropout before the linear head.
            lr: Peak AdamW learning rate (linear warm-up over 5% of the steps, then cosine decay).
            weight_decay: AdamW weight decay.
            class_names: Class labels for the confusion matrix (linked from the data); class indices when not given.
        """
        super().__init__()
        for name, value in (("num_classes", num_classes), ("n_mels", n_mels), ("n_frames", n_frames),
                            ("channels", channels), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names must name all {num_classes} classes, got {len(class_names)}")
        self.save_hyperparameters()
        widths = [n_mels] + [channels] * num_layers
        self.features = nn.Sequential(*(conv_block(i, o, kernel_size)
                                        for i, o in zip(widths, widths[1:], strict=False)))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels, num_classes)
        self.example_input_array = torch.zeros(2, n_mels, n_frames)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        self.val_acc, self.test_acc = (MulticlassAccuracy(num_classes, average="micro") for _ in range(2))
        self.test_acc_majority = MajorityAccuracy(num_classes)
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.pictures = PictureBudget()  # the confusion matrix is a matplotlib figure: ~0.1 s to draw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of features ``(N, n_mels, n_frames)``."""
        h = self.features(x)
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        return self.head(self.dropout(pooled))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss, weight=len(y))  # update(): a call would also compute a per-batch value
        if stage != "train":  # the training loss is logged once an epoch, from on_train_epoch_end
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        if stage != "train":
            acc = getattr(self, f"{stage}_acc")
            acc(logits, y)
            self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if stage == "val":
            self.val_confusion(logits, y)
        if stage == "test":
            self.test_acc_majority(y)
            self.log("test/acc_majority", self.test_acc_majority, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        # The training loss is logged here, once an epoch, rather than from every training_step: the same epoch mean
        # at the same step, without Lightning's per-call logging cost on every batch.
        if self.train_loss.update_called:
            self.log("train/loss", self.train_loss, prog_bar=True)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """``{"probs": (N, num_classes)}``: word probabilities, which the data's predictor turns into class names
        (see :mod:`dlbench.data.predict`)."""
        return {"probs": self(batch[0]).float().softmax(dim=-1)}

    def on_validation_epoch_end(self) -> None:
        # compute() syncs across processes, so every rank calls it; only rank zero draws.
        matrix = self.val_confusion.compute()
        self.val_confusion.reset()
        if not self.pictures.due(self.trainer) or not self.trainer.is_global_zero:
            return
        if isinstance(self.logger, TensorBoardLogger):
            with self.pictures.drawing():
                figure = confusion_figure(matrix, self.class_names)
                self.logger.experiment.add_figure("val/confusion_matrix", figure, global_step=self.global_step)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, total // 20)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
