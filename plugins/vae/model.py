"""A variational autoencoder (Kingma and Welling, 2014): the encoder gives a Gaussian posterior over a small code,
a code drawn from it by reparameterisation is decoded into pixel likelihoods, and the training loss is the negative
evidence lower bound (ELBO): the expected negative log-likelihood of the image plus the KL divergence of the
posterior from the standard-normal prior, ``recon + beta * kl`` (``beta=1`` is the plain ELBO, larger values
trade reconstruction for a smoother code as in beta-VAE).

Dense encoder and decoder like the autoencoder plugin (the source articles have no VAE; the layout follows their
784 -> 64 -> 784 autoencoder). All quantities are nats per image, summed over pixels and code dimensions.

Likelihoods:

* ``gaussian``: independent pixels with unit variance around the decoder's output, in the data's normalised space
  (every channel has variance one there, so the unit variance is the data's own scale); the reconstruction term is
  half the summed squared error plus the Gaussian constant ``0.5 * log(2 pi)`` per pixel.
* ``bernoulli``: pixels rescaled to [0, 1] with the training split's per-channel range, and the decoder's outputs
  taken as logits: binary cross-entropy summed over pixels (the common continuous-target use of it).

Baseline, ``{val,test}/recon_mean``: the negative ELBO of the best model whose code carries no information. If the
posterior equals the prior, the KL term is zero and the decoder can only output one image for every input; under
either likelihood the best such image is the training set's mean image. Its reconstruction term on the same images
is therefore what ``{val,test}/loss`` must get under to show the code is worth its KL cost.

``dlbench predict`` either reconstructs the user's images (``--input IMAGES``: each reconstruction, decoded from the
posterior mean, as a PNG file and its per-pixel squared error in the normalised space, ``mse``, as a column) or draws
``--num_samples N`` images from the prior through the decoder, each from noise fixed by ``--seed`` and its own
index, so the same seed gives the same images whatever the batch size or device.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MeanSquaredError

from dlbench import DlbenchError, LossMean

LIKELIHOODS = ("gaussian", "bernoulli")
SHOWN = 64  # prior samples in each validation-epoch grid, always from the same noise
EMBEDDED_POINTS = 300  # test images sent to TensorBoard's projector


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over the last dimension, in closed form."""
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(dim=-1)


def dense_stack(sizes: list[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with a ReLU between each pair and none after the last."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:], strict=False):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def noise(n: int, dim: int, seed: int, device: torch.device) -> torch.Tensor:
    """``(n, dim)`` standard normal noise fixed by ``seed``, whatever the global random state."""
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)).to(device)


def seeded_noise(seeds: torch.Tensor, dim: int, device: torch.device) -> torch.Tensor:
    """``(len(seeds), dim)`` standard normal noise, row ``i`` fixed by ``seeds[i]`` alone: a sample does not depend on
    the batch it is drawn in, nor on the global random state."""
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds.tolist()]
    return torch.stack(rows).to(device) if rows else torch.zeros(0, dim, device=device)


