"""A two-layer perceptron for the iris flowers."""

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from dlbench import MajorityAccuracy


class IrisMLP(L.LightningModule):
    def __init__(self, num_features: int = 4, num_classes: int = 3, hidden_size: int = 16, lr: float = 0.01) -> None:
        """
        Args:
            num_features: Input features (set from the data).
            num_classes: Classes (set from the data).
            hidden_size: Units in the hidden layer.
            lr: Adam learning rate.
        """
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(num_features, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_classes))
        # Two rows, as in the built-ins: the model summary and the TensorBoard graph run it, and a single row is a
        # special case for layers such as batch norm in training mode.
        self.example_input_array = torch.zeros(2, num_features)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_majority = MajorityAccuracy(num_classes)

    def forward(self, x):
        return self.net(x)

    def _step(self, batch, stage):
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        if stage != "train":
            acc = getattr(self, f"{stage}_acc")
            acc(logits, y)
            self.log(f"{stage}/acc", acc, on_epoch=True)
        if stage == "test":
            self.test_acc_majority(y)
            self.log("test/acc_majority", self.test_acc_majority)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """``{"probs": (N, num_classes)}``: class probabilities, which the data's predictor turns into class names."""
        return {"probs": self(batch[0]).softmax(-1)}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
