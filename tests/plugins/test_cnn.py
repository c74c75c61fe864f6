"""The cnn plugin: blocks sized from the data, pooling limits, bad arguments, and the confusion matrix that a real
run writes to TensorBoard."""

from __future__ import annotations

import io

import pytest
import torch
from dlbench_plugins.cnn import model as cnn_model
from dlbench_plugins.cnn.model import CNNClassifier, confusion_figure
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator
from torch import nn

from dlbench.testing import QUIET, build


@pytest.mark.parametrize(("image_size", "in_channels", "num_classes"), [(8, 1, 10), (28, 1, 10), (32, 3, 7)])
@pytest.mark.parametrize(("channels", "hidden_size"), [((8,), 0), ((8, 16), 12), ((4, 4, 4), 8)])
def test_logits_for_every_image_shape(image_size, in_channels, num_classes, channels, hidden_size):
    model = CNNClassifier(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                          channels=channels, hidden_size=hidden_size)
    x = torch.randn(3, in_channels, image_size, image_size)
    features = model.features(x)
    side = image_size // 2 ** len(channels)
    assert features.shape == (3, channels[-1], side, side)  # each block halves the image
    assert model(x).shape == (3, num_classes)


def test_odd_image_sizes_round_down_in_pooling():
    model = CNNClassifier(image_size=7, channels=(4, 4))
    assert model(torch.randn(2, 1, 7, 7)).shape == (2, 10)


def test_predict_step_returns_class_probabilities():
    model = CNNClassifier(num_classes=4, image_size=8).eval()
    probs = model.predict_step((torch.randn(5, 1, 8, 8), torch.zeros(5, dtype=torch.long)), 0)["probs"]
    assert probs.shape == (5, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))


def test_batch_norm_follows_every_convolution():
    model = CNNClassifier(image_size=8, channels=(4, 6))
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d] * 2


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"channels": ()}, "channels"),
    ({"channels": (8, 0)}, "channels"),
    ({"image_size": 8, "channels": (4, 4, 4, 4)}, "channels"),  # 8 -> 4 -> 2 -> 1 -> nothing
    ({"kernel_size": 4}, "kernel_size"),
    ({"hidden_size": -1}, "hidden_size"),
    ({"dropout": -0.1}, "dropout"),
    ({"lr": -1.0}, "lr"),
    ({"num_classes": 1}, "num_classes"),
    ({"in_channels": 0}, "in_channels"),
])
def test_bad_arguments_name_themselves(kwargs, named):
    with pytest.raises(ValueError, match=rf"^{named} "):
        CNNClassifier(**kwargs)


def test_too_many_blocks_says_how_many_fit():
    CNNClassifier(image_size=8, channels=(4, 4, 4))  # 8 -> 1: still fits
    with pytest.raises(ValueError, match="at most 3 times"):
        CNNClassifier(image_size=8, channels=(4, 4, 4, 4))


def test_confusion_figure_shows_every_count_and_class_name():
    counts = torch.tensor([[5, 1, 0], [2, 7, 0], [0, 0, 9]])
    fig = confusion_figure(counts, ("cat", "dog", "bird"))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == [str(v) for v in counts.flatten().tolist()]
    # Each number sits in its cell: x is the predicted class (column), y the true class (row).
    assert [t.get_position() for t in ax.texts[:4]] == [(0, 0), (1, 0), (2, 0), (0, 1)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "bird"]


def test_confusion_figure_numbers_classes_without_names():
    fig = confusion_figure(torch.eye(4, dtype=torch.long), ())
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1", "2", "3"]


def test_confusion_figure_of_many_classes_stays_small_and_drops_the_numbers():
    fig = confusion_figure(torch.ones(100, 100, dtype=torch.long), ())
    assert max(fig.get_size_inches()) < 11
    assert not fig.axes[0].texts


def test_confusion_matrix_is_written_to_tensorboard(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(cnn_model, "confusion_figure", lambda counts, names: drawn.append(counts) or
                        confusion_figure(counts, names))
    model, datamodule, trainer = build("cnn", "--model.channels", "[4]", "--model.hidden_size", "0",
                                       "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
                                       *QUIET, log_dir=tmp_path)
    trainer.fit(model, datamodule=datamodule)
    (run_dir,) = (tmp_path / "cnn").glob("version_*")
    events = EventAccumulator(str(run_dir), size_guidance={IMAGES: 0})
    events.Reload()
    assert "val/confusion_matrix" in events.Tags()[IMAGES]
    images = events.Images("val/confusion_matrix")
    # One picture per validation epoch, none for the sanity check before training.
    assert [im.step for im in images] == [2, 4]
    # Each epoch's matrix counts that epoch's validation images once: the metric is reset between epochs.
    assert [int(c.sum()) for c in drawn] == [len(datamodule.splits["val"][1])] * 2
    picture = imread(io.BytesIO(images[-1].encoded_image_string), format="png")
    assert picture.shape[:2] == (images[-1].height, images[-1].width)
    assert picture.shape[0] > 100 and picture.shape[1] > 100
