"""Bounded fuzzing: any input to a data parser or to the command-line front end ends in data or a clear error.

A clear error is a :class:`DlbenchError`; anything else escaping (IndexError, struct.error, UnicodeDecodeError,
a numpy reshape error, ...) is a bug that would reach a user as a traceback.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
import wave
from pathlib import Path

import numpy as np
import torch
from dlbench_plugins.lstm.data import read_series
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlbench.cli import main
from dlbench.core.errors import DlbenchError
from dlbench.data.cifar import parse_batch
from dlbench.data.idx import parse_idx, read_idx
from dlbench.data.wav import read_wav
from dlbench.train.target import parse_target

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _idx(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def _mutate(data: bytes, cuts: list[tuple[int, int]], truncate: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in cuts:
        if buf:
            buf[pos % len(buf)] = value
    return bytes(buf[:truncate] if truncate is not None else buf)


mutations = st.tuples(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
                      st.one_of(st.none(), st.integers(0, 200)))


@FUZZ
@given(st.binary(max_size=300))
def test_idx_random_bytes(data):
    with contextlib.suppress(DlbenchError):
        assert isinstance(parse_idx(data), np.ndarray)


@FUZZ
@given(mutations)
def test_idx_mutated_valid_file(mutation):
    valid = _idx(np.arange(2 * 3 * 4).reshape(2, 3, 4))
    try:
        array = parse_idx(_mutate(valid, *mutation))
        assert array.size == int(np.prod(array.shape))
    except DlbenchError:
        pass


@FUZZ
@given(mutations)
def test_idx_gzip_file_mutated(tmp_path_factory, mutation):
    path = tmp_path_factory.mktemp("idx") / "x-idx3-ubyte.gz"
    path.write_bytes(_mutate(gzip.compress(_idx(np.zeros((2, 4, 4)))), *mutation))
    with contextlib.suppress(DlbenchError):
        read_idx(path)


@FUZZ
@given(st.binary(max_size=7000))
def test_cifar_random_bytes(data):
    try:
        images, labels = parse_batch(data)
        assert len(images) == len(labels)
    except DlbenchError:
        pass


def _wav(frames: bytes, channels: int = 1, width: int = 2, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


@FUZZ
@given(mutations, st.sampled_from([(1, 2), (2, 2), (1, 1)]))
def test_wav_mutated(tmp_path_factory, mutation, layout):
    path = tmp_path_factory.mktemp("wav") / "0_x_0.wav"
    path.write_bytes(_mutate(_wav(bytes(range(256)) * 4, *layout), *mutation))
    try:
        waveform = read_wav(path)
        assert isinstance(waveform, torch.Tensor) and torch.isfinite(waveform).all()
    except DlbenchError:
        pass


csv_text = st.text(alphabet=st.sampled_from(list("0123456789.,-e\n\t\"ab ")), max_size=200)


@FUZZ
@given(csv_text)
def test_series_csv(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "series.csv"
    path.write_text(text)
    try:
        series = read_series(path)
        assert torch.isfinite(series).all()
    except DlbenchError:
        pass


@FUZZ
@given(st.binary(max_size=200))
def test_series_csv_binary_garbage(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("csv") / "series.csv"
    path.write_bytes(data)
    with contextlib.suppress(DlbenchError):
        read_series(path)


TOKENS = ["--model", "--data", "--config", "--resume", "-c", "lstm", "lstn", "digits", "sunspots", "mnist", "x.y.Z",
          "--model.hidden_size", "3", "", "=", "--model=lstm", "--data=", "dlbench:lstm", "a:b:c", ":", "--"]


@FUZZ
@given(st.sampled_from(["fit", "validate", "test", "predict"]),
       st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=6))
def test_front_end_translation(tmp_path_factory, subcommand, args):
    """The registry-name translation in front of LightningCLI: a Target or a DlbenchError, for any argument list."""
    try:
        target = parse_target(subcommand, args)
        assert isinstance(target.args, list)
    except DlbenchError as err:
        assert str(err) and err.exit_code == 2


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["list", "info", "--json", "--datasets", "lstm", "-h", "nope", "--debug"]),
                          st.text(max_size=6)), max_size=4))
def test_front_end_plain_commands(capsys, argv):
    if argv and argv[0] in ("fit", "validate", "test", "predict"):
        return
    assert isinstance(main(argv), int)
    capsys.readouterr()


def test_fuzz_inputs_reach_the_parsers(tmp_path):
    """Guard against a fuzz target that rejects everything: valid inputs do parse."""
    assert parse_idx(_idx(np.ones((2, 2)))).shape == (2, 2)
    path = Path(tmp_path) / "0_x_0.wav"
    path.write_bytes(_wav(b"\x00\x01" * 100))
    assert read_wav(path).numel() == 100
