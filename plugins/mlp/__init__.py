"""Feed-forward (MLP) image classifier: flattened pixels through fully connected layers with dropout."""

from dlbench import Plugin

PLUGIN = Plugin(
    name="mlp",
    summary="feed-forward classifier: flattened image -> dense layers with dropout -> classes (vs. majority class)",
    model="dlbench_plugins.mlp.model:MLPClassifier",
    datamodule="dlbench_plugins.images.data:DigitsDataModule",
    data_kind="images",
    data_name="digits",
    data_source="scikit-learn's bundled copy of the UCI optical recognition of handwritten digits test set "
                "(1,797 8x8 images); CC BY 4.0 (Alpaydin, Kaynak); ships with scikit-learn, no download",
    monitor="val/acc",
    mode="max",
    trainer_defaults={"max_epochs": 30},
    tiny_args=("--model.hidden_sizes", "[8, 8]"),
    learn_args=("--trainer.max_epochs", "5"),
    score="test/acc",
    baseline="test/acc_majority",
    baseline_label="majority class",
)
