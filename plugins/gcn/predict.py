"""Prediction for node classification on one graph (transductive): the run answers for the nodes of the graph it
trained on, all of them or those of ``--nodes``, and takes no input files.

The graph itself is not saved with the run (Cora's features alone are 2,708 x 1,433 numbers): the predictor keeps
how to rebuild it, the data module's class and arguments, so prediction needs the graph's data where it runs
(KarateClub ships with torch_geometric; the Planetoid graphs are read from their files, downloaded when missing).
The rebuilt graph is checked against the size of the one the run trained on. Each batch is the whole graph plus
the ids of the nodes it asks about, ``(x, edge_index, node_ids)``: the model runs over the whole graph and answers
for those nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from dlbench_plugins.images.predict import class_rows

from dlbench.core.errors import DlbenchError
from dlbench.core.spec import import_ref
from dlbench.data.predict import Example, InputError, Predictor, Sink, Source


class GraphPredictor(Predictor):
    """The run's own graph, rebuilt from its data module's class and arguments; see the module docstring."""

    inputs = "none"
    batch_size = 2**31 - 1  # every requested node in one pass over the whole graph

    def __init__(self, datamodule: str, args: dict[str, Any], num_nodes: int, num_features: int, num_edges: int,
                 class_names: Sequence[str] = ()) -> None:
        self.datamodule, self.args = str(datamodule), dict(args)
        self.num_nodes, self.num_features, self.num_edges = int(num_nodes), int(num_features), int(num_edges)
        self.class_names = tuple(class_names)
        self._graph: tuple[torch.Tensor, torch.Tensor] | None = None

    def state(self) -> dict[str, Any]:
        return {"datamodule": self.datamodule, "args": self.args, "num_nodes": self.num_nodes,
                "num_features": self.num_features, "num_edges": self.num_edges, "class_names": list(self.class_names)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GraphPredictor:
        return cls(**state)

    def describe(self) -> str:
        return f"the nodes of its own graph (0..{self.num_nodes - 1}; --nodes ID [ID ...] for some of them)"

    def graph(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Node features ``(N, F)`` and edges ``(2, E)`` of the run's graph, rebuilt once and checked."""
        if self._graph is None:
            from dlbench_plugins.gcn.data import GraphDataModule

            name = self.datamodule.rpartition(":")[2]
            try:
                cls = import_ref(self.datamodule)
            except (ImportError, ValueError) as err:
                raise DlbenchError(f"cannot rebuild the run's graph: its data module {self.datamodule} cannot be "
                                   f"imported ({err}). Install the plugin that provides it.") from None
            if not (isinstance(cls, type) and issubclass(cls, GraphDataModule)):
                raise DlbenchError(f"cannot rebuild the run's graph: {self.datamodule} is not a graph data module.")
            try:
                datamodule = cls(**self.args)
            except (TypeError, ValueError) as err:
                raise DlbenchError(f"cannot rebuild the run's graph with {name}({self.args}): {err}. Re-run the fit "
                                   f"with this version of the plugin.") from None
            found = (datamodule.x.shape[0], datamodule.num_features, datamodule.edge_index.shape[1])
            if found != (self.num_nodes, self.num_features, self.num_edges):
                raise DlbenchError(f"the graph {name} rebuilt here has {found[0]} nodes, {found[1]} features and "
                                   f"{found[2]} edges, but the run trained on {self.num_nodes}, {self.num_features} "
                                   f"and {self.num_edges}: its data files differ from the run's. Point --data.root "
                                   f"of the run's config at the files it trained on.")
            self._graph = (datamodule.x, datamodule.edge_index)
        return self._graph

    def read(self, source: Source, options: dict[str, Any]) -> list[Example]:
        raise InputError(f"{source.name}: this model predicts on the nodes of its own graph and reads no files. "
                         f"Drop --input; give --nodes ID [ID ...] for some nodes.")

    def generate(self, options: dict[str, Any]) -> list[Example]:
        """One example a requested node (``--nodes``, in that order), else every node in node order."""
        nodes = options.get("nodes")
        nodes = list(range(self.num_nodes)) if nodes is None else [int(n) for n in nodes]
        if not nodes:
            raise InputError(f"--nodes names no node. Give node ids in 0..{self.num_nodes - 1}, or leave out "
                             f"--nodes for every node.")
        unknown = [n for n in nodes if not 0 <= n < self.num_nodes]
        if unknown:
            listed = " ".join(str(n) for n in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise InputError(f"--nodes {listed}: not in the run's graph, whose {self.num_nodes} nodes are numbered "
                             f"0..{self.num_nodes - 1}. Give node ids in that range, or leave out --nodes for "
                             f"every node.")
        self.graph()  # a graph that cannot be rebuilt fails here, before any model runs
        return [Example(f"node {n}", n) for n in nodes]

    def collate(self, values: Sequence[Any]):
        """``(x, edge_index, node_ids)``: the whole graph and the nodes this batch asks about."""
        x, edge_index = self.graph()
        return x, edge_index, torch.tensor([int(v) for v in values], dtype=torch.long)

    def rows(self, outputs: dict[str, Any], examples: Sequence[Example], options: dict[str, Any],
             sink: Sink) -> list[dict[str, Any]]:
        ranked = class_rows(outputs["probs"], self.class_names, int(options.get("top_k") or 3))
        return [{"input": e.key, **r} for e, r in zip(examples, ranked, strict=True)]
