"""The rnn plugin: rows as time steps, the cell choice, directions and layers, bad arguments."""

from __future__ import annotations

import pytest
import torch
from dlbench_plugins.rnn.model import RNNClassifier
from torch import nn

from dlbench.testing import build


@pytest.mark.parametrize(("image_size", "in_channels", "num_classes"), [(8, 1, 10), (28, 1, 10), (32, 3, 7)])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_logits_for_every_image_shape_and_cell(image_size, in_channels, num_classes, cell):
    model = RNNClassifier(num_classes=num_classes, in_channels=in_channels, image_size=image_size, cell=cell,
                          hidden_size=8)
    assert model.rnn.input_size == in_channels * image_size
    assert model(torch.randn(3, in_channels, image_size, image_size)).shape == (3, num_classes)


@pytest.mark.parametrize(("cell", "module"), [("rnn", nn.RNN), ("gru", nn.GRU), ("lstm", nn.LSTM)])
def test_cell_picks_the_recurrent_layer(cell, module):
    assert type(RNNClassifier(image_size=8, cell=cell).rnn) is module


def test_unknown_cell_lists_the_choices():
    with pytest.raises(ValueError, match=r"^cell must be one of rnn, gru, lstm, got 'transformer'"):
        RNNClassifier(cell="transformer")


def test_each_time_step_is_one_row_of_every_channel():
    model = RNNClassifier(in_channels=3, image_size=4, hidden_size=5)
    seen = []
    model.rnn.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    x = torch.randn(2, 3, 4, 4)
    model(x)
    (rows,) = seen
    assert rows.shape == (2, 4, 12)  # (batch, image_size steps, in_channels * image_size features)
    for t in range(4):
        torch.testing.assert_close(rows[:, t], torch.cat([x[:, c, t] for c in range(3)], dim=1))


def test_the_order_of_rows_matters():
    torch.manual_seed(0)
    model = RNNClassifier(image_size=6, hidden_size=8).eval()
    x = torch.randn(2, 1, 6, 6)
    assert not torch.allclose(model(x), model(x.flip(2)))


@pytest.mark.parametrize(("bidirectional", "num_layers"), [(False, 1), (True, 1), (True, 3), (False, 2)])
def test_head_reads_the_last_layer_in_each_direction(bidirectional, num_layers):
    model = RNNClassifier(image_size=8, hidden_size=6, num_layers=num_layers, bidirectional=bidirectional, cell="gru")
    assert model.head[-1].in_features == 6 * (2 if bidirectional else 1)
    assert model.rnn.num_layers == num_layers
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_bidirectional_sees_the_first_rows_from_both_ends():
    """The backward direction's final state has read the first row last: changing only the first row changes it."""
    torch.manual_seed(0)
    model = RNNClassifier(image_size=8, hidden_size=6, bidirectional=True).eval()
    x = torch.randn(1, 1, 8, 8)
    y = x.clone()
    y[:, :, 0] += 1.0
    assert not torch.allclose(model(x), model(y))


def test_predict_step_returns_class_probabilities():
    model = RNNClassifier(num_classes=4, image_size=8).eval()
    probs = model.predict_step((torch.randn(5, 1, 8, 8), torch.zeros(5, dtype=torch.long)), 0)["probs"]
    assert probs.shape == (5, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"hidden_size": 0}, "hidden_size"),
    ({"num_layers": 0}, "num_layers"),
    ({"dropout": 1.0}, "dropout"),
    ({"lr": 0.0}, "lr"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"num_classes": 1}, "num_classes"),
    ({"image_size": 0}, "image_size"),
    ({"cell": "LSTM"}, "cell"),
])
def test_bad_arguments_name_themselves(kwargs, named):
    with pytest.raises(ValueError, match=rf"^{named} must"):
        RNNClassifier(**kwargs)


@pytest.mark.parametrize(("data", "features", "steps"), [("digits", 8, 8), ("fashion_mnist", 28, 28),
                                                         ("cifar10", 96, 32)])
def test_sequence_shape_is_linked_from_the_data(tmp_path, data, features, steps):
    model, _, _ = build("rnn", "--data", data, "--model.cell", "gru", log_dir=tmp_path)
    assert model.rnn.input_size == features
    assert model.example_input_array.shape[2] == steps
