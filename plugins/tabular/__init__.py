"""Fraud-detection style MLP for imbalanced binary tables, and the tables it trains on."""

from dlbench import Dataset, Plugin

_BREAST_CANCER_SOURCE = ("Wisconsin diagnostic breast cancer data (Wolberg, Street & Mangasarian, UCI, CC BY 4.0): "
                         "569 tumours, 30 features, 212 malignant; ships with scikit-learn, no download")

PLUGIN = Plugin(
    name="tabular",
    summary="MLP with batch norm and pos_weight for imbalanced binary tables (vs. the best single feature)",
    model="dlbench_plugins.tabular.model:TabularMLP",
    datamodule="dlbench_plugins.tabular.data:BreastCancerDataModule",
    data_kind="tabular",
    data_name="breast_cancer",
    data_source=_BREAST_CANCER_SOURCE,
    monitor="val/auroc",
    mode="max",
    trainer_defaults={"max_epochs": 60},
    tiny_args=("--model.hidden", "8", "--model.num_layers", "2"),
    learn_args=("--trainer.max_epochs", "8"),
    score="test/auroc",
    baseline="test/auroc_best_feature",
    baseline_label="the single best feature",
)

BREAST_CANCER = Dataset(
    name="breast_cancer",
    summary="Wisconsin breast cancer: 569 tumours, 30 numeric features, 37% malignant (positive)",
    datamodule="dlbench_plugins.tabular.data:BreastCancerDataModule",
    data_kind="tabular",
    source=_BREAST_CANCER_SOURCE,
)

TABULAR_CSV = Dataset(
    name="tabular_csv",
    summary="any numeric CSV with a 0/1 label column (--data.path FILE --data.label COLUMN), e.g. credit-card fraud",
    datamodule="dlbench_plugins.tabular.data:CSVDataModule",
    data_kind="tabular",
    source="your own file; e.g. the credit-card fraud data of the ULB Machine Learning Group (Kaggle "
           "'creditcardfraud'), label 'Class'",
)
