"""The GAN plugin and the Frechet distance it is scored with: shapes, the distance against its closed form and a
direct computation, the feature classifier, repeatable samples, argument checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from dlbench_plugins.gan.model import GAN
from dlbench_plugins.images.data import DigitsDataModule
from scipy import linalg

from dlbench import DlbenchError
from dlbench.testing import QUIET, build
from dlbench.train import fid
from dlbench.train.fid import FeatureNet, FrechetDistance, train_feature_net


def distance(real: torch.Tensor, other: torch.Tensor) -> float:
    metric = FrechetDistance(real.shape[1])
    metric.update(real, real=True)
    metric.update(other, real=False)
    return float(metric.compute())


def test_frechet_distance_of_a_set_to_itself_is_zero_and_grows_with_a_shift():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert abs(distance(x, x)) < 1e-3
    shift = torch.full((8,), 0.5)
    # Same covariance, means apart by `shift`: the distance is exactly |shift|^2.
    assert distance(x, x + shift) == pytest.approx(float(shift.square().sum()), rel=1e-3)
    assert distance(x, x + 2 * shift) > distance(x, x + shift)


def test_frechet_distance_matches_the_formula():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(400, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    b = torch.randn(300, 5, generator=g, dtype=torch.float64) * 2 + 1
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert distance(a.float(), b.float()) == pytest.approx(expected, rel=1e-3)


def test_feature_net_learns_and_leaves_the_random_state_alone():
    dm = DigitsDataModule()
    dm.setup("fit")
    (x, y), (xv, yv) = dm.splits["train"], dm.splits["val"]
    x, xv = dm.normalize(x), dm.normalize(xv)
    net, again = FeatureNet(1, 8, 10), FeatureNet(1, 8, 10)
    state = torch.get_rng_state()
    train_feature_net(net, x, y, steps=150)
    assert torch.equal(torch.get_rng_state(), state)
    fid._TRAINED.clear()  # train again rather than reuse the remembered weights
    train_feature_net(again, x, y, steps=150)
    for key, value in net.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    with torch.no_grad():
        assert (net(xv).argmax(1) == yv).float().mean() > 0.8
        assert net.features(xv).shape == (len(xv), net.num_features)


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
@pytest.mark.parametrize("size", [8, 28])
def test_shapes_and_range(arch, size):
    model = GAN(in_channels=1, image_size=size, arch=arch, latent_dim=16, generator_sizes=(32,),
                discriminator_sizes=(32,), channels=8).eval()
    model.pixel_lo.fill_(-0.5)
    model.pixel_hi.fill_(3.0)
    images = model(torch.randn(6, 16))
    assert images.shape == (6, 1, size, size)
    assert images.min() >= -0.5 and images.max() <= 3.0
    assert model.discriminator(images).shape == (6, 1)


def test_predictions_are_repeatable():
    model = GAN(in_channels=1, image_size=8, latent_dim=8, generator_sizes=(16,), discriminator_sizes=(16,)).eval()
    seeds = torch.arange(5) + 3
    first = model.predict_step((seeds,), 0)["images"]
    assert first.shape == (5, 1, 8, 8)
    torch.rand(10)  # whatever happens to the global random state in between
    torch.testing.assert_close(model.predict_step((seeds,), 7)["images"], first)  # not tied to the batch index
    torch.testing.assert_close(model.predict_step((seeds[2:],), 0)["images"], first[2:])  # nor to the batch
    assert not torch.equal(model.predict_step((seeds + 1,), 0)["images"][:4], first[:4])
    torch.testing.assert_close(model.predict_step((seeds + 1,), 0)["images"][:4], first[1:])


def test_predict_refuses_images_but_draws_for_labelled_batches():
    model = GAN(in_channels=1, image_size=8, latent_dim=8, generator_sizes=(16,), discriminator_sizes=(16,)).eval()
    with pytest.raises(DlbenchError, match="drop --input"):  # what `dlbench predict --input` reads: images alone
        model.predict_step((torch.zeros(2, 1, 8, 8),), 0)
    batch = (torch.zeros(5, 1, 8, 8), torch.zeros(5, dtype=torch.long))  # the data module's, as trainer.predict gives
    first = model.predict_step(batch, 3)["images"]
    assert first.shape == (5, 1, 8, 8)
    torch.testing.assert_close(model.predict_step(batch, 3)["images"], first)
    assert not torch.equal(model.predict_step(batch, 4)["images"], first)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"arch": "vit"}, "arch"),
    ({"arch": "dcgan", "image_size": 10}, "image_size"),
    ({"generator_sizes": ()}, "generator_sizes"),
    ({"discriminator_sizes": (8, 0)}, "discriminator_sizes"),
    ({"dropout": 1.0}, "dropout"),
    ({"latent_dim": 0}, "latent_dim"),
    ({"feature_steps": 0}, "feature_steps"),
    ({"num_classes": 1}, "num_classes"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GAN(**{"in_channels": 1, "image_size": 8, **kwargs})


@pytest.mark.skipif(not os.environ.get("DLBENCH_TEST_DATA"), reason="DLBENCH_TEST_DATA not set")
def test_dcgan_runs_on_mnist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fast_dev_run has no logger: anything it writes lands in the working directory
    root = Path(os.environ["DLBENCH_TEST_DATA"]) / "mnist"
    model, dm, trainer = build("gan", "--data", "mnist", "--data.root", str(root), "--data.batch_size", "256",
                               "--model.arch", "dcgan", "--model.channels", "8", "--model.feature_steps", "5",
                               "--trainer.fast_dev_run", "1", *QUIET, log_dir=tmp_path)
    assert (model.hparams.in_channels, model.hparams.image_size) == (1, 28)
    trainer.fit(model, datamodule=dm)
    assert model.predict_step((torch.arange(3),), 0)["images"].shape == (3, 1, 28, 28)
