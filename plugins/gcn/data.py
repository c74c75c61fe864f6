"""Graphs for transductive node classification: one graph, three disjoint node masks.

The whole graph is one batch. Every loader yields ``(x, edge_index, y, mask)`` once per epoch: node features
``(N, F)`` float, edges ``(2, E)`` int64 (both directions of each undirected edge), labels ``(N,)`` int64 and the
boolean mask of the nodes that stage is scored on. The graph is moved to the training device once and shared by
the train, validation and test loaders; only the mask differs (full-batch training, as in Kipf & Welling).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import lightning as L
import torch

from dlbench import DlbenchError
from dlbench.data.download import Remote, data_root, fetch

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class WholeGraph:
    """A loader of exactly one batch, the whole graph (a list would read to Lightning as several loaders)."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.batch


class GraphDataModule(L.LightningDataModule):
    """Base for one in-memory graph with train/val/test node masks. Subclasses call :meth:`use_graph` in
    ``__init__``, so that ``num_features`` and ``num_classes`` are known before the model is built."""

    num_features: int
    num_classes: int
    class_names: tuple[str, ...] = ()
    """Names of the classes by label, for predictions; class indices when empty."""

    def use_graph(self, x: torch.Tensor, edge_index: torch.Tensor, y: torch.Tensor, train_mask: torch.Tensor,
                  val_mask: torch.Tensor, test_mask: torch.Tensor) -> None:
        n = x.shape[0]
        masks = {"train": train_mask, "val": val_mask, "test": test_mask}
        for stage, mask in masks.items():
            if mask.shape != (n,) or mask.dtype != torch.bool or not mask.any():
                raise DlbenchError(f"the {stage} node mask must be a non-empty boolean vector over the {n} nodes.")
        if (train_mask & val_mask).any() or (train_mask & test_mask).any() or (val_mask & test_mask).any():
            raise DlbenchError("the train, validation and test node masks overlap; each node may be in one only.")
        if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= n):
            raise DlbenchError(f"an edge names a node outside 0..{n - 1}; the graph files are inconsistent.")
        self.x, self.edge_index, self.y = x.float(), edge_index.long(), y.long()
        self.masks = masks
        self.num_features = x.shape[1]
        self.num_classes = int(y[train_mask | val_mask | test_mask].max()) + 1
        self._on_device: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _graph_batch(self, mask: torch.Tensor) -> WholeGraph:
        device = self._device()
        if device not in self._on_device:
            self._on_device[device] = (self.x.to(device), self.edge_index.to(device), self.y.to(device))
        return WholeGraph((*self._on_device[device], mask.to(device)))

    def train_dataloader(self) -> WholeGraph:
        return self._graph_batch(self.masks["train"])

    def val_dataloader(self) -> WholeGraph:
        return self._graph_batch(self.masks["val"])

    def test_dataloader(self) -> WholeGraph:
        return self._graph_batch(self.masks["test"])

    def predict_dataloader(self) -> WholeGraph:
        """Every node of the graph: predictions for the whole graph, in node order."""
        return self._graph_batch(torch.ones_like(self.masks["test"]))

    def predictor(self):
        """What ``dlbench predict`` needs: how to rebuild this graph (the data module's class and arguments), its
        size to check the rebuilt one against, and the class names (see :mod:`dlbench.data.predict`)."""
        from dlbench_plugins.gcn.predict import GraphPredictor

        cls = type(self)
        args = {k: v for k, v in dict(self.hparams).items() if not k.startswith("_")}
        args = json.loads(json.dumps(args, default=str))  # plain data for predictor.json (a Path becomes its text)
        names = list(self.class_names) or [str(c) for c in range(self.num_classes)]
        return GraphPredictor(f"{cls.__module__}:{cls.__qualname__}", args, num_nodes=self.x.shape[0],
                              num_features=self.num_features, num_edges=self.edge_index.shape[1], class_names=names)


class KarateClubDataModule(GraphDataModule):
    """Zachary's karate club from torch_geometric: 34 nodes, one-hot node identities as features, 4 communities.

    Split: the standard semi-supervised one labelled node per class (nodes 0, 4, 8, 24, torch_geometric's
    ``train_mask``) for training; of the other 30 nodes, ``val_fraction`` of each class (rounded; 9 nodes by
    default, chosen with ``seed``) for validation and the remaining 21 for testing.
    """

    def __init__(self, val_fraction: float = 0.3, seed: int = 0) -> None:
        """
        Args:
            val_fraction: Fraction of each class's unlabelled nodes used for validation; the rest are test nodes.
            seed: Seed of the validation/test split, kept apart from the training seed.
        """
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.save_hyperparameters()
        from torch_geometric.datasets import KarateClub

        data = KarateClub()[0]
        val_mask = split_per_class(data.y, ~data.train_mask, val_fraction, seed)
        test_mask = ~data.train_mask & ~val_mask
        self.use_graph(data.x, data.edge_index, data.y, data.train_mask, val_mask, test_mask)


