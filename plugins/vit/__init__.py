"""ViT: a vision transformer that reads an image as a sequence of patches (Dosovitskiy et al. 2021)."""

from dlbench import Plugin

PLUGIN = Plugin(
    name="vit",
    summary="vision transformer: patch embedding, class token, pre-norm Transformer encoder, linear classifier",
    model="dlbench_plugins.vit.model:VisionTransformer",
    datamodule="dlbench_plugins.images.data:DigitsDataModule",
    data_kind="images",
    data_name="digits",
    data_source="scikit-learn's bundled copy of the UCI optical recognition of handwritten digits test set "
                "(1,797 8x8 images); CC BY 4.0 (Alpaydin, Kaynak); ships with scikit-learn, no download",
    monitor="val/acc",
    mode="max",
    trainer_defaults={"max_epochs": 30},
    tiny_args=("--model.dim", "8", "--model.depth", "2", "--model.heads", "2"),
    learn_args=("--trainer.max_epochs", "5", "--model.dim", "32", "--model.depth", "2"),
    score="test/acc",
    baseline="test/acc_majority",
    baseline_label="majority class",
)
