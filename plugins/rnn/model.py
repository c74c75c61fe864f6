"""A recurrent classifier that reads an image row by row: each of the ``image_size`` rows is one time step of
``in_channels * image_size`` features, and the final hidden state of the last layer is classified.

Follows the source articles' recurrent examples (an ``nn.RNN`` of 128 hidden units in one layer with a linear head
on the last state, and an LSTM); the cell is a choice (plain RNN, GRU or LSTM), the LSTM by default. Trained with
AdamW at a higher peak learning rate than the articles' 1e-3, decayed to zero over the run (a cosine), so that the
short default runs converge.
"""

from __future__ import annotations

import torch
from dlbench_plugins.classifier import Classifier
from torch import nn

from dlbench import full_precision

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class RNNClassifier(Classifier):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, cell: str = "lstm",
                 hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.1,
                 lr: float = 3e-3, weight_decay: float = 1e-4) -> None:
        """
        Args:
            num_classes: Classes to tell apart (linked from the data).
            in_channels: Channels of the input images (linked from the data).
            image_size: Height and width of the square input images: the sequence length (linked from the data).
            cell: Recurrent cell: rnn (Elman, tanh), gru or lstm.
            hidden_size: Units of each recurrent layer (per direction).
            num_layers: Stacked recurrent layers.
            bidirectional: Also read the rows bottom to top and join both final states.
            dropout: Dropout between recurrent layers and before the output layer.
            lr: Peak AdamW learning rate (cosine decay over the run).
            weight_decay: AdamW weight decay.
        """
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        for name, value in (("in_channels", in_channels), ("image_size", image_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()

        self.rnn = CELLS[cell](in_channels * image_size, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        directions = 2 if bidirectional else 1
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(directions * hidden_size, num_classes))
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)

        self.init_metrics(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> class logits ``(N, num_classes)``."""
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 1, 3).reshape(n, h, c * w)  # time step = one row, all channels side by side
        _, state = full_precision(self.rnn, rows)  # oneDNN's CPU RNNs have no bf16 kernel; cuDNN's run as is
        h_n = state[0] if isinstance(state, tuple) else state  # the LSTM returns (h_n, c_n)
        directions = 2 if self.hparams.bidirectional else 1
        last = h_n[-directions:]  # (directions, N, hidden): the last layer's final state in each direction
        return self.head(last.transpose(0, 1).reshape(n, -1))
