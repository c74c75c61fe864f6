"""Convolutional image classifier: conv + batch norm + pooling blocks, a dense head, a confusion matrix picture."""

from dlbench import Plugin

PLUGIN = Plugin(
    name="cnn",
    summary="convolutional classifier: conv/batch-norm/pool blocks -> dense head -> classes (vs. majority class)",
    model="dlbench_plugins.cnn.model:CNNClassifier",
    datamodule="dlbench_plugins.images.data:DigitsDataModule",
    data_kind="images",
    data_name="digits",
    data_source="scikit-learn's bundled copy of the UCI optical recognition of handwritten digits test set "
                "(1,797 8x8 images); CC BY 4.0 (Alpaydin, Kaynak); ships with scikit-learn, no download",
    monitor="val/acc",
    mode="max",
    trainer_defaults={"max_epochs": 20},
    tiny_args=("--model.channels", "[8, 8]", "--model.hidden_size", "8"),
    learn_args=("--trainer.max_epochs", "3"),
    score="test/acc",
    baseline="test/acc_majority",
    baseline_label="majority class",
)
