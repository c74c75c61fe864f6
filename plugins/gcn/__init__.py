"""Graph convolutional network (Kipf & Welling, 2017) for node classification, and the graphs it trains on."""

from dlbench import Dataset, Plugin

_KARATE_SOURCE = ("Zachary's karate club (1977): 34 members, 78 friendships, 4 communities from modularity-based "
                  "clustering; ships inside torch_geometric (MIT) as torch_geometric.datasets.KarateClub, no download")
_PLANETOID_SOURCE = ("Planetoid citation graph (Yang, Cohen & Salakhutdinov, 2016), the standard public split; "
                     "raw ind.{name}.* files from github.com/kimiyoung/planetoid (MIT), downloaded and "
                     "checksummed on first use, or read from --data.root ROOT holding {Name}/raw/")

PLUGIN = Plugin(
    name="gcn",
    summary="graph convolutional network: node classification by message passing (vs. the majority class)",
    model="dlbench_plugins.gcn.model:GCN",
    datamodule="dlbench_plugins.gcn.data:KarateClubDataModule",
    data_kind="graph",
    data_name="karate_club",
    data_source=_KARATE_SOURCE,
    monitor="val/acc",
    mode="max",
    trainer_defaults={"max_epochs": 200},
    tiny_args=("--model.hidden", "8", "--model.num_layers", "2"),
    learn_args=("--trainer.max_epochs", "40"),
    score="test/acc",
    baseline="test/acc_majority",
    baseline_label="majority class",
)

KARATE_CLUB = Dataset(
    name="karate_club",
    summary="Zachary's karate club: 34 nodes, 4 classes, one labelled node per class",
    datamodule="dlbench_plugins.gcn.data:KarateClubDataModule",
    data_kind="graph",
    source=_KARATE_SOURCE,
)

CORA = Dataset(
    name="cora",
    summary="Cora citation graph: 2,708 papers, 1,433 word features, 7 classes, 140/500/1000 split",
    datamodule="dlbench_plugins.gcn.data:CoraDataModule",
    data_kind="graph",
    source=_PLANETOID_SOURCE.format(name="cora", Name="Cora"),
)

CITESEER = Dataset(
    name="citeseer",
    summary="CiteSeer citation graph: 3,327 papers, 3,703 word features, 6 classes, 120/500/1000 split",
    datamodule="dlbench_plugins.gcn.data:CiteSeerDataModule",
    data_kind="graph",
    source=_PLANETOID_SOURCE.format(name="citeseer", Name="CiteSeer"),
)

PUBMED = Dataset(
    name="pubmed",
    summary="PubMed diabetes citation graph: 19,717 papers, 500 TF-IDF features, 3 classes, 60/500/1000 split",
    datamodule="dlbench_plugins.gcn.data:PubMedDataModule",
    data_kind="graph",
    source=_PLANETOID_SOURCE.format(name="pubmed", Name="PubMed"),
)
