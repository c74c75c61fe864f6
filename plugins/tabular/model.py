"""A multilayer perceptron that flags the rare class of an imbalanced binary table (fraud, malignancy, ...).

The shape follows the source articles' credit-card fraud example: dense layers of 64 and 32 units with dropout 0.5
and one output unit, trained with Adam. Two changes for imbalanced tables: batch normalisation after each dense
layer, and the loss (``BCEWithLogitsLoss``) weighs each positive by ``pos_weight`` = negatives / positives of the
training split (linked from the data), so the rare class counts as much as the common one. A row is flagged when
its probability reaches ``threshold``.

Accuracy says little when 0.2% of rows are positive, so the scores are AUROC, average precision (the area under the
precision-recall curve) and F1 at the threshold. Logged beside them, two baselines: ``test/auroc_best_feature``, the
AUROC of the single best raw feature (chosen on the training split; see the data module), and
``test/ap_prevalence``, the average precision of a constant score, which equals the positive rate. ROC and
precision-recall curves of the validation split go to TensorBoard every few epochs.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryPrecisionRecallCurve,
    BinaryROC,
)

from dlbench import LossMean


class TabularMLP(L.LightningModule):
    def __init__(self, num_features: int = 30, pos_weight: float = 1.0, hidden: int = 64, num_layers: int = 2,
                 dropout: float = 0.5, lr: float = 1e-3, weight_decay: float = 1e-4, threshold: float = 0.5,
                 curves_every_n_epochs: int = 10) -> None:
        """
        Args:
            num_features: Input columns (linked from the data).
            pos_weight: Loss weight of a positive row, negatives / positives of the training split (linked from
                the data); 1 weighs both classes alike.
            hidden: Units in the first hidden layer; each further layer has half as many (64 -> 32 in the
                articles' fraud example).
            num_layers: Hidden layers, each dense -> batch norm -> ReLU -> dropout.
            dropout: Dropout after each hidden layer (0.5 in the articles' example).
            lr: Adam learning rate.
            weight_decay: Adam weight decay.
            threshold: Probability at or above which a row is flagged positive (F1 and predictions).
            curves_every_n_epochs: Draw validation ROC and precision-recall curves to TensorBoard every this many
                epochs; 0 turns them off.
        """
        super().__init__()
        for name, value in (("num_features", num_features), ("hidden", hidden), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if pos_weight <= 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if curves_every_n_epochs < 0:
            raise ValueError(f"curves_every_n_epochs must be >= 0, got {curves_every_n_epochs}")
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width = num_features
        for i in range(num_layers):
            out = max(1, hidden // 2**i)
            layers += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.ReLU(), nn.Dropout(dropout)]
            width = out
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self.example_input_array = torch.zeros(2, num_features)
        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        for stage in ("val", "test"):
            setattr(self, f"{stage}_auroc", BinaryAUROC())
            setattr(self, f"{stage}_ap", BinaryAveragePrecision())
            setattr(self, f"{stage}_f1", BinaryF1Score(threshold=threshold))
        self.test_auroc_best_feature = BinaryAUROC()
        self.test_ap_prevalence = BinaryAveragePrecision()
        self.val_roc, self.val_pr = BinaryROC(), BinaryPrecisionRecallCurve()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B,)``: log-odds that each row is positive."""
        return self.net(x).squeeze(-1)

    def _curves_due(self) -> bool:
        every = self.hparams.curves_every_n_epochs
        return bool(every) and not self.trainer.sanity_checking and (self.current_epoch + 1) % every == 0

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y, baseline = batch
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight)
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss, weight=len(y))  # update(): a call would also compute a per-batch value
        if stage != "train":  # the training loss is logged once an epoch, from on_train_epoch_end
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        if stage == "train":
            return loss
        prob, target = torch.sigmoid(logits), y.long()
        for name in ("auroc", "ap", "f1"):
            metric = getattr(self, f"{stage}_{name}")
            metric(prob, target)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "auroc")
        if stage == "test":
            self.test_auroc_best_feature(torch.sigmoid(baseline), target)
            self.test_ap_prevalence(torch.zeros_like(prob), target)
            self.log("test/auroc_best_feature", self.test_auroc_best_feature, on_step=False, on_epoch=True)
            self.log("test/ap_prevalence", self.test_ap_prevalence, on_step=False, on_epoch=True)
        elif self._curves_due():
            self.val_roc.update(prob, target)
            self.val_pr.update(prob, target)
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
        """``{"probs": (B, 2), "positive": (B,)}``: the probabilities of the negative and the positive class of each
        row of standardised features ``batch[0]``, and the 0/1 decision at ``threshold`` (1 when the positive
        class's probability reaches it), which the data's predictor turns into class names (see
        :mod:`dlbench_plugins.tabular.predict`)."""
        prob = torch.sigmoid(self(batch[0]).float())
        return {"probs": torch.stack([1 - prob, prob], dim=1), "positive": (prob >= self.hparams.threshold).long()}

    def on_validation_epoch_end(self) -> None:
        if not self._curves_due() or self.val_roc.update_count == 0:  # e.g. a second validation in the epoch
            return
        roc = [t.cpu() for t in self.val_roc.compute()]  # computed on every rank: it gathers the states
        pr = [t.cpu() for t in self.val_pr.compute()]
        self.val_roc.reset()
        self.val_pr.reset()
        if self.trainer.is_global_zero and isinstance(self.logger, TensorBoardLogger):
            figure = curves_figure(*roc, *pr, threshold=self.hparams.threshold)
            self.logger.experiment.add_figure("val/curves", figure, global_step=self.global_step)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def curves_figure(fpr: torch.Tensor, tpr: torch.Tensor, roc_thresholds: torch.Tensor, precision: torch.Tensor,
                  recall: torch.Tensor, pr_thresholds: torch.Tensor, threshold: float = 0.5):
    """ROC and precision-recall curves side by side (torchmetrics' BinaryROC / BinaryPrecisionRecallCurve outputs),
    each with the line of a constant score and the point where the decision ``threshold`` operates."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.6), layout="constrained")
    roc, pr = figure.subplots(1, 2)
    roc.plot(fpr, tpr)
    roc.plot([0, 1], [0, 1], "--", color="grey", label="constant score")
    # ROC thresholds descend, precision-recall thresholds ascend; a row is flagged when its score >= threshold.
    i = max(int((roc_thresholds >= threshold).sum()) - 1, 0)
    roc.plot(fpr[i], tpr[i], "o", color="C3", label=f"threshold {threshold:g}")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation)")
    pr.plot(recall, precision)
    # The lowest threshold flags every row, so its precision is the positive rate: a constant score's precision.
    pr.axhline(float(precision[0]), linestyle="--", color="grey")
    j = int((pr_thresholds < threshold).sum())
    pr.plot(recall[j], precision[j], "o", color="C3")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall (validation)", ylim=(0, 1.02))
    roc.legend(loc="lower right")
    return figure
