"""Prediction on a user's WAV files: each recording goes through the run's own pipeline (mono, the run's sample rate,
cut or zero-padded to its clip length, log-mel or MFCC features normalised per band with the training split's
statistics) and comes back as word names with probabilities.

A recording at another sample rate is resampled to the run's (polyphase filtering, ``scipy.signal.resample_poly``)
and its row says so in ``note``, as it does for channels averaged to mono and recordings longer than a clip.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from math import gcd
from typing import Any

import numpy as np
import torch
from dlbench_plugins.audio.data import clip_features, to_clip
from dlbench_plugins.images.predict import class_rows

from dlbench.core.errors import DlbenchError
from dlbench.data.predict import Example, InputError, Predictor, Sink, Source, warn
from dlbench.data.wav import read_wav


def resample(samples: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """``(channels, frames)`` samples at ``rate`` Hz resampled to ``target`` Hz (polyphase, with scipy's default
    Kaiser-windowed anti-aliasing filter)."""
    from scipy.signal import resample_poly

    g = gcd(rate, target)
    out = resample_poly(samples.numpy().astype(np.float64), target // g, rate // g, axis=-1)
    return torch.from_numpy(out.astype(np.float32))


class AudioPredictor(Predictor):
    """WAV recordings as the run's data module prepared its clips; see the module docstring."""

    inputs = "wav"
    extensions = (".wav",)

    def __init__(self, sample_rate: int, clip_samples: int, n_mels: int, n_fft: int, hop_length: int,
                 features: str, mean: Sequence[float], std: Sequence[float], class_names: Sequence[str] = ()) -> None:
        self.sample_rate, self.clip_samples = int(sample_rate), int(clip_samples)
        self.n_mels, self.n_fft, self.hop_length = int(n_mels), int(n_fft), int(hop_length)
        self.features = str(features)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1)
        self.class_names = tuple(class_names)

    def state(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "clip_samples": self.clip_samples, "n_mels": self.n_mels,
                "n_fft": self.n_fft, "hop_length": self.hop_length, "features": self.features,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
                "class_names": list(self.class_names)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AudioPredictor:
        return cls(**state)

    def describe(self) -> str:
        return (f"WAV files (8- or 16-bit PCM; resampled to {self.sample_rate} Hz, mixed to mono, cut or padded to "
                f"{self.clip_samples / self.sample_rate:.2f} s)")

    def recording(self, source: Source) -> tuple[torch.Tensor, int]:
        """The ``(channels, frames)`` samples of a source and its sample rate; InputError naming the input when it is
        not a PCM WAV file."""
        if source.path is not None:
            return self._read(source, os.fspath(source.path))
        data = source.read_bytes()  # an upload: read_wav reads files, so it gets a temporary one
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "input.wav")
            with open(path, "wb") as out:
                out.write(data)
            return self._read(source, path)

    def _read(self, source: Source, path: str) -> tuple[torch.Tensor, int]:
        import wave

        try:
            samples = read_wav(path)
            with wave.open(path, "rb") as w:  # read_wav checked the file; only its rate is wanted here
                rate = w.getframerate()
        except DlbenchError as err:
            message = str(err).replace(f"audio file {path} ", f"{source.name}: the file ", 1)
            raise InputError(message.replace("from the folder", "from the inputs")) from None
        if samples.shape[1] == 0:
            raise InputError(f"{source.name}: the WAV file holds no samples. Give a recording of at least a few "
                             f"milliseconds.")
        return samples, rate

    def waveform(self, source: Source) -> tuple[torch.Tensor, list[str]]:
        """One clip of ``clip_samples`` samples at the run's rate, and notes on what was changed to get it."""
        samples, rate = self.recording(source)
        notes = []
        if samples.shape[0] > 1:
            notes.append(f"{samples.shape[0]} channels mixed to mono")
        if rate != self.sample_rate:
            samples = resample(samples, rate, self.sample_rate)
            notes.append(f"resampled from {rate} Hz to {self.sample_rate} Hz")
        if samples.shape[1] > self.clip_samples:
            notes.append(f"only the first {self.clip_samples / self.sample_rate:.2f} s of "
                         f"{samples.shape[1] / self.sample_rate:.2f} s heard")
        return to_clip(samples, self.clip_samples), notes

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) / self.std

    def read(self, source: Source, options: dict[str, Any]) -> list[Example]:
        clip, notes = self.waveform(source)
        feats = clip_features(clip[None], self.n_mels, self.features, self.sample_rate, self.n_fft,
                              self.hop_length)[0]
        note = "; ".join(notes)
        if note:
            warn(f"{source.name}: {note}")
        return [Example(source.name, (self.normalize(feats),), {"note": note})]

    def rows(self, outputs: dict[str, Any], examples: Sequence[Example], options: dict[str, Any],
             sink: Sink) -> list[dict[str, Any]]:
        ranked = class_rows(outputs["probs"], self.class_names, int(options.get("top_k") or 3))
        rows = []
        for example, ranks in zip(examples, ranked, strict=True):
            row: dict[str, Any] = {"input": example.key, **ranks}
            if example.extra.get("note"):
                row["note"] = example.extra["note"]
            rows.append(row)
        return rows
