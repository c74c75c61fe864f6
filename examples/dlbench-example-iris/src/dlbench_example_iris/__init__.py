"""The spec of the ``iris_mlp`` plugin. Imports nothing but dlbench: no torch here."""

from dlbench import Plugin

PLUGIN = Plugin(
    name="iris_mlp",
    summary="MLP classifier for Fisher's iris flowers (example third-party plugin)",
    model="dlbench_example_iris.model:IrisMLP",
    datamodule="dlbench_example_iris.data:IrisDataModule",
    data_kind="flowers",  # a data kind of this package's own, so it names what its model takes from the data
    links=("num_features", "num_classes"),
    data_name="iris",
    data_source="Fisher's iris data (UCI), bundled with scikit-learn; public domain",
    monitor="val/acc",
    mode="max",
    trainer_defaults={"max_epochs": 60},
    tiny_args=("--model.hidden_size", "8"),
    learn_args=("--trainer.max_epochs", "30"),
    score="test/acc",
    baseline="test/acc_majority",
    baseline_label="majority class",
)
