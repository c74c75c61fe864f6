"""A dense autoencoder: the flattened image goes through fully connected layers down to a small code and back.

The source articles' example is 784 -> 64 (ReLU) -> 784 (sigmoid) on MNIST, trained with Adam on mean squared error.
Here the encoder and decoder may have hidden layers (``hidden_sizes``, mirrored in the decoder), the code is linear
(a ReLU code wastes the dimensions that fall negative) and so is the output: the images arrive normalised per
channel, not in [0, 1], so a sigmoid would clip them. ``latent_dim=64`` with ``hidden_sizes=()`` is the articles'
shape, but without the ReLU that model is linear and can at best tie with the PCA baseline below; the defaults, an
8-number code behind one 128-unit layer each side, suit the 8x8 digits.

The baseline is PCA with as many components as the code has numbers, fitted on the training split when training
starts: the best any *linear* encoder and decoder of that size can do. Test MSE below ``test/mse_pca`` means the
non-linear layers earned their keep. Both errors are per pixel, in the normalised space the model sees.

``dlbench predict --run RUN --input IMAGES`` writes each image's reconstruction as a PNG file of the run's image size
and its error in the same unit (``mse``: per pixel, normalised space) as a column.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MeanSquaredError

from dlbench import DlbenchError, LossMean

EMBEDDED_POINTS = 300  # test images sent to TensorBoard's projector: enough to see clusters, cheap to write


def dense_stack(sizes: list[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with a ReLU between each pair and none after the last."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:], strict=False):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def fit_pca(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(D,)`` and top-``k`` principal directions ``(D, k)`` of the rows of ``x`` ``(N, D)``.

    Exact: the eigenvectors of the ``D x D`` covariance in float64, cheap for image sizes up to a few thousand
    pixels (``torch.pca_lowrank`` is randomised and only approximate).
    """
    mean = x.mean(dim=0, dtype=torch.float64)
    cov = x.new_zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for chunk in x.split(4096):  # float64 a chunk at a time, not a float64 copy of the whole set
        centred = chunk.double() - mean
        cov += centred.T @ centred
    _, vectors = torch.linalg.eigh(cov / max(len(x) - 1, 1))  # ascending eigenvalues
    return mean.float(), vectors[:, -k:].flip(1).float()


