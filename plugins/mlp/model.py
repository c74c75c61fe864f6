"""A feed-forward classifier: the image flattened into one vector, fully connected layers with dropout, a linear
head over the classes.

Follows the source articles' feed-forward example (two hidden ReLU layers with dropout, trained with Adam); the
hidden layers are wider here (256 and 128 units instead of 64 and 32) because the inputs are whole images, and the
optimiser is AdamW with the learning rate decayed to zero over the run (a cosine), so that short runs end settled.
Test accuracy is logged next to the majority-class baseline on the same split.
"""

from __future__ import annotations

import torch
from dlbench_plugins.classifier import Classifier
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
                                           "leaky_relu": nn.LeakyReLU}


class MLPClassifier(Classifier):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 hidden_sizes: tuple[int, ...] = (256, 128), activation: str = "relu", dropout: float = 0.2,
                 lr: float = 1e-3, weight_decay: float = 1e-4) -> None:
        """
        Args:
            num_classes: Classes to tell apart (linked from the data).
            in_channels: Channels of the input images (linked from the data).
            image_size: Height and width of the square input images (linked from the data).
            hidden_sizes: Units of each hidden layer, input side first; empty for a linear classifier.
            activation: Non-linearity after each hidden layer: relu, gelu, silu, tanh or leaky_relu.
            dropout: Dropout after each hidden layer.
            lr: Peak AdamW learning rate (cosine decay over the run).
            weight_decay: AdamW weight decay.
        """
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        for name, value in (("in_channels", in_channels), ("image_size", image_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must all be >= 1, got {list(hidden_sizes)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()

        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)

        self.init_metrics(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> class logits ``(N, num_classes)``."""
        return self.net(x)
