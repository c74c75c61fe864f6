"""The autoencoder plugin: shapes, the PCA baseline, argument checks."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from dlbench_plugins.autoencoder.model import Autoencoder, fit_pca, pca_reconstruct
from dlbench_plugins.images.data import DigitsDataModule

from dlbench.testing import QUIET, build


@pytest.mark.parametrize("size", [8, 28])
def test_shapes(size):
    model = Autoencoder(in_channels=1, image_size=size, hidden_sizes=(32, 16), latent_dim=6)
    x = torch.randn(5, 1, size, size)
    assert model.encode(x).shape == (5, 6)
    assert model(x).shape == x.shape


def test_pca_is_exact_on_data_in_a_subspace():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(40, 3, generator=g))[0]  # 3 orthonormal directions in 40 dimensions
    offset = torch.randn(40, generator=g)
    train = torch.randn(500, 3, generator=g) @ basis.T + offset
    test = torch.randn(100, 3, generator=g) * 5 @ basis.T + offset  # new points, further out, same subspace
    mean, components = fit_pca(train, 3)
    assert components.shape == (40, 3)
    torch.testing.assert_close(components.T @ components, torch.eye(3), atol=1e-5, rtol=0)
    assert (pca_reconstruct(test, mean, components) - test).square().mean() < 1e-9
    # One component short, the error is the variance along the dropped direction: clearly not zero.
    mean2, components2 = fit_pca(train, 2)
    assert (pca_reconstruct(test, mean2, components2) - test).square().mean() > 1e-2


def test_pca_matches_scikit_learn():
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 20, generator=g) @ torch.randn(20, 20, generator=g)
    mean, components = fit_pca(x, 5)
    reference = PCA(n_components=5).fit(x.numpy())
    expected = torch.from_numpy(reference.inverse_transform(reference.transform(x.numpy()))).float()
    torch.testing.assert_close(pca_reconstruct(x, mean, components), expected, atol=1e-3, rtol=1e-3)


def test_baseline_is_fitted_on_the_training_split(tmp_path):
    dm = DigitsDataModule()
    model = Autoencoder(in_channels=1, image_size=8, latent_dim=5)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    (metrics,) = trainer.validate(model, datamodule=dm, verbose=False)
    train = dm.normalize(dm.splits["train"][0]).flatten(1)
    mean, components = fit_pca(train, 5)
    torch.testing.assert_close(model.pca_mean, mean)
    val = dm.normalize(dm.splits["val"][0]).flatten(1)
    expected = (pca_reconstruct(val, mean, components) - val).square().mean()
    assert metrics["val/mse_pca"] == pytest.approx(float(expected), rel=1e-4)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"latent_dim": 0}, "latent_dim"),
    ({"latent_dim": 64}, "latent_dim"),  # as many numbers as an 8x8 image: nothing to compress
    ({"hidden_sizes": (16, 0)}, "hidden_sizes"),
    ({"lr": 0.0}, "lr"),
    ({"image_size": 0}, "image_size"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Autoencoder(**{"in_channels": 1, "image_size": 8, **kwargs})


@pytest.mark.skipif(not os.environ.get("DLBENCH_TEST_DATA"), reason="DLBENCH_TEST_DATA not set")
def test_runs_on_mnist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fast_dev_run has no logger: anything it writes lands in the working directory
    root = Path(os.environ["DLBENCH_TEST_DATA"]) / "mnist"
    model, dm, trainer = build("autoencoder", "--data", "mnist", "--data.root", str(root), "--data.batch_size", "512",
                               "--trainer.fast_dev_run", "1", *QUIET, log_dir=tmp_path)
    assert (model.hparams.in_channels, model.hparams.image_size) == (1, 28)
    trainer.fit(model, datamodule=dm)
    assert model.pca_components.shape == (784, model.hparams.latent_dim)
    assert bool(model.pca_fitted)
