"""The detector plugin: box geometry and NMS against hand-computed values, the mAP metric, grid targets and decoding,
the generated shapes, and the COCO loader on a tiny dataset written here (plus its malformed variants)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from dlbench_plugins.detector import shapes
from dlbench_plugins.detector.boxes import batched_nms, box_iou, generalized_iou, nms
from dlbench_plugins.detector.coco import CocoDataModule, load_coco
from dlbench_plugins.detector.data import ShapesDataModule, hflip
from dlbench_plugins.detector.mean_ap import MeanAveragePrecision
from dlbench_plugins.detector.model import GridDetector
from PIL import Image

from dlbench.core.errors import DlbenchError


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 4]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [1, 1, 2, 2]])
    expected = torch.tensor([[1 / 7, 1.0, 0.0, 1 / 4],
                             [4 / 16, 4 / 16, 0.0, 1 / 16]])
    torch.testing.assert_close(box_iou(a, b), expected)


def test_generalized_iou_hand_computed():
    a = torch.tensor([[0.0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 1, 1]])
    b = torch.tensor([[2.0, 0, 3, 1], [1, 1, 3, 3], [0, 0, 1, 1]])
    # Disjoint: IoU 0, hull 3, union 2 -> -1/3. Overlapping: 1/7 - (9 - 7)/9. Identical: 1.
    torch.testing.assert_close(generalized_iou(a, b), torch.tensor([-1 / 3, 1 / 7 - 2 / 9, 1.0]))


def test_nms_is_greedy_by_score():
    boxes = torch.tensor([[0.0, 0, 10, 10],  # 0: kept, the best
                          [1, 1, 11, 11],  # 1: IoU 81/119 = 0.68 with box 0: dropped
                          [20, 20, 30, 30],  # 2: alone: kept
                          [2, 2, 12, 12],  # 3: IoU 0.47 with box 0, 0.68 with the dropped box 1: kept (greedy)
                          [0, 0, 10, 9]])  # 4: IoU 0.9 with box 0: dropped
    scores = torch.tensor([0.9, 0.8, 0.3, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 3, 2]
    assert nms(boxes, scores, 0.95).tolist() == [0, 1, 3, 4, 2]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_batched_nms_keeps_overlapping_boxes_of_other_classes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]


def _targets():
    return [{"boxes": torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 55]]), "labels": torch.tensor([0, 2])},
            {"boxes": torch.tensor([[0.0, 0, 20, 20]]), "labels": torch.tensor([1])}]


def _map(preds, targets=None) -> dict[str, float]:
    metric = MeanAveragePrecision()
    metric.update(preds, targets or _targets())
    return {k: float(v) for k, v in metric.compute().items()}


def test_map_is_one_for_perfect_predictions_even_with_a_weak_false_positive():
    perfect = [{"boxes": t["boxes"], "scores": torch.ones(len(t["labels"])), "labels": t["labels"]} for t in _targets()]
    assert _map(perfect) == {"map": 1.0, "map50": 1.0}
    # A false positive scored below every true one does not lower precision at any recall level reached before it.
    extra = [dict(perfect[0]), perfect[1]]
    extra[0]["boxes"] = torch.cat([extra[0]["boxes"], torch.tensor([[0.0, 50, 10, 60]])])
    extra[0]["scores"] = torch.tensor([1.0, 1.0, 0.1])
    extra[0]["labels"] = torch.tensor([0, 2, 0])
    assert _map(extra) == {"map": 1.0, "map50": 1.0}


def test_map_drops_for_a_shifted_box():
    preds = [{"boxes": t["boxes"].clone(), "scores": torch.ones(len(t["labels"])), "labels": t["labels"]}
             for t in _targets()]
    preds[1]["boxes"] += torch.tensor([4.0, 0, 4, 0])  # IoU 16*20 / (24*20) = 0.67: a hit at 0.5, a miss from 0.7
    result = _map(preds)
    assert result["map50"] == 1.0
    # Class 1 scores at the thresholds 0.50, 0.55, 0.60, 0.65 only (4 of 10); classes 0 and 2 score 1.
    assert result["map"] == pytest.approx((1 + 1 + 0.4) / 3, abs=1e-6)
    preds[1]["labels"] = torch.tensor([2])  # right box, wrong class
    assert _map(preds)["map50"] == pytest.approx(2 / 3, abs=1e-6)


def test_map_without_predictions_is_zero_and_without_truth_undefined():
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    assert _map([empty, empty]) == {"map": 0.0, "map50": 0.0}
    no_truth = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    assert _map([empty], [no_truth]) == {"map": -1.0, "map50": -1.0}


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


def perfect_output(model: GridDetector, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Raw predictions that encode the given boxes exactly in the cells that own them."""
    s, c = model.grid, model.hparams.num_classes
    owner, box, cls = model.targets(boxes, labels)
    out = torch.full((len(boxes), s * s, 5 + c), -12.0)
    cx, cy = (box[..., 0] + box[..., 2]) / 2, (box[..., 1] + box[..., 3]) / 2
    cells = torch.arange(s * s)
    col, row = (cells % s).float(), (cells // s).float()
    out[..., 1] = _logit((cx * s - col).clamp(1e-4, 1 - 1e-4))
    out[..., 2] = _logit((cy * s - row).clamp(1e-4, 1 - 1e-4))
    out[..., 3] = _logit((box[..., 2] - box[..., 0]).clamp(1e-4, 1 - 1e-4))
    out[..., 4] = _logit((box[..., 3] - box[..., 1]).clamp(1e-4, 1 - 1e-4))
    out[..., 0] = torch.where(owner > 0, 12.0, -12.0)
    out[..., 5:] = torch.nn.functional.one_hot(cls, c) * 24.0 - 12.0
    return out.view(len(boxes), s, s, 5 + c)


def test_targets_and_decoding_agree():
    model = GridDetector(num_classes=3, image_size=64, width=4, stages=3)
    assert model.grid == 8 and model(torch.zeros(2, 3, 64, 64)).shape == (2, 8, 8, 8)
    boxes = torch.tensor([[[0.55, 0.20, 0.85, 0.40], [0.05, 0.70, 0.25, 0.95], [0, 0, 0, 0]],
                          [[0.30, 0.30, 0.70, 0.60], [0, 0, 0, 0], [0, 0, 0, 0]]])
    labels = torch.tensor([[2, 0, -1], [1, -1, -1]])
    owner, _, cls = model.targets(boxes, labels)
    # The first box's centre (0.70, 0.30) lies in column 5, row 2 of the 8x8 grid.
    assert owner.sum().item() == 3 and owner[0, 2 * 8 + 5] == 1 and cls[0, 2 * 8 + 5] == 2
    out = perfect_output(model, boxes, labels)
    detections = model.detect(out)
    truths = model.truth(boxes, labels)
    for det, true in zip(detections, truths, strict=True):
        assert sorted(det["labels"].tolist()) == sorted(true["labels"].tolist())  # one class per object here
        torch.testing.assert_close(det["boxes"][det["labels"].argsort()], true["boxes"][true["labels"].argsort()],
                                   atol=0.05, rtol=0)
    assert _map(detections, truths) == {"map": 1.0, "map50": 1.0}
    # The same predictions give a much lower loss than a model that knows nothing.
    assert model.loss(out, boxes, labels) < 0.1 * model.loss(torch.zeros_like(out), boxes, labels)


def test_prior_baseline_predicts_the_mean_training_box_per_class():
    model = GridDetector(num_classes=2, image_size=64, width=4, stages=3)
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], [[0.2, 0.2, 0.4, 0.4], [0, 0, 0, 0]]])
    model._count_prior(boxes, torch.tensor([[0, 1], [0, -1]]))
    (prior,) = model.prior_detections(1)
    torch.testing.assert_close(prior["boxes"], torch.tensor([[0.1, 0.1, 0.45, 0.45], [0.5, 0.5, 1.0, 1.0]]) * 64)
    torch.testing.assert_close(prior["scores"], torch.tensor([2 / 3, 1 / 3]))


