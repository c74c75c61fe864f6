"""A residual network of the ResNet-18 shape, adapted to small images.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016): a stack of *basic blocks*, each two 3x3
convolutions with batch normalisation whose output is added to the block's input, so a block only has to learn a
correction (the residual) to the identity. Where a block changes the width or the resolution, the shortcut is a
1x1 convolution with stride (the paper's option B); elsewhere it is the identity. ResNet-18 is four stages of two
blocks, widths 64, 128, 256, 512, each stage after the first halving the resolution, then global average pooling
and one linear layer.

For images of 8 to 32 pixels the ImageNet stem (7x7 convolution with stride 2 and a max-pool, a 4x reduction) would
leave almost nothing, so the stem here is one 3x3 convolution at full resolution, as in the paper's own CIFAR-10
networks (Section 4.2). As in ResNet-18 every stage after the first halves the resolution, but only while the result
stays at least ``MIN_FEATURE_SIZE`` pixels across: 32 -> 32, 16, 8, 4; 28 -> 28, 14, 7, 4; 8 -> 8, 4, 2, 2. The
default widths are a quarter of ResNet-18's so that the default run fits a couple of CPU minutes;
``--model.widths [64,128,256,512]`` is the full width (11.2M parameters for 10 classes).

The source articles show ResNet50 classifying images with ImageNet weights; dlbench trains from scratch, so the
architecture follows the paper, not the article's example.
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from dlbench import LossMean, MajorityAccuracy

MIN_FEATURE_SIZE = 2
"""A stage downsamples only if the feature map stays at least this many pixels across."""


def conv_bn(c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Convolution (no bias: the batch norm that follows has one) and batch normalisation."""
    conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """``relu(F(x) + shortcut(x))`` with ``F`` = conv3x3-BN-ReLU-conv3x3-BN (He et al. 2016, Fig. 2)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, 3, stride)
        self.conv2 = conv_bn(c_out, c_out, 3)
        # Projection shortcut only where the shape changes; identity shortcuts add no parameters.
        self.shortcut = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(residual + self.shortcut(x))


def stage_strides(image_size: int, n_stages: int) -> list[int]:
    """Stride of each stage's first block: 2 where the feature map can halve and stay >= MIN_FEATURE_SIZE."""
    strides, size = [1], image_size
    for _ in range(n_stages - 1):
        halved = (size + 1) // 2  # a 3x3 convolution with padding 1 and stride 2
        stride = 2 if halved >= MIN_FEATURE_SIZE else 1
        size = halved if stride == 2 else size
        strides.append(stride)
    return strides


class ResNet(L.LightningModule):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8,
                 widths: tuple[int, ...] = (16, 32, 64, 128), blocks: tuple[int, ...] = (2, 2, 2, 2),
                 zero_init_residual: bool = True, optimizer: Literal["sgd", "adamw"] = "sgd", lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 5e-4,
                 schedule: Literal["onecycle", "cosine", "constant"] = "onecycle",
                 label_smoothing: float = 0.0, channels_last: bool = True) -> None:
        """
        Args:
            num_classes: Classes to predict (set from the data).
            in_channels: Image channels (set from the data).
            image_size: Image height and width in pixels (set from the data).
            widths: Channels of each stage; ResNet-18 uses [64,128,256,512], the default is a quarter of that.
            blocks: Basic blocks in each stage; ResNet-18 is [2,2,2,2], ResNet-34 [3,4,6,3].
            zero_init_residual: Start each block's last batch norm at zero so every block begins as the identity.
            optimizer: "sgd" (with momentum, as in the paper) or "adamw".
            lr: Peak learning rate (of the one-cycle schedule) or initial learning rate (cosine, constant).
            momentum: SGD momentum (ignored by AdamW).
            weight_decay: Weight decay (the paper uses 1e-4 on ImageNet; 5e-4 suits small data sets).
            schedule: "onecycle" (warm up then anneal), "cosine" (anneal to zero) or "constant", stepped per batch.
            label_smoothing: Training loss label smoothing in [0, 1); validation and test losses are plain.
            channels_last: Keep images and kernels in NHWC memory layout (about 25% faster here on CPU).
        """
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        widths, blocks = tuple(widths), tuple(blocks)
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty list of positive channel counts, got {list(widths)}")
        if len(blocks) != len(widths) or any(b < 1 for b in blocks):
            raise ValueError(f"blocks must give a count >= 1 for each of the {len(widths)} stages in widths, "
                             f"got {list(blocks)}")
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        if schedule not in ("onecycle", "cosine", "constant"):
            raise ValueError(f"schedule must be 'onecycle', 'cosine' or 'constant', got {schedule!r}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters()

        self.stem = nn.Sequential(conv_bn(in_channels, widths[0], 3), nn.ReLU())
        stages, c_in = [], widths[0]
        for width, n_blocks, stride in zip(widths, blocks, stage_strides(image_size, len(widths)), strict=True):
            stages.append(nn.Sequential(*(BasicBlock(c_in if i == 0 else width, width, stride if i == 0 else 1)
                                          for i in range(n_blocks))))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(widths[-1], num_classes)
        self._init_weights(zero_init_residual)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)

        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_majority = MajorityAccuracy(num_classes)
        self.val_confusion = MulticlassConfusionMatrix(num_classes, normalize="true")

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # He et al. 2015
        if zero_init_residual:
            # Goyal et al. 2017: with the last BN's scale at zero each block starts as the identity, which makes the
            # early steps of a deep stack as easy to train as a shallow one.
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.conv2[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            # oneDNN and cuDNN convolutions run faster in NHWC; measured on this project's 2-core CPU for a width-16
            # ResNet-18 shape on 28x28 images: 559 ms per 128-image step against 780 ms in NCHW.
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.stages(self.stem(x))
        return self.head(features.mean(dim=(2, 3)))  # global average pooling

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
        if stage == "val":
            self.val_confusion.update(logits, y)
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
        """``{"probs": (N, num_classes)}``: class probabilities of each image (see :mod:`dlbench.data.predict`)."""
        return {"probs": self(batch[0]).float().softmax(dim=-1)}

    def on_validation_epoch_end(self) -> None:
        confusion = self.val_confusion.compute()
        self.val_confusion.reset()
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        if isinstance(self.logger, TensorBoardLogger):
            # Rows: true class, columns: predicted, each row sums to 1; scaled up so each cell is 16x16 pixels.
            picture = confusion.nan_to_num(0.0).repeat_interleave(16, 0).repeat_interleave(16, 1)
            self.logger.experiment.add_image("val/confusion_matrix", picture[None], self.current_epoch)

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if hp.schedule == "constant" or not math.isfinite(total):
            return opt
        if hp.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=int(total), pct_start=0.25)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
