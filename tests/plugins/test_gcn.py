"""The gcn plugin: message passing on a graph made for it, the karate club split, Planetoid Cora and its errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from dlbench_plugins.gcn.data import PLANETOID_PARTS, CoraDataModule, KarateClubDataModule, split_per_class
from dlbench_plugins.gcn.model import GCN

from dlbench.core.errors import DlbenchError

TEST_DATA = os.environ.get("DLBENCH_TEST_DATA")
CORA_RAW = Path(TEST_DATA or "/nonexistent") / "planetoid" / "Cora" / "raw"
needs_cora = pytest.mark.skipif(not CORA_RAW.is_dir(), reason="DLBENCH_TEST_DATA/planetoid/Cora/raw not available")


def neighbour_graph(n_targets: int = 40, seed: int = 0):
    """Targets all carry the same feature [0, 0, 1]; each is linked to its own 'signal' node carrying a one-hot class
    [1, 0, 0] or [0, 1, 0]. A target's label is its signal's class: only a neighbour's features decide it."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n_targets,), generator=g)
    targets, signals = torch.arange(n_targets), torch.arange(n_targets, 2 * n_targets)
    x = torch.zeros(2 * n_targets, 3)
    x[targets, 2] = 1.0
    x[signals, labels] = 1.0
    edge_index = torch.cat([torch.stack([targets, signals]), torch.stack([signals, targets])], dim=1)
    y = torch.cat([labels, labels])
    train, test = torch.zeros(2 * n_targets, dtype=torch.bool), torch.zeros(2 * n_targets, dtype=torch.bool)
    train[: n_targets // 2], test[n_targets // 2 : n_targets] = True, True
    return x, edge_index, y, train, test


def fit_and_score(x, edge_index, y, train, test, steps: int = 60) -> float:
    torch.manual_seed(0)
    model = GCN(num_features=3, num_classes=2, hidden=8, dropout=0.0, lr=0.05, weight_decay=0.0)
    optimizer = model.configure_optimizers()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x, edge_index)[train], y[train]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(x, edge_index)[test].argmax(-1) == y[test]).float().mean().item()


def test_message_passing_solves_what_node_features_cannot():
    x, edge_index, y, train, test = neighbour_graph()
    assert fit_and_score(x, edge_index, y, train, test) == 1.0
    # Without edges every test node looks the same: no better than one constant guess.
    no_edges = torch.empty(2, 0, dtype=torch.long)
    majority = max(y[test].float().mean().item(), 1 - y[test].float().mean().item())
    assert fit_and_score(x, no_edges, y, train, test) <= majority


def test_model_shapes_and_argument_errors():
    model = GCN(num_features=5, num_classes=3, hidden=4, num_layers=3)
    x, edge_index = torch.randn(7, 5), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    assert model(x, edge_index).shape == (7, 3)
    assert model.encode(x, edge_index).shape == (7, 4)
    assert GCN(num_features=5, num_classes=3, num_layers=1).encode(x, edge_index).shape == (7, 5)
    with pytest.raises(ValueError, match="hidden must be >= 1, got 0"):
        GCN(hidden=0)
    with pytest.raises(ValueError, match="num_classes"):
        GCN(num_classes=1)
    with pytest.raises(ValueError, match="dropout"):
        GCN(dropout=1.0)


def test_weight_decay_only_on_first_layer():
    model = GCN(num_features=5, num_classes=3, num_layers=3, weight_decay=5e-4)
    first, rest = model.configure_optimizers().param_groups
    assert first["weight_decay"] == 5e-4 and rest["weight_decay"] == 0.0
    assert {id(p) for p in first["params"]} == {id(p) for p in model.convs[0].parameters()}


def test_karate_club_split_is_disjoint_and_covers_every_class():
    dm = KarateClubDataModule()
    train, val, test = dm.masks["train"], dm.masks["val"], dm.masks["test"]
    assert (dm.num_features, dm.num_classes, dm.x.shape[0]) == (34, 4, 34)
    assert train.nonzero().flatten().tolist() == [0, 4, 8, 24]  # one labelled node per class
    assert not (train & val).any() and not (train & test).any() and not (val & test).any()
    assert (train | val | test).all()
    assert (int(val.sum()), int(test.sum())) == (9, 21)
    for mask in (train, val, test):
        assert set(dm.y[mask].tolist()) == {0, 1, 2, 3}
    assert torch.equal(KarateClubDataModule(seed=1).masks["train"], train)
    assert not torch.equal(KarateClubDataModule(seed=1).masks["val"], val)


