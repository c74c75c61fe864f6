"""A graph convolutional network (Kipf & Welling, 2017) that classifies the nodes of one graph.

Each layer mixes every node's features with its neighbours' (``torch_geometric.nn.GCNConv``: the symmetrically
normalised adjacency with self-loops, then a linear map). Two layers with 16 hidden units, dropout 0.5 on each
layer's input, Adam at lr 0.01 and L2 weight decay 5e-4 on the first layer only are Kipf & Welling's Cora setting
and the defaults here; the source articles' example is the same two-layer shape on a 34-node graph, which is the
default data (Zachary's karate club). Training is full-batch: every step sees the whole graph and is scored on the
nodes of its stage's mask. Accuracy is logged next to the majority class of the test nodes, and the hidden
layer's node embeddings go to TensorBoard's projector with each node's label and prediction.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.nn import functional as F
from torch_geometric.nn import GCNConv
from torchmetrics.classification import MulticlassAccuracy

from dlbench import LossMean, MajorityAccuracy


class GCN(L.LightningModule):
    def __init__(self, num_features: int = 34, num_classes: int = 4, hidden: int = 16, num_layers: int = 2,
                 dropout: float = 0.5, lr: float = 0.01, weight_decay: float = 5e-4,
                 embedding_every_n_epochs: int = 50) -> None:
        """
        Args:
            num_features: Input features per node (linked from the data).
            num_classes: Node classes (linked from the data).
            hidden: Units in each hidden graph-convolution layer (16 in Kipf & Welling).
            num_layers: Graph-convolution layers, the output layer included; each adds one hop of neighbours.
            dropout: Dropout on the input of every layer (0.5 in Kipf & Welling).
            lr: Adam learning rate (0.01 in Kipf & Welling).
            weight_decay: L2 penalty on the first layer's weights (5e-4 in Kipf & Welling, who leave the others
                unregularised).
            embedding_every_n_epochs: Send the hidden node embeddings to TensorBoard's projector every this many
                epochs and at the last epoch; 0 turns it off.
        """
        super().__init__()
        for name, value in (("num_features", num_features), ("hidden", hidden), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if embedding_every_n_epochs < 0:
            raise ValueError(f"embedding_every_n_epochs must be >= 0, got {embedding_every_n_epochs}")
        self.save_hyperparameters()
        dims = [num_features] + [hidden] * (num_layers - 1) + [num_classes]
        self.convs = nn.ModuleList(GCNConv(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:], strict=True))
        # A two-node graph with one edge each way: enough for the model summary to trace a forward pass.
        self.example_input_array = (torch.zeros(2, num_features), torch.tensor([[0, 1], [1, 0]]))
        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_majority = MajorityAccuracy(num_classes)
        self._embedding: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def encode(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Node embeddings: the output of the last hidden layer (the input features when there is none)."""
        for conv in self.convs[:-1]:
            x = F.dropout(x, self.hparams.dropout, self.training)
            x = conv(x, edge_index).relu()
        return x

    def classify(self, h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.convs[-1](F.dropout(h, self.hparams.dropout, self.training), edge_index)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)`` of every node."""
        return self.classify(self.encode(x, edge_index), edge_index)

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        x, edge_index, y, mask = batch
        h = self.encode(x, edge_index)
        logits = self.classify(h, edge_index)
        loss = F.cross_entropy(logits[mask], y[mask])
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss)  # update(): a call would also compute a per-batch value
        if stage != "train":  # the training loss is logged once an epoch, from on_train_epoch_end
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        if stage != "train":
            acc = getattr(self, f"{stage}_acc")
            acc(logits[mask], y[mask])
            self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if stage == "test":
            self.test_acc_majority(y[mask])
            self.log("test/acc_majority", self.test_acc_majority, on_step=False, on_epoch=True)
        if stage == "val":
            self._embedding = (h.detach(), y, logits.argmax(-1))
        return loss

    def on_train_epoch_end(self) -> None:
        # The training loss is logged here, once an epoch, rather than from every training_step: the same epoch mean
        # at the same step, without Lightning's per-call logging cost on every batch.
        if self.train_loss.update_called:
            self.log("train/loss", self.train_loss, prog_bar=True)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """``{"probs": (M, num_classes)}``: class probabilities of the batch's chosen nodes, from one pass over the
        whole graph. The batch's last tensor chooses them: a boolean mask (the data module's loaders, nodes in node
        order) or node ids (``dlbench predict``'s batches ``(x, edge_index, node_ids)``, in that order)."""
        x, edge_index, *_, nodes = batch
        return {"probs": self(x, edge_index)[nodes].float().softmax(-1)}

    def on_validation_epoch_end(self) -> None:
        embedding, self._embedding = self._embedding, None
        every = self.hparams.embedding_every_n_epochs
        if embedding is None or not every or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        if not isinstance(self.logger, TensorBoardLogger):
            return
        epoch = self.current_epoch + 1
        if epoch % every and epoch != self.trainer.max_epochs:
            return
        h, y, pred = (t.cpu() for t in embedding)
        metadata = [[str(label), str(guess)] for label, guess in zip(y.tolist(), pred.tolist(), strict=True)]
        self.logger.experiment.add_embedding(h, metadata=metadata, metadata_header=["label", "predicted"],
                                             tag="nodes/hidden", global_step=self.global_step)

    def configure_optimizers(self):
        first, rest = self.convs[0].parameters(), [p for conv in self.convs[1:] for p in conv.parameters()]
        groups = [{"params": list(first), "weight_decay": self.hparams.weight_decay}]
        if rest:
            groups.append({"params": rest, "weight_decay": 0.0})
        return torch.optim.Adam(groups, lr=self.hparams.lr)
