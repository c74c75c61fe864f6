"""LSTM forecaster: a window of past values predicts the next one."""

from dlbench import Dataset, Plugin

_SOURCE = ("yearly sunspot numbers 1700-2008, NOAA National Geophysical Data Center; public domain; "
           "309 real values shipped with dlbench")

PLUGIN = Plugin(
    name="lstm",
    summary="LSTM forecaster: a window of past values predicts the next value (vs. persistence)",
    model="dlbench_plugins.lstm.model:LSTMForecaster",
    datamodule="dlbench_plugins.lstm.data:SeriesDataModule",
    data_kind="series",
    data_name="sunspots",
    data_source=_SOURCE,
    monitor="val/rmse",
    mode="min",
    trainer_defaults={"max_epochs": 60},
    tiny_args=("--model.hidden_size", "8", "--model.num_layers", "2"),
    learn_args=("--trainer.max_epochs", "15"),
    score="test/rmse",
    baseline="test/rmse_persistence",
    baseline_label="persistence: the last value repeated",
)

SUNSPOTS = Dataset(
    name="sunspots",
    summary="yearly sunspot numbers, 1700-2008",
    datamodule="dlbench_plugins.lstm.data:SeriesDataModule",
    data_kind="series",
    source=_SOURCE,
)
