"""ResNet: a residual network of the ResNet-18 shape for small images (He et al. 2016)."""

from dlbench import Plugin

PLUGIN = Plugin(
    name="resnet",
    summary="ResNet-18-shaped residual network (4 stages x 2 basic blocks, 3x3 stem) classifying small images",
    model="dlbench_plugins.resnet.model:ResNet",
    datamodule="dlbench_plugins.images.data:DigitsDataModule",
    data_kind="images",
    data_name="digits",
    data_source="scikit-learn's bundled copy of the UCI optical recognition of handwritten digits test set "
                "(1,797 8x8 images); CC BY 4.0 (Alpaydin, Kaynak); ships with scikit-learn, no download",
    monitor="val/acc",
    mode="max",
    trainer_defaults={"max_epochs": 15},
    tiny_args=("--model.widths", "[8,8]", "--model.blocks", "[1,1]"),
    learn_args=("--trainer.max_epochs", "3", "--model.widths", "[8,16]", "--model.blocks", "[1,1]"),
    score="test/acc",
    baseline="test/acc_majority",
    baseline_label="majority class",
)
