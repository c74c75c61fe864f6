"""Fisher's iris flowers, standardised with training statistics, split 60/20/20 with a fixed seed. A trained run
classifies a user's own rows with ``dlbench predict`` (see :mod:`dlbench_example_iris.predict`)."""

import lightning as L
import torch
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from dlbench.data.batches import tensor_loader
from dlbench_example_iris.predict import TablePredictor


class IrisDataModule(L.LightningDataModule):
    def __init__(self, batch_size: int = 16, seed: int = 0) -> None:
        """
        Args:
            batch_size: Flowers per training batch.
            seed: Seed of the train/validation/test split.
        """
        super().__init__()
        self.save_hyperparameters()
        self.num_features, self.num_classes = 4, 3

    def setup(self, stage: str | None = None) -> None:
        iris = load_iris()
        x, y = iris.data, iris.target
        self.feature_names, self.class_names = list(iris.feature_names), list(iris.target_names)
        seed = self.hparams.seed
        x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
        x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest,
                                                        random_state=seed)
        self.mean, self.std = x_train.mean(0), x_train.std(0)

        def tensors(xs, ys):
            return torch.tensor((xs - self.mean) / self.std, dtype=torch.float32), torch.tensor(ys)

        self.train, self.val, self.test = tensors(x_train, y_train), tensors(x_val, y_val), tensors(x_test, y_test)

    def predictor(self):
        """The run's preprocessing for ``dlbench predict`` and ``dlbench serve``, asked for once the data is set up:
        the feature columns by name, the training split's mean and standard deviation, the class names."""
        return TablePredictor(self.feature_names, self.mean.tolist(), self.std.tolist(), self.class_names)

    def train_dataloader(self):
        return tensor_loader(self, *self.train, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return tensor_loader(self, *self.val, batch_size=len(self.val[0]))

    def test_dataloader(self):
        return tensor_loader(self, *self.test, batch_size=len(self.test[0]))
