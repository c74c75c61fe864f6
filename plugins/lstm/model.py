"""An LSTM that reads a window of past values and predicts the next one.

Follows the classic example of the source articles (a window of 10 past values predicts the next), with a
stacked LSTM, dropout between layers and a linear head on the last hidden state. RMSE is reported in the series'
own units, next to the naive persistence forecast (next value = last value) on the same windows, so a reader can
see at once whether the network is worth anything.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanSquaredError

from dlbench import LossMean, full_precision


class LSTMForecaster(L.LightningModule):
    def __init__(self, n_features: int = 1, window: int = 10, hidden_size: int = 64, num_layers: int = 2,
                 dropout: float = 0.1, lr: float = 3e-3, weight_decay: float = 0.0,
                 target_mean: float = 0.0, target_std: float = 1.0) -> None:
        """
        Args:
            n_features: Values per time step (linked from the data).
            window: Time steps the model reads (linked from the data).
            hidden_size: Units in each LSTM layer.
            num_layers: Stacked LSTM layers.
            dropout: Dropout between LSTM layers (ignored with one layer).
            lr: Adam learning rate.
            weight_decay: Adam weight decay.
            target_mean: Mean of the training series, to report errors in original units (linked from the data).
            target_std: Standard deviation of the training series (linked from the data).
        """
        super().__init__()
        for name, value in (("n_features", n_features), ("window", window), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if target_std <= 0:
            raise ValueError(f"target_std must be > 0, got {target_std}")
        self.save_hyperparameters()
        self.lstm = nn.LSTM(n_features, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, n_features)
        self.example_input_array = torch.zeros(2, window, n_features)
        # One metric object per stage: torchmetrics accumulates over the epoch and syncs across processes.
        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        self.val_rmse, self.test_rmse = MeanSquaredError(squared=False), MeanSquaredError(squared=False)
        self.val_rmse_persistence = MeanSquaredError(squared=False)
        self.test_rmse_persistence = MeanSquaredError(squared=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = full_precision(self.lstm, x)  # oneDNN's CPU LSTM has no bf16 kernel; cuDNN's runs bf16 as is
        return self.head(out[:, -1])

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.hparams.target_std + self.hparams.target_mean

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        pred = self(x)
        loss = nn.functional.mse_loss(pred, y)
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss, weight=len(y))  # update(): a call would also compute a per-batch value
        if stage != "train":
            target = self.denormalize(y)
            getattr(self, f"{stage}_rmse").update(self.denormalize(pred), target)
            getattr(self, f"{stage}_rmse_persistence").update(self.denormalize(x[:, -1]), target)
        return loss

    # Every metric is logged once an epoch, from the epoch-end hooks: the same epoch values at the same steps as an
    # on_epoch log from each step would give, without Lightning's per-call logging cost on every batch.
    def _log_epoch(self, stage: str) -> None:
        if not getattr(self, f"{stage}_loss").update_called:
            return
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), prog_bar=stage != "test")
        if stage != "train":
            self.log(f"{stage}/rmse", getattr(self, f"{stage}_rmse"), prog_bar=True)
            self.log(f"{stage}/rmse_persistence", getattr(self, f"{stage}_rmse_persistence"))

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """``{"forecast": (B, horizon)}`` in the series' own units: the ``horizon`` values (``--horizon``, read from
        ``self.predict_options``; default 1) after each standardised window ``batch[0]`` of shape
        ``(B, window, 1)``, forecast one step at a time, each forecast fed back as the newest value of the window
        for the next step. Undone with ``target_mean`` and ``target_std``, the statistics the data's predictor
        standardised with (see :mod:`dlbench_plugins.lstm.predict`)."""
        horizon = (getattr(self, "predict_options", None) or {}).get("horizon")
        horizon = 1 if horizon is None else int(horizon)
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        x = batch[0]
        steps = []
        for _ in range(horizon):
            step = self(x)  # (B, n_features), standardised
            steps.append(step)
            x = torch.cat([x[:, 1:], step.unsqueeze(1).to(x.dtype)], dim=1)
        forecast = self.denormalize(torch.stack(steps, dim=1).float())  # (B, horizon, n_features)
        return {"forecast": forecast.squeeze(-1) if forecast.shape[-1] == 1 else forecast}

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss"}}