class VAE(L.LightningModule):
    predicts_from = "either"
    """``dlbench predict`` reconstructs the user's images (``--input``) or, without them, draws ``--num_samples``."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden_sizes: tuple[int, ...] = (256,),
                 latent_dim: int = 8, likelihood: str = "gaussian", beta: float = 1.0, lr: float = 2e-3,
                 weight_decay: float = 0.0) -> None:
        """
        Args:
            in_channels: Channels of the images (linked from the data).
            image_size: Height and width of the square images (linked from the data).
            hidden_sizes: Units of the encoder's hidden layers, input side first; the decoder mirrors them.
            latent_dim: Dimensions of the code (the posterior's mean and log-variance each have as many).
            likelihood: Pixel model of the decoder: "gaussian" (unit variance, squared error) or "bernoulli".
            beta: Weight of the KL term; 1 is the ELBO, larger values give a beta-VAE.
            lr: Adam learning rate.
            weight_decay: Adam weight decay.
        """
        super().__init__()
        for name, value in (("in_channels", in_channels), ("image_size", image_size), ("latent_dim", latent_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must all be >= 1, got {list(hidden_sizes)}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()
        self.image_shape = (in_channels, image_size, image_size)
        sizes = [in_channels * image_size * image_size, *hidden_sizes]
        self.encoder = dense_stack([*sizes, 2 * latent_dim])
        self.decoder = dense_stack([latent_dim, *sizes[::-1]])
        self.example_input_array = torch.zeros(2, *self.image_shape)

        # Measured on the training split when a fit starts; buffers, so checkpoints carry them.
        self.register_buffer("pixel_lo", torch.full((in_channels,), -1.0))
        self.register_buffer("pixel_hi", torch.full((in_channels,), 1.0))
        self.register_buffer("mean_output", torch.zeros(self.image_shape))  # the baseline's decoder output
        self.register_buffer("prepared", torch.tensor(False))
        self.register_buffer("shown_noise", noise(SHOWN, latent_dim, seed=0, device=torch.device("cpu")))

        # One metric object per stage: torchmetrics accumulates over the epoch and syncs across processes.
        for stage in ("train", "val", "test"):
            for name in ("loss", "recon", "kl"):
                setattr(self, f"{stage}_{name}", LossMean())
        self.val_recon_mean, self.test_recon_mean = LossMean(), LossMean()
        self.val_mse, self.test_mse = MeanSquaredError(), MeanSquaredError()
        self._shown: torch.Tensor | None = None
        self._embedded: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # -- the model ---------------------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> posterior mean and log-variance, each ``(N, latent_dim)``."""
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes -> decoder outputs ``(N, C, H, W)``: pixel means (gaussian) or logits (bernoulli)."""
        return self.decoder(z).view(-1, *self.image_shape)

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixel_lo.view(1, -1, 1, 1), self.pixel_hi.view(1, -1, 1, 1)

    def to_image(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder outputs -> the expected image, in the normalised space of the data."""
        if self.hparams.likelihood == "gaussian":
            return out
        lo, hi = self._range()
        return lo + (hi - lo) * out.sigmoid()

    def nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of images ``x`` under decoder outputs ``out``, summed over pixels: ``(N,)``."""
        if self.hparams.likelihood == "gaussian":
            return 0.5 * (x - out).square().flatten(1).sum(1) + 0.5 * math.log(2 * math.pi) * x[0].numel()
        lo, hi = self._range()
        target = ((x - lo) / (hi - lo)).clamp(0, 1)
        bce = nn.functional.binary_cross_entropy_with_logits(out.expand_as(x), target, reduction="none")
        return bce.flatten(1).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> reconstructions decoded from the posterior means (no sampling)."""
        return self.to_image(self.decode(self.encode(x)[0]))

    # -- fitted once per run: pixel range and the mean-image baseline ------------------------------------------

    def _prepare(self) -> None:
        if self.prepared:
            return
        dm = self.trainer.datamodule
        x = torch.cat([dm.on_after_batch_transfer(batch, 0)[0] for batch in dm.train_dataloader()])
        lo, hi = x.amin(dim=(0, 2, 3)), x.amax(dim=(0, 2, 3))
        mean = x.mean(dim=0)
        if self.hparams.likelihood == "bernoulli":  # the logits whose sigmoid is the mean [0, 1] image
            unit = (mean - lo.view(-1, 1, 1)) / (hi - lo).view(-1, 1, 1)
            mean = torch.logit(unit.clamp(1e-4, 1 - 1e-4))
        # Under DDP each rank sees its own shard; rank 0's results are used everywhere.
        lo, hi, mean = self.trainer.strategy.broadcast((lo, hi, mean))
        self.pixel_lo.copy_(lo)
        self.pixel_hi.copy_(hi)
        self.mean_output.copy_(mean)
        self.prepared.fill_(True)

    def on_fit_start(self) -> None:
        self._prepare()

    def on_validation_start(self) -> None:
        self._prepare()  # `dlbench validate` without a checkpoint

    def on_test_start(self) -> None:
        self._prepare()

    # -- training and evaluation -----------------------------------------------------------------------------

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        mu, logvar = self.encode(x)
        # Evaluation draws its noise from a seed, so val/loss (which picks checkpoints) is repeatable.
        eps = torch.randn_like(mu) if stage == "train" else noise(*mu.shape, seed=batch_idx, device=mu.device)
        out = self.decode(mu + eps * (0.5 * logvar).exp())
        recon, kl = self.nll(out, x), kl_to_standard_normal(mu, logvar)
        loss = (recon + self.hparams.beta * kl).mean()
        for name, value in (("loss", loss), ("recon", recon.mean()), ("kl", kl.mean())):
            metric = getattr(self, f"{stage}_{name}")
            metric.update(value, weight=len(x))  # update(): a call would also compute a per-batch value
            if stage != "train":  # training metrics are logged once an epoch, from on_train_epoch_end
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "loss")
        if stage != "train":
            baseline, mse = getattr(self, f"{stage}_recon_mean"), getattr(self, f"{stage}_mse")
            baseline(self.nll(self.mean_output.unsqueeze(0), x).mean(), weight=len(x))
            mse(self.to_image(self.decode(mu)), x)
            self.log(f"{stage}/recon_mean", baseline, on_step=False, on_epoch=True)
            self.log(f"{stage}/mse", mse, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        # Logged here, once an epoch, rather than from every training_step: the same epoch means at the same step,
        # without Lightning's per-call logging cost on every batch.
        if self.train_loss.update_called:
            for name in ("loss", "recon", "kl"):
                self.log(f"train/{name}", getattr(self, f"train_{name}"), prog_bar=name == "loss")

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", batch_idx)
        if batch_idx == 0:
            self._shown = batch[0][:32]

    def test_step(self, batch, batch_idx):
        self._step(batch, "test", batch_idx)
        if sum(len(x) for x, _, _ in self._embedded) < EMBEDDED_POINTS:
            x, y = batch[0][:EMBEDDED_POINTS], batch[1][:EMBEDDED_POINTS]
            self._embedded.append((x, self.encode(x)[0], y))

    def sample(self, seeds: torch.Tensor) -> torch.Tensor:
        """Images drawn from the prior through the decoder (their expected images), one a seed ``(N,)``, in the
        normalised space of the data."""
        return self.to_image(self.decode(seeded_noise(seeds, self.hparams.latent_dim, self.device)))

    def predict_step(self, batch, batch_idx):
        """A batch of images ``(x,)`` (or ``(x, y)``): ``images``, their reconstructions decoded from the posterior
        means (no sampling), and ``mse`` ``(N,)``, their mean squared error per pixel in the normalised space. A
        batch of integer seeds ``(seeds,)`` (``(N,)`` int64, as :meth:`ImagePredictor.generate` makes them for
        ``dlbench predict --num_samples``): ``images`` drawn from the prior, each from its own seed's noise. Images
        are in the normalised space of the data, ``(N, C, H, W)``."""
        x = batch[0]
        if not x.is_floating_point():
            if x.dim() != 1:
                raise DlbenchError(f"VAE.predict_step takes images (N, C, H, W) or seeds (N,); got integers of shape "
                                   f"{tuple(x.shape)}")
            return {"images": self.sample(x)}
        mu, _ = self.encode(x)
        recon = self.to_image(self.decode(mu))
        return {"images": recon, "mse": (recon - x).square().flatten(1).mean(1)}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- pictures for TensorBoard ----------------------------------------------------------------------------

    def _to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> [0, 1] for display, upscaled so 8-pixel images are not specks."""
        lo, hi = self._range()
        x = ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
        scale = max(1, 32 // x.shape[-1])
        return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1).cpu()

    def _writer(self):
        if isinstance(self.logger, TensorBoardLogger) and self.trainer.is_global_zero:
            return self.logger.experiment
        return None

    def on_validation_epoch_end(self) -> None:
        writer, x = self._writer(), self._shown
        self._shown = None
        if writer is None or x is None or self.trainer.sanity_checking:
            return
        recon = self(x)
        rows = [t for i in range(0, len(x), 8) for t in (x[i : i + 8], recon[i : i + 8])]
        writer.add_images("reconstructions", self._to_unit(torch.cat(rows)), self.global_step)
        writer.add_images("samples", self._to_unit(self.to_image(self.decode(self.shown_noise))), self.global_step)

    def on_test_epoch_end(self) -> None:
        writer, parts = self._writer(), self._embedded
        self._embedded = []
        if writer is None or not parts:
            return
        # Still on the model's device: _to_unit scales by the pixel range held there, then moves to the host.
        images, codes, labels = (torch.cat(t)[:EMBEDDED_POINTS] for t in zip(*parts, strict=True))
        writer.add_embedding(codes.cpu(), metadata=labels.tolist(), label_img=self._to_unit(images),
                             global_step=self.global_step, tag="test_codes")
