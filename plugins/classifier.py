"""What the image classifiers (mlp, cnn, rnn) share: cross-entropy, one torchmetrics object per stage, epoch-level
logging, class probabilities for predict, and AdamW with a cosine decay of the learning rate over the run.

A subclass builds its network, calls :meth:`Classifier.init_metrics` in ``__init__`` and defines ``forward``
(images -> class logits); :meth:`Classifier.observe` is where it looks at the logits of a step (e.g. a confusion
matrix).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from dlbench import LossMean, MajorityAccuracy


class Classifier(L.LightningModule):
    def init_metrics(self, num_classes: int) -> None:
        # One metric object per stage: torchmetrics accumulates over the epoch and syncs across processes.
        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_majority = MajorityAccuracy(num_classes)

    def observe(self, stage: str, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Called with each step's logits and labels; nothing by default."""

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        # update(), not a call: a call also computes each batch's own value, which nothing reads.
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss, weight=len(y))
        self.observe(stage, logits, y)
        if stage != "train":
            getattr(self, f"{stage}_acc").update(logits, y)
        if stage == "test":
            self.test_acc_majority.update(y)
        return loss

    # Every metric is logged once an epoch, from the epoch-end hooks: the same epoch values at the same steps as an
    # on_epoch log from each step would give, without Lightning's per-call logging cost on every batch.
    def _log_epoch(self, stage: str) -> None:
        if not getattr(self, f"{stage}_loss").update_called:
            return
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), prog_bar=stage != "test")
        if stage != "train":
            self.log(f"{stage}/acc", getattr(self, f"{stage}_acc"), prog_bar=True)
        if stage == "test":
            self.log("test/acc_majority", self.test_acc_majority)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """``{"probs": (N, num_classes)}``: class probabilities, which the data's predictor turns into class names
        (see :mod:`dlbench.data.predict`)."""
        return {"probs": self(batch[0]).float().softmax(dim=-1)}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = self.trainer.estimated_stepping_batches
        if not 0 < steps < float("inf"):  # an open-ended run: keep the learning rate constant
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
