"""The audio plugin: the generated speech task, features and masking, FSDD (a folder written here, and the real set
from DLBENCH_TEST_DATA), and the Conv1D model."""

from __future__ import annotations

import os
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from dlbench_plugins.audio import data as audio_data
from dlbench_plugins.audio import synthetic
from dlbench_plugins.audio.data import FsddDataModule, SyntheticSpeechDataModule, read_fsdd, spec_augment
from dlbench_plugins.audio.model import SpeechCommandCNN, confusion_figure

from dlbench.core.errors import DlbenchError
from dlbench.data.wav import hz_to_mel, log_mel, mel_to_hz

TEST_DATA = os.environ.get("DLBENCH_TEST_DATA")
FSDD = Path(TEST_DATA or "/nonexistent") / "fsdd" / "recordings"
needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason="DLBENCH_TEST_DATA/fsdd/recordings not available")


def test_synthetic_speech_is_seeded_balanced_and_16_bit():
    waves, labels = synthetic.render(40, 7920, seed=5)
    assert waves.shape == (40, 7920) and waves.dtype == torch.float32
    assert torch.bincount(labels, minlength=10).tolist() == [4] * 10
    assert waves.abs().max() <= 1.0
    torch.testing.assert_close(waves * 32768, (waves * 32768).round())  # quantised like a 16-bit recording
    again, same_labels = synthetic.render(40, 7920, seed=5)
    assert torch.equal(again, waves) and torch.equal(same_labels, labels)
    assert not torch.equal(synthetic.render(40, 7920, seed=6)[0], waves)


def test_words_with_the_same_phones_differ_in_order():
    # "a-i" and "i-a": the band around the "i" vowel's second formant (2290 Hz) is loud late in the first word and
    # early in the second. Averaged over speakers, the loudness-weighted time of that band tells them apart.
    n = 120
    waves, labels = synthetic.render(n, 7920, seed=1)
    feats = log_mel(waves, 8000).exp()  # mel power (N, 40, 100)
    edges = torch.linspace(0, float(hz_to_mel(4000.0)), 42)
    band = ((mel_to_hz(edges[1:-1]) > 1900) & (mel_to_hz(edges[1:-1]) < 2600)).nonzero().flatten()
    # Time relative to the word: weight by the band's power, compare with the word's own loudness-weighted centre.
    power = feats[:, band].sum(1)
    total = feats.sum(1)
    t = torch.arange(100.0)
    shift = (power * t).sum(1) / power.sum(1) - (total * t).sum(1) / total.sum(1)
    a_i, i_a = shift[labels == synthetic.WORDS.index("a-i")], shift[labels == synthetic.WORDS.index("i-a")]
    assert a_i.mean() > 0 > i_a.mean() and a_i.mean() - i_a.mean() > 3  # frames of 10 ms


def test_spec_augment_masks_one_band_of_each_kind():
    torch.manual_seed(0)
    x = torch.ones(64, 40, 100)
    masked = spec_augment(x, max_time=10, max_freq=5)
    zero = masked == 0
    frames_masked = zero.all(dim=1).sum(dim=1)  # whole frames zeroed
    bands_masked = zero.all(dim=2).sum(dim=1)  # whole mel bands zeroed
    assert frames_masked.max() <= 10 and bands_masked.max() <= 5
    assert frames_masked.float().mean() > 2 and bands_masked.float().mean() > 1
    expected = frames_masked * 40 + bands_masked * 100 - frames_masked * bands_masked
    assert torch.equal(zero.sum(dim=(1, 2)), expected)  # nothing outside the two bands is touched


def test_synthetic_datamodule_features_and_normalisation():
    dm = SyntheticSpeechDataModule(num_train=40, num_val=10, num_test=10, n_mels=32, n_frames=50)
    assert (dm.num_classes, dm.n_mels, dm.n_frames, len(dm.class_names)) == (10, 32, 50, 10)
    dm.setup()
    x, y = dm.splits["train"]
    assert x.shape == (40, 32, 50) and y.shape == (40,)
    torch.testing.assert_close(x.mean(dim=(0, 2)), torch.zeros(32), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2)), torch.ones(32), atol=1e-3, rtol=0)
    mfcc = SyntheticSpeechDataModule(num_train=40, num_val=10, num_test=10, features="mfcc")
    mfcc.setup()
    assert mfcc.splits["test"][0].shape == (10, 40, 100)


def test_datamodule_argument_errors():
    with pytest.raises(ValueError, match="features must be 'logmel' or 'mfcc'"):
        SyntheticSpeechDataModule(features="spectrogram")
    with pytest.raises(ValueError, match="n_mels and n_frames must be >= 1"):
        SyntheticSpeechDataModule(n_mels=0)
    with pytest.raises(ValueError, match="val_fraction"):
        FsddDataModule(val_fraction=1.5)


