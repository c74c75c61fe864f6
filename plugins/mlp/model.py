"""A feed-forward classifier: the image flattened into one vector, fully connected layers with dropout, a linear
head over the classes.

Follows the source articles' feed-forward example (two hidden ReLU layers with dropout, trained with Adam); the
hidden layers are wider here (256 and 128 units instead of 64 and 32) because the inputs are whole images, and the
optimiser is AdamW with the learning rate decayed to zero over the run (a cosine), so that short runs end settled.
Test accuracy is logged next to the majority-class baseline on the same split.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dlbench.metrics import MajorityAccuracy

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
                                           "leaky_relu": nn.LeakyReLU}


class MLPClassifier(L.LightningModule):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 hidden_sizes: tuple[int, ...] = (256, 128), activation: str = "relu", dropout: float = 0.2,
                 lr: float = 1e-3, weight_decay: float = 1e-4) -> None:
        """
        Args:
            num_classes: Classes to tell apart (linked from the data).
            in_channels: Channels of the input images (linked from the data).
            image_size: Height and width of the square input images (linked from the data).
            hidden_sizes: Units of each hidden layer, input side first; empty for a linear classifier.
            activation: Non-linearity after each hidden layer: relu, gelu, silu, tanh or leaky_relu.
            dropout: Dropout after each hidden layer.
            lr: Peak AdamW learning rate (cosine decay over the run).
            weight_decay: AdamW weight decay.
        """
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        for name, value in (("in_channels", in_channels), ("image_size", image_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must all be >= 1, got {list(hidden_sizes)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()

        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)

        # One metric object per stage: torchmetrics accumulates over the epoch and syncs across processes.
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_majority = MajorityAccuracy(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> class logits ``(N, num_classes)``."""
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        # update(), not a call: a call also computes each batch's own value, which nothing reads.
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss, weight=len(y))
        if stage == "train":  # logged once an epoch, from on_train_epoch_end
            return loss
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        acc = getattr(self, f"{stage}_acc")
        acc.update(logits, y)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if stage == "test":
            self.test_acc_majority.update(y)
            self.log("test/acc_majority", self.test_acc_majority, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        # The epoch mean, logged at the same step as an on_epoch log from training_step would be, without
        # Lightning's per-call logging cost on every training batch.
        if self.train_loss.update_called:
            self.log("train/loss", self.train_loss, prog_bar=True)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """Class probabilities ``(N, num_classes)``."""
        return self(batch[0]).softmax(dim=-1)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = self.trainer.estimated_stepping_batches
        if not 0 < steps < float("inf"):  # an open-ended run: keep the learning rate constant
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
