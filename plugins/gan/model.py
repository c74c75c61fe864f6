"""A generative adversarial network (Goodfellow et al., 2014): a generator turns noise into images, a discriminator
learns to tell them from real ones, and each is trained against the other with its own Adam optimiser.

Two architectures, after the source articles' two examples:

* ``arch="mlp"``: dense layers with LeakyReLU(0.2). The articles' Keras example is noise(100) -> 256 -> 512 -> 1024
  -> image (tanh) against image -> 512 -> 256 -> real/fake, Adam with lr 2e-4 and beta1 0.5: pass
  ``--model.generator_sizes [256,512,1024] --model.discriminator_sizes [512,256] --model.lr 2e-4``. The defaults
  are smaller and quicker, for the 8x8 digits: 128 -> 256 against 256 -> 128, with batch norm in the generator,
  dropout 0.3 in the discriminator and lr 1e-3. On digits (1,437 training images, batch 64) these reached a
  validation Frechet distance of 15 in the default 100 epochs, where the articles' settings were still above 450
  after 60 epochs.
* ``arch="dcgan"``: the articles' transposed-convolution generator, scaled to the data: a dense layer to a
  ``2*channels`` map of a quarter of the image side, two stride-2 transposed convolutions (with batch norm) up to
  full size; the discriminator mirrors it with two stride-2 convolutions, batch norm on the inner one as in DCGAN
  (without it the 8x8 digits came out as checkerboards). Needs an image side divisible by 4. It learns best with
  the DCGAN paper's lr 2e-4 and no dropout: on digits, ``--model.arch dcgan --model.channels 32 --model.lr 2e-4
  --model.dropout 0`` reached a validation distance near 20 in 20 epochs (the mlp defaults: near 40).

The images arrive normalised per channel, so the generator's tanh is stretched onto the range of the training images
(``pixel_lo``..``pixel_hi``, measured when training starts). Training uses manual optimisation: a discriminator
step on real and generated images, then a generator step with the non-saturating loss.

Quality is a Frechet distance in the features of a small CNN classifier trained on the same training split when the
fit starts (:mod:`dlbench.train.fid`; Inception weights cannot be had offline and suit 8x8 grey images badly).
``val/fid`` and ``test/fid`` compare generated images with real ones of the split; two reference distances sit beside
the test score, computed with the same features and the same number of images: ``test/fid_real``, between two
disjoint halves of the real test images (what a perfect generator would score), and ``test/fid_noise``, between
Gaussian noise with the data's per-channel mean and standard deviation and the same real half (what no learning
scores). The test score compares ``len(half)`` generated images with that half too, so all three are alike.

``dlbench predict --run RUN --num_samples N [--seed S]`` draws N images as PNG files, each from noise fixed by the seed
and its own index (as validation and test fix theirs by seed), so the same seed gives byte-identical images whatever
the batch size or device. A GAN has no encoder: it takes no ``--input``.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from dlbench import DlbenchError, FeatureNet, FrechetDistance, LossMean, train_feature_net

ARCHS = ("mlp", "dcgan")
SHOWN = 64  # generated images in each validation-epoch grid, always from the same noise


def mlp_generator(latent_dim: int, sizes: tuple[int, ...], image_shape: tuple[int, int, int],
                  batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip((latent_dim, *sizes), sizes, strict=False):
        layers += [nn.Linear(n_in, n_out), *([nn.BatchNorm1d(n_out)] if batch_norm else []), nn.LeakyReLU(0.2)]
    pixels = image_shape[0] * image_shape[1] * image_shape[2]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], pixels), nn.Tanh(), nn.Unflatten(1, image_shape))


def mlp_discriminator(pixels: int, sizes: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for n_in, n_out in zip((pixels, *sizes), sizes, strict=False):
        layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], 1))


def dcgan_generator(latent_dim: int, channels: int, in_channels: int, image_size: int,
                    batch_norm: bool) -> nn.Sequential:
    side = image_size // 4
    width = 2 * channels * side * side
    return nn.Sequential(
        nn.Linear(latent_dim, width), *([nn.BatchNorm1d(width)] if batch_norm else []), nn.ReLU(),
        nn.Unflatten(1, (2 * channels, side, side)),
        nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1),
        *([nn.BatchNorm2d(channels)] if batch_norm else []), nn.ReLU(),
        nn.ConvTranspose2d(channels, in_channels, 4, stride=2, padding=1), nn.Tanh(),
    )


def dcgan_discriminator(channels: int, in_channels: int, image_size: int, batch_norm: bool,
                        dropout: float) -> nn.Sequential:
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Dropout(dropout),
        nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
        *([nn.BatchNorm2d(2 * channels)] if batch_norm else []), nn.LeakyReLU(0.2), nn.Dropout(dropout),
        nn.Flatten(), nn.Linear(2 * channels * side * side, 1),
    )


def noise(n: int, dim: int, seed: int, device: torch.device) -> torch.Tensor:
    """``(n, dim)`` standard normal noise fixed by ``seed``, whatever the global random state."""
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)).to(device)


def seeded_noise(seeds: torch.Tensor, dim: int, device: torch.device) -> torch.Tensor:
    """``(len(seeds), dim)`` standard normal noise, row ``i`` fixed by ``seeds[i]`` alone: a sample does not depend on
    the batch it is drawn in, nor on the global random state."""
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds.tolist()]
    return torch.stack(rows).to(device) if rows else torch.zeros(0, dim, device=device)


class GAN(L.LightningModule):
    predicts_from = "samples"
    """``dlbench predict`` draws ``--num_samples`` images; a GAN has no encoder, so it takes no ``--input``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, arch: str = "mlp",
                 latent_dim: int = 100, generator_sizes: tuple[int, ...] = (128, 256),
                 discriminator_sizes: tuple[int, ...] = (256, 128), channels: int = 64, batch_norm: bool = True,
                 dropout: float = 0.3, lr: float = 1e-3, feature_steps: int = 300) -> None:
        """
        Args:
            num_classes: Classes of the data, for the feature classifier of the Frechet distance (linked from the data).
            in_channels: Channels of the images (linked from the data).
            image_size: Height and width of the square images (linked from the data).
            arch: "mlp" (dense generator and discriminator) or "dcgan" (transposed convolutions; side divisible by 4).
            latent_dim: Size of the noise vector the generator starts from (100 in the articles' examples).
            generator_sizes: Hidden layers of the mlp generator, noise side first.
            discriminator_sizes: Hidden layers of the mlp discriminator, image side first.
            channels: Feature maps of the dcgan layers next to the image (twice as many in the inner layer).
            batch_norm: Batch norm after the generator's hidden layers and the dcgan discriminator's inner one.
            dropout: Dropout after the discriminator's hidden layers.
            lr: Adam learning rate of both networks (betas 0.5, 0.999).
            feature_steps: Training steps of the feature classifier for the Frechet distance, once per fit.
        """
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        for name, value in (("in_channels", in_channels), ("latent_dim", latent_dim), ("channels", channels),
                            ("feature_steps", feature_steps)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if image_size < 4:
            raise ValueError(f"image_size must be >= 4, got {image_size}")
        if arch == "dcgan" and image_size % 4:
            raise ValueError(f"image_size must be divisible by 4 for arch='dcgan', got {image_size}")
        for name, sizes in (("generator_sizes", generator_sizes), ("discriminator_sizes", discriminator_sizes)):
            if not sizes or any(h < 1 for h in sizes):
                raise ValueError(f"{name} must be one or more sizes >= 1, got {list(sizes)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.image_shape = (in_channels, image_size, image_size)
        pixels = in_channels * image_size * image_size
        if arch == "mlp":
            self.generator = mlp_generator(latent_dim, generator_sizes, self.image_shape, batch_norm)
            self.discriminator = mlp_discriminator(pixels, discriminator_sizes, dropout)
        else:
            self.generator = dcgan_generator(latent_dim, channels, in_channels, image_size, batch_norm)
            self.discriminator = dcgan_discriminator(channels, in_channels, image_size, batch_norm, dropout)
        self.example_input_array = torch.zeros(2, latent_dim)

        # Measured on the training split when a fit starts; buffers, so checkpoints carry them.
        self.register_buffer("pixel_lo", torch.full((in_channels,), -1.0))
        self.register_buffer("pixel_hi", torch.full((in_channels,), 1.0))
        self.register_buffer("prepared", torch.tensor(False))
        self.register_buffer("shown_noise", noise(SHOWN, latent_dim, seed=0, device=torch.device("cpu")))
        self.feature_net = FeatureNet(in_channels, image_size, num_classes).requires_grad_(False)

        self.train_loss_g, self.train_loss_d = LossMean(), LossMean()
        num_features = self.feature_net.num_features
        self.val_fid, self.test_fid = FrechetDistance(num_features), FrechetDistance(num_features)
        self.test_fid_real, self.test_fid_noise = FrechetDistance(num_features), FrechetDistance(num_features)
        self.test_feature_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Noise ``(N, latent_dim)`` -> images ``(N, C, H, W)`` in the normalised space of the data."""
        unit = (self.generator(z) + 1) / 2
        lo, hi = self.pixel_lo.view(1, -1, 1, 1), self.pixel_hi.view(1, -1, 1, 1)
        return lo + (hi - lo) * unit

    # -- fitted once per run: pixel range and the feature classifier of the Frechet distance ---------------------

    def _prepare(self) -> None:
        if self.prepared:
            return
        dm = self.trainer.datamodule
        batches = [dm.on_after_batch_transfer(batch, 0) for batch in dm.train_dataloader()]
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        train_feature_net(self.feature_net, x, y, steps=self.hparams.feature_steps)
        # Under DDP each rank sees its own shard; rank 0's results are used everywhere.
        lo, hi, weights = self.trainer.strategy.broadcast((x.amin(dim=(0, 2, 3)), x.amax(dim=(0, 2, 3)),
                                                           self.feature_net.state_dict()))
        self.feature_net.load_state_dict(weights)
        self.pixel_lo.copy_(lo)
        self.pixel_hi.copy_(hi)
        self.prepared.fill_(True)

    def on_fit_start(self) -> None:
        self._prepare()

    def on_validation_start(self) -> None:
        self._prepare()  # `dlbench validate` without a checkpoint

    def on_test_start(self) -> None:
        self._prepare()

    # -- training ----------------------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        x, _ = batch
        opt_g, opt_d = self.optimizers()
        fake = self(torch.randn(len(x), self.hparams.latent_dim, device=x.device))
        real_label, fake_label = torch.ones(len(x), 1, device=x.device), torch.zeros(len(x), 1, device=x.device)
        bce = nn.functional.binary_cross_entropy_with_logits

        self.toggle_optimizer(opt_d)
        loss_d = bce(self.discriminator(x), real_label) + bce(self.discriminator(fake.detach()), fake_label)
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        # Non-saturating generator loss: make the discriminator call the generated images real.
        self.toggle_optimizer(opt_g)
        loss_g = bce(self.discriminator(fake), real_label)
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        # update(), not a call (which also computes a per-batch value); logged once an epoch, from on_train_epoch_end.
        self.train_loss_d.update(loss_d, weight=len(x))
        self.train_loss_g.update(loss_g, weight=len(x))

    def on_train_epoch_end(self) -> None:
        # Logged here, once an epoch, rather than from every training_step: the same epoch means at the same step,
        # without Lightning's per-call logging cost on every batch.
        if self.train_loss_d.update_called:
            self.log("train/loss_d", self.train_loss_d, prog_bar=True)
            self.log("train/loss_g", self.train_loss_g, prog_bar=True)

    def configure_optimizers(self):
        betas = (0.5, 0.999)  # the DCGAN paper's and the articles' beta1 = 0.5
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=betas)
        return [opt_g, opt_d]

    # -- evaluation --------------------------------------------------------------------------------------------

    def _samples(self, n: int, seed: int) -> torch.Tensor:
        return self(noise(n, self.hparams.latent_dim, seed, self.device))

    def validation_step(self, batch, batch_idx):
        x, _ = batch
        self.val_fid.update(self.feature_net.features(x), real=True)
        self.val_fid.update(self.feature_net.features(self._samples(len(x), seed=batch_idx)), real=False)
        self.log("val/fid", self.val_fid, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        features = self.feature_net.features
        half, reference = x[0::2], features(x[1::2])
        # Seeds apart from validation's, so the test does not reuse the noise checkpoints were chosen on.
        g = torch.Generator().manual_seed(10_000 + batch_idx)
        candidates = {
            self.test_fid: self._samples(len(half), seed=20_000 + batch_idx),
            self.test_fid_real: half,
            self.test_fid_noise: torch.randn(half.shape, generator=g).to(x.device),  # normalised data: mean 0, std 1
        }
        for metric, images in candidates.items():
            metric.update(reference, real=True)
            metric.update(features(images), real=False)
        self.test_feature_acc(self.feature_net(x), y)
        self.log("test/fid", self.test_fid, on_step=False, on_epoch=True)
        self.log("test/fid_real", self.test_fid_real, on_step=False, on_epoch=True)
        self.log("test/fid_noise", self.test_fid_noise, on_step=False, on_epoch=True)
        self.log("test/feature_acc", self.test_feature_acc, on_step=False, on_epoch=True)

    def sample(self, seeds: torch.Tensor) -> torch.Tensor:
        """Generated images ``(N, C, H, W)`` in the normalised space of the data, one a seed ``(N,)``: the same seed
        always gives the same image."""
        return self(seeded_noise(seeds, self.hparams.latent_dim, self.device))

    def predict_step(self, batch, batch_idx):
        """``images`` generated from a batch of integer seeds ``(seeds,)`` (``(N,)`` int64, as
        :meth:`ImagePredictor.generate` makes them for ``dlbench predict --num_samples``), each from its own seed's
        noise (repeatable). A labelled batch ``(x, y)`` of the data module (Lightning's ``trainer.predict(model,
        datamodule=dm)``, :func:`dlbench.testing.check_round_trip`) gets as many images, from noise fixed by the batch
        index. Images alone, ``(x,)`` as ``dlbench predict --input`` reads them, are an error: a GAN has no encoder."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not first.is_floating_point() and first.dim() == 1:
            return {"images": self.sample(first)}
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and first.is_floating_point():
            return {"images": self._samples(len(first), seed=batch_idx)}
        raise DlbenchError("gan draws samples: drop --input and give --num_samples N (and --seed S for other "
                           "samples).")

    # -- pictures for TensorBoard ------------------------------------------------------------------------------

    def _to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> [0, 1] for display, upscaled so 8-pixel images are not specks."""
        lo, hi = self.pixel_lo.view(1, -1, 1, 1), self.pixel_hi.view(1, -1, 1, 1)
        x = ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
        scale = max(1, 32 // x.shape[-1])
        return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1).cpu()

    def on_validation_epoch_end(self) -> None:
        if not (isinstance(self.logger, TensorBoardLogger) and self.trainer.is_global_zero) \
                or self.trainer.sanity_checking:
            return
        self.logger.experiment.add_images("samples", self._to_unit(self(self.shown_noise)), self.global_step)