def test_split_per_class_keeps_a_candidate_of_each_class_for_testing():
    y = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1])
    chosen = split_per_class(y, torch.ones(8, dtype=torch.bool), fraction=0.9, seed=0)
    assert int(chosen[y == 0].sum()) == 1 and int(chosen[y == 1].sum()) == 5


def test_loaders_yield_the_whole_graph_once_with_the_stage_mask():
    dm = KarateClubDataModule()
    for stage in ("train", "val", "test"):
        (x, edge_index, y, mask), *more = list(getattr(dm, f"{stage}_dataloader")())
        assert not more and x.shape == (34, 34) and edge_index.shape == (2, 156) and y.shape == (34,)
        assert torch.equal(mask, dm.masks[stage])
    (*_, everything), = list(dm.predict_dataloader())
    assert everything.all()


def copy_cora(dest: Path) -> Path:
    raw = dest / "Cora" / "raw"
    shutil.copytree(CORA_RAW, raw)
    for f in raw.iterdir():
        f.chmod(0o644)
    return raw


@needs_cora
def test_cora_standard_split(tmp_path):
    copy_cora(tmp_path)
    dm = CoraDataModule(root=str(tmp_path))
    assert (dm.x.shape, dm.num_features, dm.num_classes) == ((2708, 1433), 1433, 7)
    train, val, test = dm.masks["train"], dm.masks["val"], dm.masks["test"]
    assert (int(train.sum()), int(val.sum()), int(test.sum())) == (140, 500, 1000)
    assert not (train & val).any() and not (train & test).any() and not (val & test).any()
    assert torch.equal(torch.bincount(dm.y[train]), torch.full((7,), 20))  # 20 labelled papers per class
    assert torch.allclose(dm.x.sum(dim=1), torch.ones(2708))  # bag of words normalised per paper
    edges = set(map(tuple, dm.edge_index.t().tolist()))
    assert all((b, a) in edges for a, b in edges)  # undirected: both directions present
    assert not (tmp_path / "Cora" / "processed").exists()  # nothing written beside the raw files


@needs_cora
def test_cora_corrupt_raw_file(tmp_path):
    raw = copy_cora(tmp_path)
    graph = raw / "ind.cora.graph"
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(DlbenchError, match="corrupt or truncated"):
        CoraDataModule(root=str(tmp_path))


def test_cora_missing_offline_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    with pytest.raises(DlbenchError) as err:
        CoraDataModule(root=str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "Cora" / "raw") in message and "ROOT/Cora/raw/" in message
    assert all(f"ind.cora.{part}" in message for part in PLANETOID_PARTS)
    assert not any(tmp_path.iterdir())  # no half-made folders left behind


def test_cora_missing_offline_through_the_command(tmp_path, monkeypatch, capsys):
    from dlbench.cli import main

    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    monkeypatch.setenv("DLBENCH_LOG_DIR", str(tmp_path / "logs"))
    code = main(["fit", "--model", "gcn", "--data", "cora", "--data.root", str(tmp_path / "none")])
    assert code == 2
    assert "ROOT/Cora/raw/" in capsys.readouterr().err


def test_fit_sends_node_embeddings_to_the_projector(tmp_path):
    from dlbench.testing import QUIET, build

    model, dm, trainer = build("gcn", "--model.embedding_every_n_epochs", "2", "--trainer.max_epochs", "3", *QUIET,
                               log_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    run = Path(trainer.logger.log_dir)
    # Epoch 2 (every 2 epochs) and epoch 3 (the last), named by global step (one step per epoch), each with all 34
    # nodes, their labels and predictions.
    metadata = sorted(run.glob("*/nodes%2fhidden/metadata.tsv"))
    assert [m.parent.parent.name for m in metadata] == ["00002", "00003"]
    lines = metadata[-1].read_text().splitlines()
    assert lines[0] == "label\tpredicted" and len(lines) == 35
    tensors = (metadata[-1].parent / "tensors.tsv").read_text().splitlines()
    assert len(tensors) == 34 and len(tensors[0].split("\t")) == 16
