"""Dense autoencoder: images squeezed through a small code and rebuilt, scored against PCA of the same size."""

from dlbench import Plugin

PLUGIN = Plugin(
    name="autoencoder",
    summary="dense autoencoder: image -> small code -> image, reconstruction MSE vs. PCA with the same code size",
    model="dlbench_plugins.autoencoder.model:Autoencoder",
    datamodule="dlbench_plugins.images.data:DigitsDataModule",
    data_kind="images",
    data_name="digits",
    data_source="scikit-learn's bundled copy of the UCI optical recognition of handwritten digits test set "
                "(1,797 8x8 images); CC BY 4.0 (Alpaydin, Kaynak); ships with scikit-learn, no download",
    monitor="val/mse",
    mode="min",
    trainer_defaults={"max_epochs": 150},
    tiny_args=("--model.hidden_sizes", "[8, 8]", "--model.latent_dim", "4"),
    learn_args=("--trainer.max_epochs", "15"),
    score="test/mse",
    baseline="test/mse_pca",
    baseline_label="PCA with as many components as the code",
)
