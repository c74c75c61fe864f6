"""Variational autoencoder: a probabilistic encoder and decoder trained on the evidence lower bound."""

from dlbench import Plugin

PLUGIN = Plugin(
    name="vae",
    summary="variational autoencoder (Kingma & Welling), Gaussian or Bernoulli pixels; negative ELBO vs. the "
            "best model whose code carries nothing (the mean image)",
    model="dlbench_plugins.vae.model:VAE",
    datamodule="dlbench_plugins.images.data:DigitsDataModule",
    data_kind="images",
    data_name="digits",
    data_source="scikit-learn's bundled copy of the UCI optical recognition of handwritten digits test set "
                "(1,797 8x8 images); CC BY 4.0 (Alpaydin, Kaynak); ships with scikit-learn, no download",
    monitor="val/loss",
    mode="min",
    trainer_defaults={"max_epochs": 150},
    tiny_args=("--model.hidden_sizes", "[8, 8]", "--model.latent_dim", "4"),
    learn_args=("--trainer.max_epochs", "20"),
    score="test/loss",
    baseline="test/recon_mean",
    baseline_label="a code that carries no information",
)
