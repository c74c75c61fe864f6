"""The mlp plugin: layer sizes follow the data, dropout acts only in training, bad arguments are named."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from dlbench_plugins.mlp.model import MLPClassifier
from torch import nn

from dlbench.cli import main
from dlbench.testing import build

IMAGE_SHAPES = [(8, 1, 10), (28, 1, 10), (32, 3, 7)]  # digits, MNIST, CIFAR-10-like with 7 classes


@pytest.mark.parametrize(("image_size", "in_channels", "num_classes"), IMAGE_SHAPES)
@pytest.mark.parametrize("hidden_sizes", [(), (16,), (32, 16, 8)])
def test_logits_for_every_image_shape(image_size, in_channels, num_classes, hidden_sizes):
    model = MLPClassifier(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                          hidden_sizes=hidden_sizes)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    widths = [in_channels * image_size**2, *hidden_sizes, num_classes]
    assert [(m.in_features, m.out_features) for m in linears] == list(pairwise(widths))
    assert model(torch.randn(5, in_channels, image_size, image_size)).shape == (5, num_classes)


def test_dropout_only_in_training():
    model = MLPClassifier(image_size=8, hidden_sizes=(64,), dropout=0.5)
    x = torch.randn(4, 1, 8, 8)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_predict_step_returns_class_probabilities():
    model = MLPClassifier(num_classes=3, image_size=8).eval()
    probs = model.predict_step((torch.randn(6, 1, 8, 8), torch.zeros(6, dtype=torch.long)), 0)["probs"]
    assert probs.shape == (6, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(6))


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"hidden_sizes": (16, 0)}, "hidden_sizes"),
    ({"activation": "softmax"}, "activation"),
    ({"dropout": 1.0}, "dropout"),
    ({"lr": 0.0}, "lr"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"num_classes": 1}, "num_classes"),
    ({"image_size": 0}, "image_size"),
    ({"in_channels": 0}, "in_channels"),
])
def test_bad_arguments_name_themselves(kwargs, named):
    with pytest.raises(ValueError, match=rf"^{named} must"):
        MLPClassifier(**kwargs)


def test_activation_error_lists_the_choices():
    with pytest.raises(ValueError, match="relu, gelu, silu, tanh, leaky_relu"):
        MLPClassifier(activation="swish")


@pytest.mark.parametrize(("data", "size", "channels"), [("digits", 8, 1), ("mnist", 28, 1), ("cifar10", 32, 3)])
def test_sizes_are_linked_from_the_data(tmp_path, data, size, channels):
    model, _, _ = build("mlp", "--data", data, log_dir=tmp_path)
    assert (model.hparams.image_size, model.hparams.in_channels, model.hparams.num_classes) == (size, channels, 10)
    assert model.net[1].in_features == channels * size * size


def test_bad_argument_on_the_command_line_is_a_short_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLBENCH_LOG_DIR", str(tmp_path))
    assert main(["fit", "--model", "mlp", "--model.dropout", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "dropout must be in [0, 1), got 1.5" in err
    assert "Traceback" not in err
