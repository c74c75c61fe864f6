"""A Transformer encoder that classifies token sequences.

Token embedding plus a learned position embedding, a stack of pre-norm encoder layers (multi-head self-attention and
a feed-forward block, each with layer norm and a residual connection) that never attend to padding, then a pooled
summary of the sequence (the mean over real tokens, or a learned [CLS] token) and a linear head.

The default sizes follow the source articles' Keras encoder example: 64-dimensional embeddings, 4 attention heads,
a 128-unit feed-forward layer and dropout 0.1; their single layer is two here.
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import Accuracy, F1Score

from dlbench import LossMean, MajorityAccuracy

POOLINGS = ("mean", "cls")
SHOWN = 8  # messages written to TensorBoard per validation epoch


class TransformerClassifier(L.LightningModule):
    def __init__(self, vocab_size: int = 1000, num_classes: int = 2, max_len: int = 64, pad_index: int = 0,
                 d_model: int = 64, nhead: int = 4, num_layers: int = 2, dim_feedforward: int = 128,
                 dropout: float = 0.1, pooling: Literal["mean", "cls"] = "mean", lr: float = 3e-3,
                 weight_decay: float = 0.01, warmup_fraction: float = 0.05) -> None:
        """
        Args:
            vocab_size: Entries in the vocabulary, special tokens included (linked from the data).
            num_classes: Number of classes (linked from the data).
            max_len: Longest token sequence the model reads (linked from the data).
            pad_index: Index of the padding token, which attention ignores (linked from the data).
            d_model: Width of the token embeddings and of every encoder layer.
            nhead: Attention heads per layer; must divide d_model.
            num_layers: Encoder layers.
            dim_feedforward: Units in the hidden layer of each feed-forward block.
            dropout: Dropout in attention, feed-forward blocks and on the embeddings.
            pooling: How the sequence is summarised for the head: 'mean' over real tokens or a learned 'cls' token.
            lr: Peak AdamW learning rate.
            weight_decay: AdamW weight decay.
            warmup_fraction: Fraction of the training steps over which the learning rate rises to lr, before it
                decays to near zero (one-cycle schedule, cosine-shaped).
        """
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("num_classes", num_classes), ("max_len", max_len),
                            ("d_model", d_model), ("nhead", nhead), ("num_layers", num_layers),
                            ("dim_feedforward", dim_feedforward)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if d_model % nhead:
            raise ValueError(f"nhead must divide d_model, got nhead={nhead} and d_model={d_model}")
        if not 0 <= pad_index < vocab_size:
            raise ValueError(f"pad_index must be in [0, vocab_size), got {pad_index} with vocab_size={vocab_size}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 < warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in (0, 1), got {warmup_fraction}")
        self.save_hyperparameters()
        self.token_embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_index)
        self.position_embedding = nn.Embedding(max_len + 1, d_model)  # +1: the [CLS] slot when pooling == "cls"
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # Pre-norm layers train more stably at this size without a long warm-up; nested tensors need post-norm.
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)
        for emb in (self.token_embedding, self.position_embedding):
            # Words and positions on the same small scale (GPT-2's init), so neither drowns the other out.
            nn.init.normal_(emb.weight, std=0.02)
        self.token_embedding.weight.data[pad_index].zero_()
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        self.example_input_array = (torch.arange(2 * max_len) % vocab_size).view(2, max_len)

        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        self.val_acc, self.test_acc = (Accuracy(task="multiclass", num_classes=num_classes) for _ in range(2))
        # Two classes: F1 of class 1, the positive class (spam, positive sentiment); more: the macro average.
        f1 = {"task": "binary"} if num_classes == 2 else {"task": "multiclass", "num_classes": num_classes,
                                                          "average": "macro"}
        self.val_f1, self.test_f1 = F1Score(**f1), F1Score(**f1)
        self.val_acc_majority, self.test_acc_majority = MajorityAccuracy(num_classes), MajorityAccuracy(num_classes)
        self._shown: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def padding_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """True where ``tokens`` is padding, False at the first position always: a row of nothing but padding would
        make attention a softmax over no keys (NaN)."""
        mask = tokens == self.hparams.pad_index
        mask[:, 0] = False
        return mask

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` token indices -> ``(N, num_classes)`` logits."""
        n, length = tokens.shape
        pad = self.padding_mask(tokens)
        positions = torch.arange(length, device=tokens.device)
        # An int offset, not the bool itself: a traced tensor + bool is an op TorchScript has no overload for.
        x = self.token_embedding(tokens) + self.position_embedding(positions + int(self.cls_token is not None))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(n, -1, -1) + self.position_embedding.weight[0], x], dim=1)
            pad = torch.cat([pad.new_zeros(n, 1), pad], dim=1)
        h = self.encoder(self.dropout(x), src_key_padding_mask=pad)
        if self.cls_token is not None:
            pooled = h[:, 0]
        else:
            keep = (~pad).unsqueeze(-1).to(h.dtype)
            pooled = (h * keep).sum(1) / keep.sum(1)
        return self.head(pooled)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        tokens, labels = batch
        logits = self(tokens)
        loss = nn.functional.cross_entropy(logits, labels)
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss, weight=len(labels))  # update(): a call would also compute a per-batch value
        if stage != "train":  # the training loss is logged once an epoch, from on_train_epoch_end
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        if stage != "train":
            preds = logits.argmax(-1)
            acc, f1, majority = (getattr(self, f"{stage}_{name}") for name in ("acc", "f1", "acc_majority"))
            acc(preds, labels)
            f1(logits.softmax(-1)[:, 1] if self.hparams.num_classes == 2 else preds, labels)
            majority(labels)
            self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
            self.log(f"{stage}/f1", f1, on_step=False, on_epoch=True, prog_bar=True)
            self.log(f"{stage}/acc_majority", majority, on_step=False, on_epoch=True)
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
        if batch_idx == 0 and self._logs_text():
            tokens, labels = batch[0][:SHOWN], batch[1][:SHOWN]
            with torch.no_grad():
                self._shown = (tokens.cpu(), labels.cpu(), self(tokens).argmax(-1).cpu())

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """``{"probs": (N, num_classes)}``: class probabilities, which the data's predictor turns into class names
        (see :mod:`dlbench_plugins.transformer.predict`)."""
        return {"probs": self(batch[0]).float().softmax(-1)}

    def _logs_text(self) -> bool:
        return isinstance(self.logger, TensorBoardLogger) and self.trainer.is_global_zero \
            and not self.trainer.sanity_checking

    def on_validation_epoch_end(self) -> None:
        if self._shown is None or not self._logs_text():
            return
        tokens, labels, preds = self._shown
        self._shown = None
        data = self.trainer.datamodule
        decode = getattr(data, "decode", lambda ids: " ".join(str(int(i)) for i in ids))
        names = getattr(data, "class_names", None) or [str(c) for c in range(self.hparams.num_classes)]
        rows = ["| predicted | true | text |", "|---|---|---|"]
        for ids, label, pred in zip(tokens, labels, preds, strict=True):
            mark = "" if pred == label else " ✗"
            text = decode(ids).replace("|", "\\|")
            rows.append(f"| {names[pred]}{mark} | {names[label]} | {text} |")
        self.logger.experiment.add_text("val/samples", "\n".join(rows), self.global_step)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            # Norms, biases, embeddings and the [CLS] vector are not decayed (the usual Transformer recipe).
            (no_decay if p.ndim < 2 or "embedding" in name or name == "cls_token" else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):  # neither max_epochs nor max_steps: keep lr constant
            return opt
        # Warm-up to lr, then decay: Transformers train poorly at full lr from the first step.
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=int(total) + 1,
                                                    pct_start=self.hparams.warmup_fraction, anneal_strategy="cos",
                                                    cycle_momentum=False)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