def pca_reconstruct(x: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Project flattened ``x`` ``(N, D)`` onto the principal subspace and back."""
    return (x - mean) @ components @ components.T + mean


def to_unit(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Images rescaled to [0, 1] for display by the value range of ``reference`` (the real images among them),
    upscaled so 8-pixel images are not specks."""
    lo, hi = reference.amin(), reference.amax()
    x = ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    scale = max(1, 32 // x.shape[-1])
    return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


class Autoencoder(L.LightningModule):
    predicts_from = "inputs"
    """``dlbench predict`` reconstructs the user's images (``--input``); it draws no samples."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden_sizes: tuple[int, ...] = (128,),
                 latent_dim: int = 8, lr: float = 2e-3, weight_decay: float = 0.0) -> None:
        """
        Args:
            in_channels: Channels of the images (linked from the data).
            image_size: Height and width of the square images (linked from the data).
            hidden_sizes: Units of the encoder's hidden layers, input side first; the decoder mirrors them.
            latent_dim: Numbers in the code; the PCA baseline keeps as many components.
            lr: Adam learning rate.
            weight_decay: Adam weight decay.
        """
        super().__init__()
        for name, value in (("in_channels", in_channels), ("image_size", image_size), ("latent_dim", latent_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must all be >= 1, got {list(hidden_sizes)}")
        pixels = in_channels * image_size * image_size
        if latent_dim >= pixels:
            raise ValueError(f"latent_dim must be smaller than the {pixels} pixels of an image, got {latent_dim}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()
        self.image_shape = (in_channels, image_size, image_size)
        sizes = [pixels, *hidden_sizes, latent_dim]
        self.encoder = dense_stack(sizes)
        self.decoder = dense_stack(sizes[::-1])
        self.example_input_array = torch.zeros(2, *self.image_shape)

        # The PCA baseline lives in buffers so that it travels with checkpoints (``dlbench test`` on a saved run).
        self.register_buffer("pca_mean", torch.zeros(pixels))
        self.register_buffer("pca_components", torch.zeros(pixels, latent_dim))
        self.register_buffer("pca_fitted", torch.tensor(False))

        # One metric object per stage: torchmetrics accumulates over the epoch and syncs across processes.
        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        self.val_mse, self.test_mse = MeanSquaredError(), MeanSquaredError()
        self.val_mse_pca, self.test_mse_pca = MeanSquaredError(), MeanSquaredError()
        self._shown: torch.Tensor | None = None
        self._embedded: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> reconstructions of the same shape."""
        return self.decode(self.encode(x))

    # -- the PCA baseline, fitted once on the training split ---------------------------------------------------

    def _training_images(self) -> torch.Tensor:
        """Every training image as the model sees it (normalised, on the model's device)."""
        dm = self.trainer.datamodule
        return torch.cat([dm.on_after_batch_transfer(batch, 0)[0] for batch in dm.train_dataloader()])

    def _fit_pca(self) -> None:
        if self.pca_fitted:
            return
        mean, components = fit_pca(self._training_images().flatten(1), self.hparams.latent_dim)
        # Under DDP each rank sees its own shard; rank 0's fit is used everywhere so all ranks score the same PCA.
        mean, components = self.trainer.strategy.broadcast((mean, components))
        self.pca_mean.copy_(mean)
        self.pca_components.copy_(components)
        self.pca_fitted.fill_(True)

    def on_fit_start(self) -> None:
        self._fit_pca()

    def on_validation_start(self) -> None:
        self._fit_pca()  # `dlbench validate` without a checkpoint

    def on_test_start(self) -> None:
        self._fit_pca()

    # -- training and evaluation -----------------------------------------------------------------------------

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, _ = batch
        recon = self(x)
        loss = nn.functional.mse_loss(recon, x)
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss, weight=len(x))  # update(): a call would also compute a per-batch value
        if stage != "train":  # the training loss is logged once an epoch, from on_train_epoch_end
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        if stage != "train":
            mse, mse_pca = getattr(self, f"{stage}_mse"), getattr(self, f"{stage}_mse_pca")
            mse(recon, x)
            mse_pca(pca_reconstruct(x.flatten(1), self.pca_mean, self.pca_components), x.flatten(1))
            self.log(f"{stage}/mse", mse, on_step=False, on_epoch=True, prog_bar=True)
            self.log(f"{stage}/mse_pca", mse_pca, on_step=False, on_epoch=True)
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
        if batch_idx == 0:
            self._shown = batch[0][:32]

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")
        if sum(len(x) for x, _, _ in self._embedded) < EMBEDDED_POINTS:
            x, y = batch
            self._embedded.append((x[:EMBEDDED_POINTS], self.encode(x[:EMBEDDED_POINTS]), y[:EMBEDDED_POINTS]))

    def predict_step(self, batch, batch_idx):
        """Each image's reconstruction and its error: ``images`` ``(N, C, H, W)`` in the normalised space of the data
        (``dlbench predict`` writes them as PNG files) and ``mse`` ``(N,)``, the mean squared error per pixel in that
        same normalised space (the unit of ``val/mse`` and ``test/mse``)."""
        x = batch[0]
        if not x.is_floating_point():
            raise DlbenchError("the autoencoder reconstructs images and draws no samples: give --input IMAGE "
                               "[IMAGE ...] and drop --num_samples.")
        recon = self(x)
        return {"images": recon, "mse": (recon - x).square().flatten(1).mean(1)}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- pictures for TensorBoard ----------------------------------------------------------------------------

    def _writer(self):
        if isinstance(self.logger, TensorBoardLogger) and self.trainer.is_global_zero:
            return self.logger.experiment
        return None

    def on_validation_epoch_end(self) -> None:
        writer, x = self._writer(), self._shown
        self._shown = None
        if writer is None or x is None or self.trainer.sanity_checking:
            return
        # Rows of eight: originals, then their reconstructions beneath them.
        recon = self(x)
        rows = [t for i in range(0, len(x), 8) for t in (x[i : i + 8], recon[i : i + 8])]
        writer.add_images("reconstructions", to_unit(torch.cat(rows), x).cpu(), self.global_step)

    def on_test_epoch_end(self) -> None:
        writer, parts = self._writer(), self._embedded
        self._embedded = []
        if writer is None or not parts:
            return
        images, codes, labels = (torch.cat(t)[:EMBEDDED_POINTS].cpu() for t in zip(*parts, strict=True))
        writer.add_embedding(codes, metadata=labels.tolist(), label_img=to_unit(images, images),
                             global_step=self.global_step, tag="test_codes")
