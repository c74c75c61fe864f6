"""WAV files and speech features without torchaudio: PCM WAV reading with the standard library's ``wave`` module,
and log-mel / MFCC features from ``torch.stft`` with a mel filterbank built here.

Features are meant to be computed once for a whole dataset (a ``(N, samples)`` tensor in, a ``(N, n_mels,
n_frames)`` tensor out), not per batch.

The mel scale is HTK's, ``mel(f) = 2595 * log10(1 + f / 700)``; the filters are triangles with peak 1 whose corners
are ``n_mels + 2`` points equally spaced on that scale between ``f_min`` and ``f_max``, interpolated linearly in Hz
(HTK's and librosa's ``htk=True, norm=None`` convention: no area normalisation, so neighbouring filters sum to 1
between the first and the last peak).
"""

from __future__ import annotations

import math
import os
import wave

import numpy as np
import torch

from dlbench.core.errors import DlbenchError

_FIX = "Re-export it as a PCM WAV file (8- or 16-bit), or remove it from the folder."


def read_wav(path: str | os.PathLike, sample_rate: int | None = None) -> torch.Tensor:
    """The samples of a PCM WAV file as a float32 tensor ``(channels, frames)`` scaled to [-1, 1].

    Accepts 16-bit signed and 8-bit unsigned PCM, any number of channels. ``sample_rate``, if given, is the rate
    the file must have. Anything else (another encoding, a wrong rate, fewer sample bytes than the header declares,
    not a WAV file at all) raises :class:`DlbenchError` naming the file.
    """
    try:
        with wave.open(os.fspath(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            data = w.readframes(n)
    except FileNotFoundError:
        raise DlbenchError(f"audio file {path} does not exist. Check the path.") from None
    except (wave.Error, EOFError, ValueError, RuntimeError, OSError) as err:
        # wave.Error covers a missing RIFF/WAVE header or fmt/data chunk and non-PCM encodings ("unknown format");
        # a chunk size pointing past the end of the file makes the wave module raise a bare RuntimeError.
        detail = str(err) or "its header is cut short or declares a chunk past the end of the file"
        raise DlbenchError(f"audio file {path} is not a readable PCM WAV file ({detail}). "
                           f"{_FIX}") from None
    if width not in (1, 2):
        raise DlbenchError(f"audio file {path} has {8 * width}-bit samples; only 8-bit and 16-bit PCM are read. "
                           f"{_FIX}")
    if sample_rate is not None and rate != sample_rate:
        raise DlbenchError(f"audio file {path} is sampled at {rate} Hz, expected {sample_rate} Hz. Resample it "
                           f"(e.g. 'sox in.wav -r {sample_rate} out.wav') or remove it.")
    expected = n * channels * width
    if len(data) < expected:
        raise DlbenchError(f"audio file {path} is truncated: its header declares {n} frames ({expected} bytes) but "
                           f"the data chunk holds {len(data)} bytes. Replace the file with a complete copy.")
    if width == 1:
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    return torch.from_numpy(samples.reshape(n, channels).T.copy())


def fit_length(waveform: torch.Tensor, length: int) -> torch.Tensor:
    """Crop the end off, or pad zeros after, a 1-D waveform so that it has exactly ``length`` samples."""
    if len(waveform) >= length:
        return waveform[:length]
    return torch.nn.functional.pad(waveform, (0, length - len(waveform)))


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular mel filters as a ``(n_mels, n_fft // 2 + 1)`` float32 matrix (see the module docstring).

    Raises ValueError when a filter would cover no FFT bin (too many mel bands for ``n_fft``).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if n_mels < 1:
        raise ValueError(f"n_mels must be >= 1, got {n_mels}")
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}")
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    corners = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                       dtype=torch.float64))
    lower, peak, upper = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    rising = (bins - lower) / (peak - lower)
    falling = (upper - bins) / (upper - peak)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    empty = (fb.sum(1) == 0).nonzero().flatten()
    if len(empty):
        raise ValueError(f"mel filter {int(empty[0])} of {n_mels} covers no FFT bin: use fewer mel bands or a "
                         f"larger n_fft (got n_mels={n_mels}, n_fft={n_fft})")
    return fb.float()


def log_mel(waveforms: torch.Tensor, sample_rate: int, n_mels: int = 40, n_fft: int = 256, hop_length: int = 80,
            eps: float = 1e-6, chunk: int = 256) -> torch.Tensor:
    """Log mel power spectrograms ``log(mel_power + eps)`` of ``(N, samples)`` waveforms: ``(N, n_mels, frames)``
    with ``frames = 1 + samples // hop_length`` (Hann window of ``n_fft`` samples, centred frames).

    Works through the batch ``chunk`` waveforms at a time to bound the memory the complex STFT takes.
    """
    fb = mel_filterbank(n_mels, n_fft, sample_rate)
    window = torch.hann_window(n_fft)
    out = []
    for part in waveforms.split(chunk):
        spec = torch.stft(part, n_fft, hop_length=hop_length, window=window, center=True, return_complex=True)
        out.append(torch.log(fb @ spec.abs().square() + eps))
    return torch.cat(out)


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II as an ``(n, n)`` matrix: ``dct_matrix(n) @ x`` transforms ``x`` along its first axis."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi / n * (i + 0.5) * k) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.float()


def mfcc(log_mels: torch.Tensor) -> torch.Tensor:
    """Mel-frequency cepstral coefficients: the orthonormal DCT-II of ``(N, n_mels, frames)`` log mel spectrograms
    along the mel axis, keeping all ``n_mels`` coefficients."""
    return dct_matrix(log_mels.shape[1]) @ log_mels
