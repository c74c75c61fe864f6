"""COCO mean average precision as a torchmetrics metric, computed by pycocotools' COCOeval.

torchmetrics' own ``MeanAveragePrecision`` needs torchvision, which dlbench does not depend on; pycocotools (the
reference implementation, and torchmetrics' own backend) is enough once the ground truth and the detections are
handed to it as in-memory COCO objects.
"""

from __future__ import annotations

import contextlib
import io

import torch
from torchmetrics import Metric

_STATES = ("pred_boxes", "pred_scores", "pred_labels", "true_boxes", "true_labels")


class MeanAveragePrecision(Metric):
    """COCO box mAP over all images seen: ``{"map": mAP@[.5:.95], "map50": mAP@0.5}`` (101-point interpolated
    precision, up to 100 detections per image, all object sizes; -1 when there is no ground truth at all).

    ``update(preds, targets)`` takes one dict per image, as torchmetrics' detection metrics do: ``preds`` with
    ``boxes`` (K, 4) ``(x1, y1, x2, y2)`` in pixels, ``scores`` (K,) and ``labels`` (K,); ``targets`` with ``boxes``
    and ``labels``. States are lists of per-image tensors without reduction, so under DDP they are gathered image by
    image and stay aligned across the five lists.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx=None)

    def update(self, preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]]) -> None:
        for pred, target in zip(preds, targets, strict=True):
            self.pred_boxes.append(pred["boxes"].detach().float().reshape(-1, 4))
            self.pred_scores.append(pred["scores"].detach().float().reshape(-1))
            self.pred_labels.append(pred["labels"].detach().long().reshape(-1))
            self.true_boxes.append(target["boxes"].detach().float().reshape(-1, 4))
            self.true_labels.append(target["labels"].detach().long().reshape(-1))

    def compute(self) -> dict[str, torch.Tensor]:
        from pycocotools.cocoeval import COCOeval

        truth, detections = self._coco(with_scores=False), self._coco(with_scores=True)
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval reports its progress on stdout
            evaluation = COCOeval(truth, detections, iouType="bbox")
            evaluation.evaluate()
            evaluation.accumulate()
        # precision: (IoU thresholds 0.5:0.05:0.95, recall points, classes, area ranges, max detections); -1 marks
        # classes without ground truth. Area range 0 is "all", max detections -1 is 100, as COCO's summary uses.
        precision = torch.as_tensor(evaluation.eval["precision"][:, :, :, 0, -1]) if evaluation.eval else None
        return {"map": _mean_defined(precision), "map50": _mean_defined(None if precision is None else precision[0])}

    def _coco(self, with_scores: bool):
        from pycocotools.coco import COCO

        boxes, labels = (self.pred_boxes, self.pred_labels) if with_scores else (self.true_boxes, self.true_labels)
        annotations = []
        for image_id, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
            scores = self.pred_scores[image_id].tolist() if with_scores else [None] * len(image_boxes)
            for (x1, y1, x2, y2), label, score in zip(image_boxes.tolist(), image_labels.tolist(), scores,
                                                      strict=True):
                w, h = x2 - x1, y2 - y1
                # Ids start at 1: COCOeval treats a matched id of 0 as "unmatched".
                ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                       "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0}
                if with_scores:
                    ann["score"] = score
                annotations.append(ann)
        # Per image on the host: the states live on the training device, and an image may have no boxes at all.
        classes = sorted({int(c) for image in (*self.true_labels, *self.pred_labels) for c in image.tolist()})
        coco = COCO()
        coco.dataset = {"images": [{"id": i} for i in range(len(boxes))],
                        "categories": [{"id": c + 1} for c in classes], "annotations": annotations}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco


def _mean_defined(precision: torch.Tensor | None) -> torch.Tensor:
    if precision is None or not (precision > -1).any():
        return torch.tensor(-1.0)
    return precision[precision > -1].double().mean().float()
