"""WAV reading with the standard library and log-mel / MFCC features, on files the tests write themselves."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from dlbench.core.errors import DlbenchError
from dlbench.data.wav import dct_matrix, fit_length, hz_to_mel, log_mel, mel_filterbank, mel_to_hz, mfcc, read_wav


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000, width: int = 2, channels: int = 1) -> Path:
    """``samples`` (frames, channels) already in the file's integer type."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def test_int16_mono_is_read_exactly(tmp_path):
    values = np.array([0, 1, -1, 32767, -32768, 16384], dtype="<i2")
    x = read_wav(write_wav(tmp_path / "a.wav", values), sample_rate=8000)
    assert x.shape == (1, 6) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], torch.tensor(values / 32768.0, dtype=torch.float32))


def test_stereo_keeps_channels_apart(tmp_path):
    left = np.arange(10, dtype="<i2") * 100
    right = -left
    interleaved = np.stack([left, right], axis=1)
    x = read_wav(write_wav(tmp_path / "s.wav", interleaved, channels=2))
    assert x.shape == (2, 10)
    torch.testing.assert_close(x[0], torch.tensor(left / 32768.0, dtype=torch.float32))
    torch.testing.assert_close(x[1], -x[0])


def test_8bit_is_unsigned_around_128(tmp_path):
    x = read_wav(write_wav(tmp_path / "u8.wav", np.array([128, 0, 255, 192], dtype=np.uint8), width=1))
    torch.testing.assert_close(x[0], torch.tensor([0.0, -1.0, 127 / 128, 0.5]))


def test_wrong_rate_names_the_file(tmp_path):
    path = write_wav(tmp_path / "fast.wav", np.zeros(8, dtype="<i2"), rate=16000)
    with pytest.raises(DlbenchError, match=r"fast\.wav.*16000 Hz, expected 8000"):
        read_wav(path, sample_rate=8000)


def test_24_bit_is_refused(tmp_path):
    path = write_wav(tmp_path / "deep.wav", np.zeros(12, dtype=np.uint8), width=3)
    with pytest.raises(DlbenchError, match=r"deep\.wav has 24-bit samples"):
        read_wav(path)


def test_truncated_data_chunk(tmp_path):
    path = write_wav(tmp_path / "cut.wav", np.arange(100, dtype="<i2"))
    path.write_bytes(path.read_bytes()[:-50])  # the header still declares 100 frames
    with pytest.raises(DlbenchError, match=r"cut\.wav is truncated: its header declares 100 frames"):
        read_wav(path)


def test_truncated_header(tmp_path):
    path = write_wav(tmp_path / "stub.wav", np.arange(100, dtype="<i2"))
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DlbenchError, match=r"stub\.wav is not a readable PCM WAV"):
        read_wav(path)


@pytest.mark.parametrize("content", [b"", b"not a wav file at all, just text\n" * 4,
                                     b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x03\x00" + b"\x00" * 40])
def test_not_a_pcm_wav(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)  # empty, text, and an IEEE-float (format 3) header
    with pytest.raises(DlbenchError, match=r"bad\.wav is not a readable PCM WAV"):
        read_wav(path)


def test_missing_file(tmp_path):
    with pytest.raises(DlbenchError, match="does not exist"):
        read_wav(tmp_path / "nope.wav")


def test_fit_length_crops_and_pads():
    x = torch.arange(1.0, 6.0)
    assert fit_length(x, 3).tolist() == [1.0, 2.0, 3.0]
    assert fit_length(x, 7).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0]


def test_htk_mel_scale():
    # 1000 Hz is about 1000 mel on the HTK scale, and 0 Hz is 0.
    assert float(hz_to_mel(0.0)) == 0.0
    assert float(hz_to_mel(1000.0)) == pytest.approx(999.99, abs=0.01)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(torch.tensor([50.0, 440.0, 3999.0]))),
                               torch.tensor([50.0, 440.0, 3999.0], dtype=torch.float64))


def test_mel_filterbank_shape_peaks_and_partition_of_unity():
    fb = mel_filterbank(40, 256, 8000)
    assert fb.shape == (40, 129)
    assert fb.min() >= 0 and fb.max() <= 1
    peaks = fb.argmax(dim=1)
    assert (peaks[1:] > peaks[:-1]).all()  # each filter peaks at a higher frequency than the one before
    widths = (fb > 0).sum(dim=1)
    assert (widths[1:] >= widths[:-1] - 1).all() and widths[-1] > 3 * widths[0]  # wider with frequency (mel)
    # Neighbouring triangles share corners, so between the first and the last peak the filters sum to 1.
    inside = fb.sum(dim=0)[int(peaks[0]) + 1 : int(peaks[-1])]
    torch.testing.assert_close(inside, torch.ones_like(inside))


def test_mel_filterbank_refuses_empty_filters():
    with pytest.raises(ValueError, match="covers no FFT bin"):
        mel_filterbank(128, 64, 8000)


def test_log_mel_puts_a_tone_in_the_right_band():
    t = torch.arange(7920) / 8000
    tones = torch.stack([torch.sin(2 * math.pi * f * t) for f in (300.0, 2500.0)])
    feats = log_mel(tones, 8000, n_mels=40, n_fft=256, hop_length=80)
    assert feats.shape == (2, 40, 100)
    centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(4000.0)), 42))[1:-1]
    for row, freq in zip(feats, (300.0, 2500.0), strict=True):
        loudest = int(row.mean(dim=1).argmax())
        assert abs(float(centres[loudest]) - freq) < 0.1 * freq


def test_mfcc_is_an_orthonormal_dct():
    d = dct_matrix(8)
    torch.testing.assert_close(d @ d.T, torch.eye(8), atol=1e-5, rtol=0)
    flat = torch.full((1, 8, 3), 2.0)  # a flat log spectrum has energy only in the 0th coefficient
    c = mfcc(flat)
    torch.testing.assert_close(c[0, 0], torch.full((3,), 2.0 * math.sqrt(8)))
    torch.testing.assert_close(c[0, 1:], torch.zeros(7, 3), atol=1e-5, rtol=0)
