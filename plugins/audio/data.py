"""Speech-command data as log-mel (or MFCC) features held in memory.

:class:`AudioDataModule` does the common part: waveforms of every split are cut or zero-padded to one clip length,
turned into features once at setup (``(N, n_mels, n_frames)``, 32 ms Hann windows every 10 ms at 8 kHz),
normalised per mel band with statistics of the training split, and served in batches on the training device.
Datasets only say how to load their waveforms: :class:`SyntheticSpeechDataModule` (generated, the default) and
:class:`FsddDataModule` (the Free Spoken Digit Dataset).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from dlbench_plugins.audio import synthetic

from dlbench import DlbenchError
from dlbench.data.batches import tensor_loader
from dlbench.data.download import Remote, data_root, extract, fetch
from dlbench.data.wav import fit_length, log_mel, mfcc, read_wav

SAMPLE_RATE = 8000
N_FFT = 256  # 32 ms window at 8 kHz
HOP_LENGTH = 80  # 10 ms: 100 frames a second, the articles' "100 steps"

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


def to_clip(samples: torch.Tensor, clip_samples: int) -> torch.Tensor:
    """A ``(channels, frames)`` recording as one training clip: channels averaged to mono, then cut or zero-padded
    to ``clip_samples``."""
    return fit_length(samples.mean(0), clip_samples)


def clip_features(waveforms: torch.Tensor, n_mels: int, features: str, sample_rate: int = SAMPLE_RATE,
                  n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> torch.Tensor:
    """Features ``(N, n_mels, n_frames)`` of ``(N, samples)`` clips before normalisation: log mel power, or its MFCC
    with ``features="mfcc"``. The one feature pipeline of training and prediction."""
    feats = log_mel(waveforms, sample_rate, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length)
    return mfcc(feats) if features == "mfcc" else feats


def spec_augment(x: torch.Tensor, max_time: int, max_freq: int) -> torch.Tensor:
    """SpecAugment-style masking (Park et al., 2019): per example, one band of up to ``max_time`` frames and one of up
    to ``max_freq`` mel bands set to 0 (the mean, since features are normalised). Vectorised over the batch."""
    n, n_mels, n_frames = x.shape

    def band(size: int, limit: int) -> torch.Tensor:
        width = torch.randint(0, limit + 1, (n, 1), device=x.device)
        start = (torch.rand(n, 1, device=x.device) * (size - width + 1)).long()
        pos = torch.arange(size, device=x.device)[None, :]
        return (pos >= start) & (pos < start + width)

    masked = band(n_frames, max_time)[:, None, :] | band(n_mels, max_freq)[:, :, None]
    return x.masked_fill(masked, 0.0)


class AudioDataModule(L.LightningDataModule):
    """Base for in-memory speech-command sets at 8 kHz. Subclasses implement :meth:`load`."""

    num_classes: int = 10
    class_names: list[str] = [str(d) for d in range(10)]

    def __init__(self, n_mels: int = 40, n_frames: int = 100, features: Literal["logmel", "mfcc"] = "logmel",
                 augment: bool = False, batch_size: int = 64) -> None:
        """
        Args:
            n_mels: Mel bands (features per frame; with mfcc, as many cepstral coefficients).
            n_frames: Frames per clip, 10 ms each; clips are cut or zero-padded to this length.
            features: "logmel" (log mel power) or "mfcc" (its DCT along the mel axis).
            augment: SpecAugment-style masking of one time band (up to 10 frames) and one mel band (up to an
                eighth of the bands) per training example.
            batch_size: Clips per training batch.
        """
        super().__init__()
        if n_mels < 1 or n_frames < 1:
            raise ValueError(f"n_mels and n_frames must be >= 1, got {n_mels} and {n_frames}")
        if features not in ("logmel", "mfcc"):
            raise ValueError(f"features must be 'logmel' or 'mfcc', got {features!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        # Sizes the model receives through linked arguments (see dlbench.core.spec.DATA_KINDS).
        self.n_mels, self.n_frames = n_mels, n_frames
        self.splits: Splits = {}

    @property
    def clip_samples(self) -> int:
        # Centred STFT frames: 1 + samples // hop of them, so this many samples give exactly n_frames.
        return (self.n_frames - 1) * HOP_LENGTH

    def load(self) -> Splits:
        """``{"train" | "val" | "test": (waveforms (N, clip_samples) float32, labels (N,) int64)}``."""
        raise NotImplementedError

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        return clip_features(waveforms, self.n_mels, self.hparams.features)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        feats = {split: (self.features(waves), labels) for split, (waves, labels) in self.load().items()}
        train = feats["train"][0]
        self.mean = train.mean(dim=(0, 2), keepdim=True)
        self.std = train.std(dim=(0, 2), keepdim=True).clamp_min(1e-5)
        self.splits = {split: ((x - self.mean) / self.std, y) for split, (x, y) in feats.items()}

    def predictor(self):
        """What ``dlbench predict`` and ``dlbench serve`` need: the sample rate, clip length, feature settings, the
        training split's per-band statistics and the class names (see :mod:`dlbench.data.predict`)."""
        from dlbench_plugins.audio.predict import AudioPredictor

        self.setup("fit")
        return AudioPredictor(sample_rate=SAMPLE_RATE, clip_samples=self.clip_samples, n_mels=self.n_mels,
                              n_fft=N_FFT, hop_length=HOP_LENGTH, features=self.hparams.features,
                              mean=self.mean.flatten().tolist(), std=self.std.flatten().tolist(),
                              class_names=list(self.class_names))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        trainer = self.trainer
        # The model summary passes the bare example input through here too: only (features, labels) get masked.
        if self.hparams.augment and trainer is not None and trainer.training and isinstance(batch, (tuple, list)):
            x, y = batch
            batch = spec_augment(x, max_time=10, max_freq=max(1, self.n_mels // 8)), y
        return batch

    def _loader(self, split: str, shuffle: bool):
        x, y = self.splits[split]
        size = self.hparams.batch_size if shuffle else max(self.hparams.batch_size, 512)
        return tensor_loader(self, x, y, batch_size=size, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("test", shuffle=False)


class SyntheticSpeechDataModule(AudioDataModule):
    """Ten generated "words" spoken by random synthetic speakers in noise (see ``dlbench_plugins.audio.synthetic``).

    The default data of the ``audio`` plugin: no real speech ships offline with dlbench's dependencies.
    """

    class_names = list(synthetic.WORDS)

    def __init__(self, num_train: int = 2000, num_val: int = 300, num_test: int = 500, seed: int = 0,
                 n_mels: int = 40, n_frames: int = 100, features: Literal["logmel", "mfcc"] = "logmel",
                 augment: bool = False, batch_size: int = 64) -> None:
        """
        Args:
            num_train: Generated training clips.
            num_val: Generated validation clips.
            num_test: Generated test clips.
            seed: Seed of the generator, kept apart from the training seed so that every run sees the same clips.
            n_mels: Mel bands (features per frame; with mfcc, as many cepstral coefficients).
            n_frames: Frames per clip, 10 ms each; clips are cut or zero-padded to this length.
            features: "logmel" (log mel power) or "mfcc" (its DCT along the mel axis).
            augment: SpecAugment-style masking of one time band and one mel band per training example.
            batch_size: Clips per training batch.
        """
        if min(num_train, num_val, num_test) < 1:
            raise ValueError(f"num_train, num_val and num_test must be >= 1, got {num_train}, {num_val}, {num_test}")
        super().__init__(n_mels=n_mels, n_frames=n_frames, features=features, augment=augment, batch_size=batch_size)

    def load(self) -> Splits:
        h = self.hparams
        # One generator stream per split: changing num_train leaves the test clips as they were.
        return {split: synthetic.render(n, self.clip_samples, seed=h.seed * 3 + i)
                for i, (split, n) in enumerate((("train", h.num_train), ("val", h.num_val), ("test", h.num_test)))}


FSDD_ARCHIVE = Remote(
    filename="free-spoken-digit-dataset-1.0.10.zip",
    urls=("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.zip",),
    # The FSDD authors publish no checksum. This is the SHA-256 of GitHub's generated zip of tag v1.0.10 (commit
    # d6938f9b, 16,419,872 bytes) as recorded by an independent audit in 2026; it could not be re-measured offline.
    # The unpacked release is checked as well: it must hold 3,000 recordings, and each is parsed when read.
    sha256="c680098f5d2355ba7cc4bd8b0ca9e0a24c00ebe3b4c552208889a4d28d4fbc2b",
)
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
FSDD_RECORDINGS = 3000


def find_recordings(root: str | None) -> Path | None:
    """The folder of FSDD WAV files under ``root`` (itself, ``recordings/`` or the unpacked release), if any."""
    base = data_root("fsdd", root)
    for folder in (base, base / "recordings", base / "free-spoken-digit-dataset-1.0.10" / "recordings"):
        if folder.is_dir() and any(folder.glob("*.wav")):
            return folder
    return None


def download_recordings(root: str | None) -> Path:
    archive = fetch("fsdd", FSDD_ARCHIVE, root)
    folder = extract(archive, data_root("fsdd", root) / "free-spoken-digit-dataset-1.0.10.tmp")
    unpacked = data_root("fsdd", root) / "free-spoken-digit-dataset-1.0.10"
    if unpacked.exists():  # left without recordings by an earlier, interrupted attempt
        shutil.rmtree(unpacked)
    (folder / "free-spoken-digit-dataset-1.0.10").rename(unpacked)
    folder.rmdir()
    count = len(list((unpacked / "recordings").glob("*.wav")))
    if count != FSDD_RECORDINGS:
        raise DlbenchError(f"fsdd: the downloaded release holds {count} recordings, expected {FSDD_RECORDINGS}. "
                           f"Delete {unpacked} and {archive} and try again.")
    return unpacked / "recordings"


def read_fsdd(folder: Path, clip_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Every recording in ``folder``: waveforms ``(N, clip_samples)``, digits, take indices, speakers."""
    files = sorted(folder.glob("*.wav"))
    waves, digits, takes, speakers = [], [], [], []
    for path in files:
        match = FSDD_NAME.match(path.name)
        if match is None:
            raise DlbenchError(f"fsdd: {path} is not named like an FSDD recording ('{{digit}}_{{speaker}}_{{index}}"
                               f".wav', e.g. 7_jackson_32.wav). Rename or remove it.")
        waves.append(to_clip(read_wav(path, SAMPLE_RATE), clip_samples))
        digits.append(int(match[1]))
        speakers.append(match[2])
        takes.append(int(match[3]))
    return torch.stack(waves), torch.tensor(digits), torch.tensor(takes), speakers


class FsddDataModule(AudioDataModule):
    """The Free Spoken Digit Dataset (Z. Jackson et al.; CC BY-SA 4.0): spoken digits 0-9, 8 kHz mono 16-bit WAV
    files named ``{digit}_{speaker}_{index}.wav``.

    The standard split puts takes 0-4 of every digit and speaker in the test set (300 of the 3,000 recordings of
    release v1.0.10); a random ``val_fraction`` of the rest is held out for validation. Clips longer than
    ``n_frames`` (0.99 s at the default 100; 99% of the recordings are shorter) lose their end.
    """

    def __init__(self, root: str | None = None, val_fraction: float = 0.1, seed: int = 0, n_mels: int = 40,
                 n_frames: int = 100, features: Literal["logmel", "mfcc"] = "logmel", augment: bool = False,
                 batch_size: int = 64) -> None:
        """
        Args:
            root: Folder holding the WAV files (or a recordings/ folder, or the unpacked release); downloaded from
                GitHub into ~/.cache/dlbench/fsdd ($DLBENCH_DATA_DIR/fsdd) when not given or empty.
            val_fraction: Fraction of the training recordings held out for validation.
            seed: Seed of the train/validation split, kept apart from the training seed.
            n_mels: Mel bands (features per frame; with mfcc, as many cepstral coefficients).
            n_frames: Frames per clip, 10 ms each; clips are cut or zero-padded to this length.
            features: "logmel" (log mel power) or "mfcc" (its DCT along the mel axis).
            augment: SpecAugment-style masking of one time band and one mel band per training example.
            batch_size: Clips per training batch.
        """
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        super().__init__(n_mels=n_mels, n_frames=n_frames, features=features, augment=augment, batch_size=batch_size)

    def load(self) -> Splits:
        folder = find_recordings(self.hparams.root) or download_recordings(self.hparams.root)
        waves, digits, takes, _ = read_fsdd(folder, self.clip_samples)
        test = takes < 5
        train_idx = (~test).nonzero().flatten()
        if not test.any() or len(train_idx) < 2:
            raise DlbenchError(f"fsdd: {folder} holds {len(waves)} recordings, {int(test.sum())} of them takes 0-4 "
                               f"(the test split): both splits need recordings. Point --data.root at the full set.")
        order = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(self.hparams.seed))]
        n_val = max(1, int(len(order) * self.hparams.val_fraction))
        val, train = order[:n_val], order[n_val:]
        return {"train": (waves[train], digits[train]), "val": (waves[val], digits[val]),
                "test": (waves[test], digits[test])}