def test_model_argument_errors():
    with pytest.raises(ValueError, match="image_size must be a multiple of 2\\*\\*stages = 8, got 60"):
        GridDetector(image_size=60, stages=3)
    with pytest.raises(ValueError, match="class_names must name all 3 classes"):
        GridDetector(num_classes=3, class_names=["a"])
    with pytest.raises(ValueError, match="width must be >= 1"):
        GridDetector(width=0)


def test_detection_figure_draws_true_boxes_and_confident_detections():
    model = GridDetector(num_classes=3, image_size=64, width=4, stages=3, class_names=["c", "s", "t"])
    det = {"boxes": torch.tensor([[1.0, 1, 9, 9], [2, 2, 8, 8]]), "scores": torch.tensor([0.9, 0.1]),
           "labels": torch.tensor([0, 1])}
    true = {"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([0])}
    fig = model.detections_figure(torch.rand(1, 3, 64, 64), [det], [true])
    ax = fig.axes[0]
    assert len(ax.patches) == 2 and [t.get_text() for t in ax.texts] == ["c 0.90"]


def test_shapes_are_exact_non_overlapping_and_seeded():
    images, boxes, labels = shapes.render(60, 64, 4, seed=3)
    assert images.shape == (60, 3, 64, 64) and images.dtype == torch.uint8
    counts = (labels >= 0).sum(1)
    assert counts.min() >= 1 and counts.max() <= 4 and labels.max() < len(shapes.CLASSES)
    valid = labels >= 0
    b = boxes[valid]
    sizes = b[:, 2:] - b[:, :2]
    assert (b >= 0).all() and (b <= 1).all()
    assert (sizes >= shapes.MIN_SIZE - 1e-6).all() and (sizes <= shapes.MAX_SIZE + 1e-6).all()
    for i in range(60):
        own = boxes[i][labels[i] >= 0]
        iou = box_iou(own, own)
        assert (iou - torch.eye(len(own))).abs().max() == 0  # no two boxes of an image overlap
    # A square fills its box: inside, the pixels scatter around one colour by about the noise level only.
    i, k = next((i, k) for i in range(60) for k in range(4) if labels[i, k] == shapes.CLASSES.index("square"))
    x1, y1, x2, y2 = (boxes[i, k] * 64).tolist()
    inside = images[i, :, math.ceil(y1) + 1 : math.floor(y2) - 1, math.ceil(x1) + 1 : math.floor(x2) - 1].float()
    assert inside.flatten(1).std(dim=1).max() < 2 * shapes.NOISE_STD
    again = shapes.render(60, 64, 4, seed=3)
    assert torch.equal(again[0], images) and torch.equal(again[1], boxes)


def test_hflip_mirrors_boxes_with_their_pixels():
    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    images[0, :, 2:4, 1:3] = 255  # object in columns 1-2 -> box x 1/8..3/8
    boxes = torch.tensor([[[1 / 8, 2 / 8, 3 / 8, 4 / 8], [0, 0, 0, 0]]])
    flipped, fboxes = hflip(images, boxes)
    assert flipped[0, 0, 2:4, 5:7].eq(255).all()
    torch.testing.assert_close(fboxes, torch.tensor([[[5 / 8, 2 / 8, 7 / 8, 4 / 8], [0, 0, 0, 0]]]))


def test_shapes_datamodule_batches():
    dm = ShapesDataModule(num_train=20, num_val=8, num_test=8, max_objects=3, batch_size=4)
    assert (dm.num_classes, dm.image_size, dm.class_names) == (3, 64, ["circle", "square", "triangle"])
    dm.setup()
    x, b, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and b.shape == (4, 3, 4) and y.shape == (4, 3)
    with pytest.raises(ValueError, match="num_train"):
        ShapesDataModule(num_train=0)


# --- COCO format ---------------------------------------------------------------------------------------------------

SIZES = [(40, 20), (20, 40), (30, 30), (32, 24), (24, 32), (30, 30), (40, 20), (20, 40), (30, 30), (36, 36)]
COLOURS = {3: (255, 0, 0), 7: (0, 0, 255)}


def write_coco(root: Path, n: int = 10) -> dict:
    """``n`` PNG images of different sizes under ``img/``, each with one filled rectangle (category 3 or 7), a crowd
    box, and ``train.json`` beside ``img/``."""
    (root / "img").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        cat = 3 if i % 2 == 0 else 7
        box = [w // 4, h // 4, w // 2, h // 2]
        pixels = np.full((h, w, 3), 40, dtype=np.uint8)
        pixels[box[1] : box[1] + box[3], box[0] : box[0] + box[2]] = COLOURS[cat]
        Image.fromarray(pixels).save(root / "img" / f"{i:03d}.png")
        images.append({"id": 100 + i, "file_name": f"img/{i:03d}.png", "width": w, "height": h})
        annotations.append({"id": 1 + i, "image_id": 100 + i, "category_id": cat, "bbox": box, "iscrowd": 0})
    annotations.append({"id": 999, "image_id": 100, "category_id": 7, "bbox": [0, 0, 5, 5], "iscrowd": 1})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 7, "name": "blue"}, {"id": 3, "name": "red"}]}
    (root / "train.json").write_text(json.dumps(data))
    return data