def split_per_class(y: torch.Tensor, candidates: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A mask of ``round(fraction * count)`` (at least one) random candidate nodes of each class."""
    g = torch.Generator().manual_seed(seed)
    chosen = torch.zeros_like(candidates)
    for c in y[candidates].unique():
        nodes = (candidates & (y == c)).nonzero().flatten()
        take = min(len(nodes) - 1, max(1, round(fraction * len(nodes))))
        chosen[nodes[torch.randperm(len(nodes), generator=g)[:take]]] = True
    return chosen


# The Planetoid raw files as published at github.com/kimiyoung/planetoid (data/), with their SHA-256.
PLANETOID_URLS = ("https://github.com/kimiyoung/planetoid/raw/master/data/",
                  "https://raw.githubusercontent.com/kimiyoung/planetoid/master/data/")
PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
PLANETOID_SHA256 = {
    "ind.cora.x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    "ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    "ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    "ind.cora.y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    "ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    "ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    "ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    "ind.cora.test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    "ind.citeseer.x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
    "ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
    "ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
    "ind.citeseer.y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    "ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
    "ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
    "ind.citeseer.graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
    "ind.citeseer.test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
    "ind.pubmed.x": "fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33",
    "ind.pubmed.tx": "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
    "ind.pubmed.allx": "508e538e2abdccdd54c4d3e9f49d638b4af7107d85845f66ddea5a5152658b7e",
    "ind.pubmed.y": "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3",
    "ind.pubmed.ty": "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
    "ind.pubmed.ally": "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
    "ind.pubmed.graph": "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
    "ind.pubmed.test.index": "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5",
}
# (nodes, features, classes, training nodes) of the standard public split, to recognise the right files.
PLANETOID_SIZES = {"Cora": (2708, 1433, 7, 140), "CiteSeer": (3327, 3703, 6, 120), "PubMed": (19717, 500, 3, 60)}


def planetoid_raw_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``ROOT/<name>/raw/`` holding the eight ``ind.<name>.*`` files, downloading the missing ones (checksummed).
    ROOT is ``root``, else ``$DLBENCH_DATA_DIR/planetoid``, else ``~/.cache/dlbench/planetoid``."""
    raw = data_root("planetoid", root) / name / "raw"
    files = [f"ind.{name.lower()}.{part}" for part in PLANETOID_PARTS]
    missing = [f for f in files if not (raw / f).is_file()]
    for filename in missing:
        remote = Remote(filename, tuple(url + filename for url in PLANETOID_URLS), sha256=PLANETOID_SHA256[filename])
        try:
            fetch(name, remote, root=raw)
        except DlbenchError as err:
            why = str(err).split(" Put ")[0]  # fetch's own advice names a folder without the <Name>/raw/ layout
            raise DlbenchError(
                f"{name}: {', '.join(missing)} missing from {raw}, and fetching them failed ({why}) Put the eight "
                f"Planetoid raw files ind.{name.lower()}.{{{','.join(PLANETOID_PARTS)}}} (published at "
                f"{PLANETOID_URLS[0]}) in ROOT/{name}/raw/ and pass --data.root ROOT.") from None
    return raw


def read_planetoid(name: str, root: str | os.PathLike | None = None):
    """The standard public split of a Planetoid graph as a torch_geometric ``Data`` (train/val/test masks set).

    Reads the raw files directly, so nothing is written next to them (torch_geometric's ``Planetoid`` dataset
    would cache a ``processed/`` folder there, which fails on a read-only copy).
    """
    from torch_geometric.io import read_planetoid_data

    raw = planetoid_raw_dir(name, root)
    try:
        data = read_planetoid_data(str(raw), name)
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError, IndexError, KeyError, AttributeError,
            TypeError, RuntimeError) as err:
        raise DlbenchError(f"{name}: the raw files in {raw} cannot be read ({type(err).__name__}: {err}); one is "
                           f"corrupt or truncated. Delete them to download them again, or copy them anew.") from None
    nodes, features, classes, n_train = PLANETOID_SIZES[name]
    found = (data.num_nodes, data.x.shape[1], int(data.y.max()) + 1, int(data.train_mask.sum()))
    if found != (nodes, features, classes, n_train):
        raise DlbenchError(f"{name}: the files in {raw} hold {found[0]} nodes, {found[1]} features, {found[2]} "
                           f"classes and {found[3]} training nodes; the standard {name} has {nodes}, {features}, "
                           f"{classes} and {n_train}. Put the original Planetoid ind.{name.lower()}.* files there.")
    return data


class PlanetoidDataModule(GraphDataModule):
    """A Planetoid citation graph (Cora by default) with its standard public split: 20 labelled nodes per class for
    training, 500 for validation, 1,000 for testing (Kipf & Welling's setting)."""

    planetoid_name = "Cora"

    def __init__(self, root: str | None = None, normalize_features: bool = True) -> None:
        """
        Args:
            root: Folder holding ``<Name>/raw/ind.<name>.*`` (downloaded there when missing); by default
                ``$DLBENCH_DATA_DIR/planetoid`` or ``~/.cache/dlbench/planetoid``.
            normalize_features: Scale each node's bag-of-words features to sum to 1, as Kipf & Welling do
                (per node, so no statistic crosses the split).
        """
        super().__init__()
        self.save_hyperparameters()
        data = read_planetoid(self.planetoid_name, root)
        x = data.x
        if normalize_features:
            x = x / x.sum(dim=1, keepdim=True).clamp_min(1e-12)
        self.use_graph(x, data.edge_index, data.y, data.train_mask, data.val_mask, data.test_mask)


class CoraDataModule(PlanetoidDataModule):
    """Cora: 2,708 machine-learning papers, 1,433 binary word features, 7 subject classes, 5,278 citation links."""

    planetoid_name = "Cora"


class CiteSeerDataModule(PlanetoidDataModule):
    """CiteSeer: 3,327 papers, 3,703 binary word features, 6 classes (isolated nodes missing from the raw test
    index get zero features and no mask, as in torch_geometric)."""

    planetoid_name = "CiteSeer"


class PubMedDataModule(PlanetoidDataModule):
    """PubMed diabetes: 19,717 papers, 500 TF-IDF word features, 3 classes."""

    planetoid_name = "PubMed"
