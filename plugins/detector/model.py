"""A small single-stage, YOLO-style object detector.

Follows the source articles' "YOLO-style real-time detection": one pass of a small convolutional backbone turns the
image into a grid (stride ``2 ** stages``; 8x8 cells on 64x64 images), and every cell predicts an objectness logit,
a box and class scores. The cell that holds a box's centre owns that object. A box is the centre's offset inside its
cell (sigmoid) and the width and height as fractions of the image (sigmoid). The loss sums, per image, the
objectness binary cross-entropy over all cells and, over the cells that own an object, ``box_weight`` times the
generalised-IoU loss plus an L1 loss on the normalised centre and size, plus the class cross-entropy. Decoding scores
each cell by objectness times its best class probability, then applies class-wise non-maximum suppression.

mAP@0.5 and mAP@[.5:.95] are computed by pycocotools. Beside them, ``test/map50_prior`` is the mAP@0.5 of a trivial
detector that knows no pixels: at every test image it predicts, for each class, the mean training box of that class,
scored by the class's share of the training objects.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from dlbench_plugins.detector.boxes import batched_nms, generalized_iou
from dlbench_plugins.detector.mean_ap import MeanAveragePrecision
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.nn import functional as F

from dlbench import LossMean, PictureBudget

SHOWN_IMAGES = 4


def conv_bn(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.LeakyReLU(0.1, inplace=True))


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.cat([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], dim=-1)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    return torch.cat([(b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]], dim=-1)


class GridDetector(L.LightningModule):
    def __init__(self, num_classes: int = 3, image_size: int = 64, width: int = 16, stages: int = 3,
                 box_weight: float = 2.0, lr: float = 3e-3, weight_decay: float = 5e-4,
                 score_threshold: float = 0.01, iou_threshold: float = 0.5, max_detections: int = 100,
                 class_names: list[str] | None = None) -> None:
        """
        Args:
            num_classes: Object classes (linked from the data).
            image_size: Side of the square input images in pixels (linked from the data); a multiple of 2**stages.
            width: Channels of the stem; each further stage doubles them, up to 8x.
            stages: Stride-2 stages of the backbone, the stem included; the grid is image_size / 2**stages cells
                a side.
            box_weight: Weight of the box losses (GIoU + L1) against objectness and class losses.
            lr: Peak AdamW learning rate (linear warm-up over 5% of the steps, then cosine decay).
            weight_decay: AdamW weight decay.
            score_threshold: Lowest score (objectness x class probability) a decoded detection keeps.
            iou_threshold: IoU above which non-maximum suppression drops the lower-scoring box of a class.
            max_detections: Most detections kept per image.
            class_names: Class labels for the pictures (linked from the data); class indices when not given.
        """
        super().__init__()
        for name, value in (("num_classes", num_classes), ("width", width), ("stages", stages),
                            ("max_detections", max_detections)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if image_size < 2**stages or image_size % 2**stages:
            raise ValueError(f"image_size must be a multiple of 2**stages = {2**stages}, got {image_size}")
        if lr <= 0 or box_weight < 0:
            raise ValueError(f"lr must be > 0 and box_weight >= 0, got {lr} and {box_weight}")
        if not (0 <= score_threshold < 1 and 0 < iou_threshold <= 1):
            raise ValueError(f"score_threshold must be in [0, 1) and iou_threshold in (0, 1], got {score_threshold} "
                             f"and {iou_threshold}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names must name all {num_classes} classes, got {len(class_names)}")
        self.save_hyperparameters()
        self.grid = image_size // 2**stages
        # A stride-2 stem, then stages of a stride-2 and a stride-1 convolution: the full-resolution layers that
        # would dominate the cost of a 64x64 input are skipped.
        layers, channels = [conv_bn(3, width, stride=2)], width
        for stage in range(1, stages):
            out = width * 2 ** min(stage, 3)
            layers += [conv_bn(channels, out, stride=2), conv_bn(out, out)]
            channels = out
        self.backbone = nn.Sequential(*layers, conv_bn(channels, channels))
        self.head = nn.Conv2d(channels, 5 + num_classes, 1)
        nn.init.constant_(self.head.bias[0], -4.0)  # few cells hold objects: start with objectness ~2%
        self.example_input_array = torch.zeros(2, 3, image_size, image_size)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        self.val_map, self.test_map, self.test_map_prior = (MeanAveragePrecision() for _ in range(3))
        # Sums and counts of the training boxes per class, for the prior baseline; saved with the checkpoint.
        self.register_buffer("prior_box_sum", torch.zeros(num_classes, 4))
        self.register_buffer("prior_count", torch.zeros(num_classes))
        self._shown: tuple | None = None
        self.pictures = PictureBudget()  # predicted boxes are a matplotlib figure: ~0.1 s to draw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw predictions ``(N, S, S, 5 + num_classes)``: objectness logit, box logits (4), class logits."""
        return self.head(self.backbone(x)).permute(0, 2, 3, 1)

    def decode_boxes(self, out: torch.Tensor) -> torch.Tensor:
        """Boxes ``(N, S, S, 4)`` as ``(x1, y1, x2, y2)`` fractions of the image, from the raw predictions."""
        s = self.grid
        cells = torch.arange(s, device=out.device, dtype=out.dtype)
        offsets = torch.stack(torch.meshgrid(cells, cells, indexing="xy"), dim=-1)  # (S, S, 2): (column, row)
        centre = (offsets + out[..., 1:3].sigmoid()) / s
        return cxcywh_to_xyxy(torch.cat([centre, out[..., 3:5].sigmoid()], dim=-1))

    def targets(self, boxes: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per cell: owns-an-object mask ``(N, S*S)``, its box ``(N, S*S, 4)`` and class ``(N, S*S)``.

        Built with scatter into one spare slot for padding entries, so no boolean indexing (no host sync). Two
        objects centred in one cell: one of them wins.
        """
        s = self.grid
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        col, row = (centre * s).long().clamp(0, s - 1).unbind(-1)
        cell = torch.where(labels >= 0, row * s + col, s * s)
        n = len(boxes)
        owner = boxes.new_zeros(n, s * s + 1).scatter_(1, cell, 1.0)[:, :-1]
        box = boxes.new_zeros(n, s * s + 1, 4).scatter_(1, cell[..., None].expand(-1, -1, 4), boxes)[:, :-1]
        cls = labels.new_zeros(n, s * s + 1).scatter_(1, cell, labels.clamp_min(0))[:, :-1]
        return owner, box, cls

    def loss(self, out: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = len(out)
        owner, true_box, true_cls = self.targets(boxes, labels)
        flat = out.flatten(1, 2)
        pred_box = self.decode_boxes(out).flatten(1, 2)
        objectness = F.binary_cross_entropy_with_logits(flat[..., 0], owner, reduction="sum")
        giou = (1 - generalized_iou(pred_box, true_box)) * owner
        l1 = (xyxy_to_cxcywh(pred_box) - xyxy_to_cxcywh(true_box)).abs().sum(-1) * owner
        classes = F.cross_entropy(flat[..., 5:].transpose(1, 2), true_cls, reduction="none") * owner
        return (objectness + self.hparams.box_weight * (giou.sum() + l1.sum()) + classes.sum()) / n

    @torch.no_grad()
    def detect(self, out: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` (K, 4) in pixels, ``scores`` (K,), ``labels`` (K,), best first, after NMS."""
        probs = out[..., 5:].softmax(-1).flatten(1, 2)
        cls_prob, labels = probs.max(-1)
        scores = out[..., 0].sigmoid().flatten(1, 2) * cls_prob
        boxes = self.decode_boxes(out).flatten(1, 2).clamp(0, 1) * self.hparams.image_size
        results = []
        for b, s, c in zip(boxes, scores, labels, strict=True):
            keep = s >= self.hparams.score_threshold
            b, s, c = b[keep], s[keep], c[keep]
            kept = batched_nms(b, s, c, self.hparams.iou_threshold)[: self.hparams.max_detections]
            results.append({"boxes": b[kept], "scores": s[kept], "labels": c[kept]})
        return results

    def truth(self, boxes: torch.Tensor, labels: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        size = self.hparams.image_size
        return [{"boxes": b[c >= 0] * size, "labels": c[c >= 0]} for b, c in zip(boxes, labels, strict=True)]

    def prior_detections(self, n: int) -> list[dict[str, torch.Tensor]]:
        """The baseline: every class's mean training box at every image, scored by the class's frequency."""
        seen = self.prior_count > 0
        boxes = (self.prior_box_sum[seen] / self.prior_count[seen, None]) * self.hparams.image_size
        scores = self.prior_count[seen] / self.prior_count.sum().clamp_min(1)
        labels = seen.nonzero().flatten()
        return [{"boxes": boxes, "scores": scores, "labels": labels}] * n

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, boxes, labels = batch
        out = self(images)
        loss = self.loss(out, boxes, labels)
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss, weight=len(images))  # update(): a call would also compute a per-batch value
        if stage != "train":  # the training loss is logged once an epoch, from on_train_epoch_end
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        if stage == "train":
            self._count_prior(boxes, labels)
        else:
            getattr(self, f"{stage}_map").update(self.detect(out), self.truth(boxes, labels))
        if stage == "test":
            self.test_map_prior.update(self.prior_detections(len(images)), self.truth(boxes, labels))
        return loss

    @torch.no_grad()
    def _count_prior(self, boxes: torch.Tensor, labels: torch.Tensor) -> None:
        onehot = F.one_hot(labels.clamp_min(0), self.hparams.num_classes).to(boxes.dtype) * (labels >= 0)[..., None]
        self.prior_box_sum += torch.einsum("nmc,nmk->ck", onehot, boxes)
        self.prior_count += onehot.sum(dim=(0, 1))

    def on_train_epoch_end(self) -> None:
        # The training loss is logged here, once an epoch, rather than from every training_step: the same epoch mean
        # at the same step, without Lightning's per-call logging cost on every batch.
        if self.train_loss.update_called:
            self.log("train/loss", self.train_loss, prog_bar=True)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")
        if batch_idx == 0:
            images, boxes, labels = batch
            shown = slice(0, SHOWN_IMAGES)
            self._shown = (images[shown], self.detect(self(images[shown])), self.truth(boxes[shown], labels[shown]))

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """The detections of each image after NMS, best first, padded to the batch's most: ``{"boxes": (N, K, 4)``
        corners in pixels of the model's ``image_size`` square, ``"scores": (N, K)``, ``"labels": (N, K)}`` with
        label -1 (score 0) where an image has fewer than K."""
        found = self.detect(self(batch[0]))
        k = max(1, max(len(d["scores"]) for d in found))
        ref = found[0]["boxes"]
        boxes = ref.new_zeros(len(found), k, 4)
        scores = ref.new_zeros(len(found), k)
        labels = torch.full((len(found), k), -1, dtype=torch.long, device=ref.device)
        for i, d in enumerate(found):
            n = len(d["scores"])
            boxes[i, :n], scores[i, :n], labels[i, :n] = d["boxes"], d["scores"], d["labels"]
        return {"boxes": boxes, "scores": scores, "labels": labels}

    def _log_map(self, stage: str) -> None:
        result = getattr(self, f"{stage}_map").compute()
        self.log(f"{stage}/map50", result["map50"])
        self.log(f"{stage}/map", result["map"])
        getattr(self, f"{stage}_map").reset()

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")
        shown, self._shown = self._shown, None
        if shown is None or not self.pictures.due(self.trainer) or not self.trainer.is_global_zero:
            return
        if isinstance(self.logger, TensorBoardLogger):
            with self.pictures.drawing():
                self.logger.experiment.add_figure("val/detections", self.detections_figure(*shown),
                                                  global_step=self.global_step)

    def on_test_epoch_end(self) -> None:
        self._log_map("test")
        self.log("test/map50_prior", self.test_map_prior.compute()["map50"])
        self.test_map_prior.reset()

    def detections_figure(self, images: torch.Tensor, detections: list[dict], truths: list[dict], min_score=0.3):
        """Images with their true boxes (green, dashed) and detections scoring at least ``min_score`` (red)."""
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        fig = Figure(figsize=(3 * len(images), 3.2), dpi=100)
        axes = fig.subplots(1, len(images), squeeze=False)[0]
        for ax, image, det, true in zip(axes, images.float().cpu(), detections, truths, strict=True):
            lo, hi = image.amin(), image.amax()
            ax.imshow(((image - lo) / (hi - lo).clamp_min(1e-6)).permute(1, 2, 0).numpy())
            ax.set_axis_off()
            for (x1, y1, x2, y2) in true["boxes"].tolist():
                ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec="lime", ls="--"))
            for (x1, y1, x2, y2), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                                      det["labels"].tolist(), strict=True):
                if score < min_score:
                    continue
                ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec="red"))
                ax.text(x1, y1 - 1, f"{self.class_names[label]} {score:.2f}", color="red", fontsize=7)
        fig.tight_layout()
        return fig

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, total // 20)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