def test_coco_letterboxes_images_and_scales_boxes(tmp_path):
    write_coco(tmp_path)
    dm = CocoDataModule(annotations=str(tmp_path / "train.json"), images=str(tmp_path), image_size=64,
                        val_fraction=0.2, test_fraction=0.2)
    assert dm.num_classes == 2 and dm.class_names == ["red", "blue"]  # category ids 3, 7 -> classes 0, 1
    splits = dm.load()
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [6, 2, 2]
    images, boxes, labels = splits["train"]
    assert labels.shape[1] == 1  # the crowd annotation is skipped
    for img, box, label in zip(images, boxes, labels, strict=True):
        x1, y1, x2, y2 = (box[0] * 64).round().long().tolist()
        inside = img[:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].float().mean(dim=(1, 2))
        expected = torch.tensor(COLOURS[3] if label[0] == 0 else COLOURS[7], dtype=torch.float32)
        assert (inside - expected).abs().max() < 10  # the drawn rectangle lands inside the scaled box
        assert (box[0, 2] - box[0, 0]) * 64 == pytest.approx(32, abs=0.01) or \
            (box[0, 3] - box[0, 1]) * 64 == pytest.approx(32, abs=0.01)  # half of the longer side (64) is 32


def test_coco_letterbox_arithmetic(tmp_path):
    write_coco(tmp_path, n=3)
    dm = CocoDataModule(annotations=str(tmp_path / "train.json"), image_size=64, val_fraction=0.34,
                        test_fraction=0.33)
    images, boxes, labels = load_coco(dm.coco, tmp_path, 64, tmp_path / "train.json")
    # Image 0 is 40x20 -> scale 1.6, 64x32 centred with 16 rows of padding; bbox [10, 5, 20, 10] -> (16, 24, 48, 40).
    torch.testing.assert_close(boxes[0, 0] * 64, torch.tensor([16.0, 24.0, 48.0, 40.0]))
    assert images[0, :, :16].eq(114).all() and images[0, :, 48:].eq(114).all()
    # Image 1 is 20x40 -> 32x64 with 16 columns of padding; bbox [5, 10, 10, 20] -> (24, 16, 40, 48).
    torch.testing.assert_close(boxes[1, 0] * 64, torch.tensor([24.0, 16.0, 40.0, 48.0]))
    assert labels[:, 0].tolist() == [0, 1, 0]


