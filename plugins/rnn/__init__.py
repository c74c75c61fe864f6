"""Recurrent image classifier: an RNN, GRU or LSTM reads the image one row per time step."""

from dlbench import Plugin

PLUGIN = Plugin(
    name="rnn",
    summary="recurrent classifier: RNN/GRU/LSTM reads the image row by row -> classes (vs. majority class)",
    model="dlbench_plugins.rnn.model:RNNClassifier",
    datamodule="dlbench_plugins.images.data:DigitsDataModule",
    data_kind="images",
    data_name="digits",
    data_source="scikit-learn's bundled copy of the UCI optical recognition of handwritten digits test set "
                "(1,797 8x8 images); CC BY 4.0 (Alpaydin, Kaynak); ships with scikit-learn, no download",
    monitor="val/acc",
    mode="max",
    trainer_defaults={"max_epochs": 30},
    tiny_args=("--model.hidden_size", "8", "--model.num_layers", "2"),
    learn_args=("--trainer.max_epochs", "5"),
    score="test/acc",
    baseline="test/acc_majority",
    baseline_label="majority class",
)
