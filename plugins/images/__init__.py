"""Image classification datasets shared by every image plugin (``--data NAME``)."""

from dlbench import Dataset

_CACHE = "downloaded once into $DLBENCH_DATA_DIR (default ~/.cache/dlbench), or read from --data.root DIR"

DIGITS = Dataset(
    name="digits",
    summary="8x8 grey hand-written digits, 1,797 images, 10 classes",
    datamodule="dlbench_plugins.images.data:DigitsDataModule",
    data_kind="images",
    source="scikit-learn's bundled copy of the UCI optical recognition of handwritten digits test set; "
           "CC BY 4.0 (Alpaydin, Kaynak); ships with scikit-learn, no download",
)

MNIST = Dataset(
    name="mnist",
    summary="MNIST: 28x28 grey hand-written digits, 60,000 train / 10,000 test, 10 classes",
    datamodule="dlbench_plugins.images.data:MNISTDataModule",
    data_kind="images",
    source="Y. LeCun, C. Cortes, C. J. C. Burges; CC BY-SA 3.0; the four gzipped IDX files from "
           "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of yann.lecun.com/exdb/mnist), md5-checked, "
           f"{_CACHE}",
)

FASHION_MNIST = Dataset(
    name="fashion_mnist",
    summary="Fashion-MNIST: 28x28 grey clothing images, 60,000 train / 10,000 test, 10 classes",
    datamodule="dlbench_plugins.images.data:FashionMNISTDataModule",
    data_kind="images",
    source="Zalando Research (H. Xiao, K. Rasul, R. Vollgraf); MIT licence; the four gzipped IDX files from "
           f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/, md5-checked, {_CACHE}",
)

CIFAR10 = Dataset(
    name="cifar10",
    summary="CIFAR-10: 32x32 colour images, 50,000 train / 10,000 test, 10 classes",
    datamodule="dlbench_plugins.images.data:CIFAR10DataModule",
    data_kind="images",
    source="A. Krizhevsky, V. Nair, G. Hinton, 'Learning Multiple Layers of Features from Tiny Images' (2009); no "
           "licence stated, the authors ask that the report be cited; the binary release cifar-10-binary.tar.gz from "
           f"https://www.cs.toronto.edu/~kriz/cifar.html, md5-checked, {_CACHE}",
)

IMAGE_FOLDER = Dataset(
    name="image_folder",
    summary="your own images, one sub-folder per class (--data.root DIR), resized and held in memory",
    datamodule="dlbench_plugins.images.data:ImageFolderDataModule",
    data_kind="images",
    source="a folder you provide (--data.root DIR, e.g. medical images as in the source articles' lung-nodule "
           "example), decoded with Pillow; nothing is downloaded",
)