def _broken(tmp_path: Path, change) -> Path:
    data = write_coco(tmp_path, n=4)
    change(data)
    (tmp_path / "train.json").write_text(json.dumps(data))
    return tmp_path / "train.json"


def _setup(path: Path):
    dm = CocoDataModule(annotations=str(path), val_fraction=0.25, test_fraction=0.25)
    dm.setup()


def test_coco_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [')
    with pytest.raises(DlbenchError, match=r"bad\.json is not valid JSON"):
        CocoDataModule(annotations=str(path))
    path.write_text(json.dumps({"images": [], "categories": [{"id": 1}]}))
    with pytest.raises(DlbenchError, match="'annotations' is missing or not a list"):
        CocoDataModule(annotations=str(path))
    path.write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1}]}))
    with pytest.raises(DlbenchError, match="images\\[0\\] has no 'file_name'"):
        CocoDataModule(annotations=str(path))
    with pytest.raises(DlbenchError, match="does not exist"):
        CocoDataModule(annotations=str(tmp_path / "missing.json"))


def test_coco_missing_image_names_the_file(tmp_path):
    path = _broken(tmp_path, lambda d: d["images"][2].update(file_name="gone.png"))
    with pytest.raises(DlbenchError, match=r"gone\.png does not exist"):
        _setup(path)


def test_coco_corrupt_image(tmp_path):
    path = _broken(tmp_path, lambda d: None)
    (tmp_path / "img" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DlbenchError, match=r"001\.png cannot be decoded"):
        _setup(path)


@pytest.mark.parametrize(("bbox", "message"), [([30, 5, 20, 10], "lies outside the 40x20 image"),
                                               ([-5, 0, 10, 10], "lies outside"),
                                               ([1, 1, 0, 5], "width or height <= 0"),
                                               ([1, 1, "w", 5], "not four finite numbers")])
def test_coco_bad_box_names_the_annotation(tmp_path, bbox, message):
    path = _broken(tmp_path, lambda d: d["annotations"][0].update(bbox=bbox))
    with pytest.raises(DlbenchError, match=rf"annotation 1 of 000\.png: bbox .* {message}"):
        _setup(path)


def test_coco_unknown_ids_and_size_mismatch(tmp_path):
    path = _broken(tmp_path, lambda d: d["annotations"][1].update(category_id=5))
    with pytest.raises(DlbenchError, match="annotation 2: category_id 5 is not among"):
        _setup(path)
    path = _broken(tmp_path / "b", lambda d: d["annotations"][1].update(image_id=42))
    with pytest.raises(DlbenchError, match="annotation 2: image_id 42 is not among"):
        _setup(path)
    path = _broken(tmp_path / "c", lambda d: d["images"][0].update(width=41))
    with pytest.raises(DlbenchError, match="is 40x20 pixels but the file says 41x20"):
        _setup(path)


def test_coco_without_annotations_says_what_to_give():
    with pytest.raises(DlbenchError, match="give --data.annotations"):
        CocoDataModule()
