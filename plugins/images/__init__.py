"""Image classification datasets shared by every image plugin (``--data NAME``)."""

from dlbench import Dataset

DIGITS = Dataset(
    name="digits",
    summary="8x8 grey hand-written digits, 1,797 images, 10 classes",
    datamodule="dlbench_plugins.images.data:DigitsDataModule",
    data_kind="images",
    source="scikit-learn's bundled copy of the UCI optical recognition of handwritten digits test set; "
           "CC BY 4.0 (Alpaydin, Kaynak); ships with scikit-learn, no download",
)
