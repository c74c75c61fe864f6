"""Generative adversarial network: a generator learns to draw images a discriminator cannot tell from real ones."""

from dlbench import Plugin

PLUGIN = Plugin(
    name="gan",
    summary="GAN (MLP or DCGAN-style transposed convolutions), Frechet distance in a small classifier's features "
            "vs. real-vs-real and noise-vs-real",
    model="dlbench_plugins.gan.model:GAN",
    datamodule="dlbench_plugins.images.data:DigitsDataModule",
    data_kind="images",
    data_name="digits",
    data_source="scikit-learn's bundled copy of the UCI optical recognition of handwritten digits test set "
                "(1,797 8x8 images); CC BY 4.0 (Alpaydin, Kaynak); ships with scikit-learn, no download",
    monitor="val/fid",
    mode="min",
    trainer_defaults={"max_epochs": 100},
    tiny_args=("--model.generator_sizes", "[8, 8]", "--model.discriminator_sizes", "[8, 8]",
               "--model.latent_dim", "8", "--model.feature_steps", "5"),
    learn_args=("--trainer.max_epochs", "15"),
    score="test/fid",
    baseline="test/fid_noise",
    baseline_label="uniform noise images",
)
