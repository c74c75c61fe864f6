"""Frechet distance between image sets in the feature space of a small classifier trained on the same data.

The usual FID reads features from an Inception network trained on ImageNet; its weights cannot be downloaded here
and its 299x299 RGB input suits 8x8 or 28x28 grey images badly. Instead :class:`FeatureNet`, a two-convolution
classifier, is trained for a few hundred steps on the training split of the data at hand, and its penultimate
layer gives the features. The numbers are therefore only comparable between runs on the same data with the same
feature network settings, never with published FIDs: log them beside reference distances measured with the same
features (real against real, noise against real) so they mean something.

The distance itself is torchmetrics' :class:`~torchmetrics.image.fid.FrechetInceptionDistance` fed with features
computed beforehand (a custom feature module needs neither torch-fidelity nor its Inception weights).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

_TRAINED: dict[tuple, dict[str, torch.Tensor]] = {}  # fingerprint of data and settings -> trained weights


class FeatureNet(nn.Module):
    """Conv(3x3)-ReLU-MaxPool twice, a dense feature layer, a linear class head."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int, width: int = 16,
                 num_features: int = 64) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("num_features", num_features)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if image_size < 4:
            raise ValueError(f"image_size must be >= 4 for two 2x2 poolings, got {image_size}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.config = {"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes,
                       "width": width, "num_features": num_features}
        self.num_features = num_features
        side = image_size // 2 // 2
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * side * side, num_features), nn.ReLU(),
        )
        self.head = nn.Linear(num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> features ``(N, num_features)``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> class logits."""
        return self.head(self.body(x))


def _fingerprint(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int,
                 lr: float, seed: int) -> tuple:
    sample = images.flatten()[::13]  # a cheap second moment: no float64 copy of the whole set
    return (tuple(sorted(net.config.items())), tuple(images.shape), float(images.sum(dtype=torch.float64)),
            float(sample.square().sum(dtype=torch.float64)), int(labels.sum()), steps, batch_size, lr, seed)


def train_feature_net(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, steps: int = 300,
                      batch_size: int = 128, lr: float = 2e-3, seed: int = 0) -> None:
    """Train ``net`` in place to classify ``images`` (``(N, C, H, W)``, normalised) by ``labels``.

    Deterministic given the data and settings: the weights start from ``seed``, not from the caller's random state,
    which is left untouched. The result is remembered for the life of the process, so a second run on the same data
    (a test after the fit, the next test in a suite) reuses it.
    """
    key = _fingerprint(net, images, labels, steps, batch_size, lr, seed)
    if key not in _TRAINED:
        # Outside inference mode and with gradients on, whatever hook this is called from.
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = FeatureNet(**net.config).to(images.device)
            x, y = images.to(torch.float32, copy=True), labels.clone()  # float32 at any trainer precision
            opt = torch.optim.Adam(fresh.parameters(), lr=lr)
            g = torch.Generator().manual_seed(seed)
            for _ in range(steps):
                idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=g).to(x.device)
                loss = nn.functional.cross_entropy(fresh(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        _TRAINED[key] = {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}
    net.load_state_dict(_TRAINED[key])


class _Given(nn.Module):
    """The "feature extractor" of a distance fed with features: passes them through."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FrechetDistance(FrechetInceptionDistance):
    """Frechet distance between two sets of feature vectors: ``update(features, real=...)`` with ``(N, D)`` rows,
    ``compute()`` the distance between the Gaussians fitted to the real and the other rows. Statistics are summed
    across processes."""

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(feature=_Given(num_features), **kwargs)
