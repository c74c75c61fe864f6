"""Box geometry for detection, in torch (torchvision is not a dependency): IoU, generalised IoU, non-maximum
suppression. Boxes are ``(..., 4)`` tensors of corners ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``."""

from __future__ import annotations

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]).clamp_min(0)


def _intersection_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (bottom_right - top_left).clamp_min(0).prod(-1)
    return inter, box_area(a) + box_area(b) - inter


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` boxes: ``(N, M)``. Two empty boxes have IoU 0."""
    inter, union = _intersection_union(a[:, None], b[None, :])
    return inter / union.clamp_min(1e-9)


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise generalised IoU (Rezatofighi et al., 2019) of matching ``(..., 4)`` boxes, in [-1, 1]: the IoU
    minus the share of the smallest enclosing box that neither box covers. Unlike the IoU it still has a gradient
    when the boxes do not overlap."""
    inter, union = _intersection_union(a, b)
    enclosing = torch.cat([torch.minimum(a[..., :2], b[..., :2]), torch.maximum(a[..., 2:], b[..., 2:])], -1)
    hull = box_area(enclosing).clamp_min(1e-9)
    return inter / union.clamp_min(1e-9) - (hull - union) / hull


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first. A box is dropped when it
    overlaps an already kept, higher-scoring box with IoU above ``iou_threshold``."""
    order = scores.argsort(descending=True)
    iou = box_iou(boxes[order], boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold
    return order[keep]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """:func:`nms` within each class: boxes of different labels never suppress each other. Each class's boxes are
    moved apart by an offset larger than every coordinate, so one NMS pass does all classes."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offset = labels.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold)