def write_recording(path: Path, rate: int = 8000, frames: int = 400, seed: int = 0) -> None:
    samples = (np.random.default_rng(seed).normal(0, 3000, frames)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def fake_fsdd(folder: Path, takes: int = 8) -> Path:
    folder.mkdir(parents=True)
    for digit in (3, 7):
        for speaker in ("ann", "bob"):
            for take in range(takes):
                write_recording(folder / f"{digit}_{speaker}_{take}.wav", seed=digit * 100 + take)
    return folder


def test_fsdd_standard_split_on_a_small_folder(tmp_path):
    fake_fsdd(tmp_path / "recordings")
    dm = FsddDataModule(root=str(tmp_path), val_fraction=0.25)  # finds recordings/ under the root
    splits = dm.load()
    n_train, n_val, n_test = (len(splits[s][1]) for s in ("train", "val", "test"))
    assert n_test == 2 * 2 * 5 and n_train + n_val == 2 * 2 * 3 and n_val == 3
    waves, digits, takes, speakers = read_fsdd(tmp_path / "recordings", dm.clip_samples)
    assert waves.shape == (32, 7920) and set(speakers) == {"ann", "bob"}
    assert waves[:, 400:].abs().max() == 0  # 400 samples, zero-padded to the clip length
    assert sorted(splits["test"][1].tolist()) == [3] * 10 + [7] * 10


def test_fsdd_rejects_bad_files(tmp_path):
    folder = fake_fsdd(tmp_path / "a", takes=6)
    write_recording(folder / "seven_bob_1.wav")
    with pytest.raises(DlbenchError, match=r"seven_bob_1\.wav is not named like an FSDD recording"):
        FsddDataModule(root=str(folder)).load()
    folder = fake_fsdd(tmp_path / "b", takes=6)
    write_recording(folder / "3_cat_0.wav", rate=16000)
    with pytest.raises(DlbenchError, match=r"3_cat_0\.wav is sampled at 16000 Hz, expected 8000"):
        FsddDataModule(root=str(folder)).load()


def test_fsdd_offline_without_files_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    with pytest.raises(DlbenchError, match=r"free-spoken-digit-dataset-1\.0\.10\.zip in .*empty"):
        FsddDataModule(root=str(tmp_path / "empty")).load()


def test_fsdd_download_is_unpacked_and_counted(tmp_path, monkeypatch):
    # A stand-in for the release archive (same layout, 4 recordings instead of 3,000): it is unpacked into place and
    # then refused for its count. The network is never touched: fetch() is replaced.
    release = fake_fsdd(tmp_path / "src" / "free-spoken-digit-dataset-1.0.10" / "recordings", takes=1)
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(release.iterdir()):
            zf.write(path, path.relative_to(tmp_path / "src").as_posix())
    monkeypatch.setattr(audio_data, "fetch", lambda dataset, remote, root: archive)
    root = tmp_path / "cache"
    with pytest.raises(DlbenchError, match="the downloaded release holds 4 recordings, expected 3000"):
        FsddDataModule(root=str(root)).load()
    assert sorted(p.name for p in (root / "free-spoken-digit-dataset-1.0.10" / "recordings").iterdir()) == \
        sorted(p.name for p in release.iterdir())
    assert not (root / "free-spoken-digit-dataset-1.0.10.tmp").exists()


@needs_fsdd
def test_real_fsdd_sizes_and_standard_split():
    dm = FsddDataModule(root=str(FSDD))
    waves, digits, takes, speakers = read_fsdd(FSDD, dm.clip_samples)
    assert len(waves) == 3000 and len(set(speakers)) == 6
    assert torch.bincount(digits).tolist() == [300] * 10
    splits = dm.load()
    assert len(splits["test"][1]) == 300 and len(splits["train"][1]) + len(splits["val"][1]) == 2700
    assert torch.bincount(splits["test"][1]).tolist() == [30] * 10  # takes 0-4 of each of 6 speakers
    assert len(splits["val"][1]) == 270


def test_model_shapes_and_argument_errors():
    model = SpeechCommandCNN(num_classes=5, n_mels=20, n_frames=37, channels=8, num_layers=3)
    assert model(torch.zeros(3, 20, 37)).shape == (3, 5)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SpeechCommandCNN(kernel_size=4)
    with pytest.raises(ValueError, match="channels must be >= 1, got 0"):
        SpeechCommandCNN(channels=0)
    with pytest.raises(ValueError, match="class_names must name all 10 classes"):
        SpeechCommandCNN(class_names=["yes", "no"])


def test_confusion_figure_writes_the_counts():
    matrix = torch.tensor([[5, 1], [0, 4]])
    fig = confusion_figure(matrix, ["yes", "no"])
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "4", "5"]  # zero cells stay blank
    assert [t.get_text() for t in ax.get_xticklabels()] == ["yes", "no"]
