"""The VAE plugin: shapes, the KL term and likelihoods against torch.distributions, the mean-image baseline,
argument checks."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from dlbench_plugins.images.data import DigitsDataModule
from dlbench_plugins.vae.model import VAE, kl_to_standard_normal
from torch.distributions import Bernoulli, Normal, kl_divergence

from dlbench.testing import QUIET, build


@pytest.mark.parametrize("size", [8, 28])
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_shapes(size, likelihood):
    model = VAE(in_channels=1, image_size=size, hidden_sizes=(32,), latent_dim=3, likelihood=likelihood)
    x = torch.randn(5, 1, size, size)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 3)
    assert model.decode(mu).shape == x.shape
    assert model(x).shape == x.shape
    assert model.nll(model.decode(mu), x).shape == (5,)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(7, 4, generator=g) * 2, torch.randn(7, 4, generator=g)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), expected)
    assert kl_to_standard_normal(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0  # posterior == prior


def test_likelihoods_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    x, out = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    gaussian = VAE(in_channels=1, image_size=8, likelihood="gaussian")
    expected = -Normal(out, 1.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian.nll(out, x), expected)

    bernoulli = VAE(in_channels=1, image_size=8, likelihood="bernoulli")
    bernoulli.pixel_lo.fill_(-1.0)
    bernoulli.pixel_hi.fill_(3.0)
    binary = (torch.rand(3, 1, 8, 8, generator=g) < 0.3).float()
    x = -1.0 + 4.0 * binary  # the data's range end to end: targets 0 and 1
    expected = -Bernoulli(logits=out).log_prob(binary).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli.nll(out, x), expected)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_baseline_is_the_training_mean_image(likelihood, tmp_path):
    dm = DigitsDataModule()
    model = VAE(in_channels=1, image_size=8, hidden_sizes=(16,), latent_dim=2, likelihood=likelihood)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    (first,) = trainer.validate(model, datamodule=dm, verbose=False)
    train = dm.normalize(dm.splits["train"][0])
    torch.testing.assert_close(model.to_image(model.mean_output.unsqueeze(0))[0], train.mean(0), atol=1e-3, rtol=0)
    # The mean image is the best single image: moving it anywhere costs likelihood on the training images.
    best = model.nll(model.mean_output.unsqueeze(0), train).mean()
    for _ in range(3):
        moved = model.mean_output + 0.1 * torch.randn_like(model.mean_output)
        assert model.nll(moved.unsqueeze(0), train).mean() > best
    (second,) = trainer.validate(model, datamodule=dm, verbose=False)
    assert first["val/loss"] == second["val/loss"]  # evaluation noise is seeded: checkpoints are picked fairly


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"likelihood": "poisson"}, "likelihood"),
    ({"beta": -1.0}, "beta"),
    ({"latent_dim": 0}, "latent_dim"),
    ({"hidden_sizes": (0,)}, "hidden_sizes"),
    ({"lr": -1.0}, "lr"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        VAE(**{"in_channels": 1, "image_size": 8, **kwargs})


@pytest.mark.skipif(not os.environ.get("DLBENCH_TEST_DATA"), reason="DLBENCH_TEST_DATA not set")
def test_runs_on_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fast_dev_run has no logger: anything it writes lands in the working directory
    root = Path(os.environ["DLBENCH_TEST_DATA"]) / "fashion-mnist"
    model, dm, trainer = build("vae", "--data", "fashion_mnist", "--data.root", str(root), "--data.batch_size", "512",
                               "--model.likelihood", "bernoulli", "--trainer.fast_dev_run", "1", *QUIET,
                               log_dir=tmp_path)
    assert (model.hparams.in_channels, model.hparams.image_size) == (1, 28)
    trainer.fit(model, datamodule=dm)
    assert model.mean_output.shape == (1, 28, 28)
    assert float(model.pixel_hi) > float(model.pixel_lo)
