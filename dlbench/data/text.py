"""Text helpers shared by the text plugins: reading tab-separated text files, tokenising, vocabularies, encoding.

Every vocabulary starts with the same four special tokens at fixed indices (``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2,
``<eos>`` 3), so models can be told the indices once. A vocabulary is built from the training split only: words
seen only in validation or test data map to ``<unk>``, as they would for text the model meets after training.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from dlbench.core.errors import DlbenchError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_INDEX, UNK_INDEX, BOS_INDEX, EOS_INDEX = range(4)
LEVELS = ("word", "char")

# A word is a run of letters/digits (Unicode-aware, so umlauts stay inside words); any other visible character,
# punctuation included, is a token of its own.
_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, level: str = "word") -> list[str]:
    """Lower-cased tokens of ``text``: words and single punctuation marks (``"word"``), or characters with runs of
    white space collapsed to one space (``"char"``)."""
    text = text.lower()
    if level == "word":
        return _WORD.findall(text)
    if level == "char":
        return list(" ".join(text.split()))
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


class Vocabulary:
    """Token <-> index mapping: the special tokens first, then tokens by falling frequency (ties alphabetical, so the
    same corpus always gives the same indices)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("a vocabulary must not repeat a token")

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = 1,
              max_size: int | None = None) -> Vocabulary:
        """The vocabulary of ``token_lists``: tokens seen at least ``min_freq`` times, at most ``max_size`` entries
        in all (special tokens included)."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size <= len(SPECIALS):
            raise ValueError(f"max_vocab must be > {len(SPECIALS)} (the special tokens), got {max_size}")
        counts = Counter(t for tokens in token_lists for t in tokens)
        for special in SPECIALS:
            counts.pop(special, None)
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max_size - len(SPECIALS)]
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(t, UNK_INDEX) for t in tokens]

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> list[str]:
        """Tokens of ``ids``; with ``strip_specials``, padding and ``<bos>`` are dropped and ``<eos>`` ends it."""
        out = []
        for i in ids:
            i = int(i)
            if strip_specials:
                if i == EOS_INDEX:
                    break
                if i in (PAD_INDEX, BOS_INDEX):
                    continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out


def encode_batch(vocab: Vocabulary, token_lists: Sequence[Sequence[str]], max_len: int, bos: bool = False,
                 eos: bool = False) -> torch.Tensor:
    """``(N, max_len)`` int64 token indices, right-padded with ``<pad>``. Sequences longer than fit are cut at the end;
    ``<bos>``/``<eos>`` are kept when asked for. An empty sequence becomes one ``<unk>``, so no row is all padding
    (attention over nothing but padding is undefined)."""
    room = max_len - bos - eos
    if room < 1:
        raise ValueError(f"max_len must leave room for at least one token, got {max_len}")
    out = torch.full((len(token_lists), max_len), PAD_INDEX, dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        ids = vocab.encode(tokens[:room]) or [UNK_INDEX]
        ids = [BOS_INDEX] * bos + ids + [EOS_INDEX] * eos
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def read_text_file(path: str | Path | bytes, what: str, source: str | None = None) -> str:
    """The UTF-8 text of a file (or of ``bytes`` already read, named by ``source``), with problems as DlbenchError."""
    if isinstance(path, bytes):
        raw, where = path, source or "data"
    else:
        where = str(path)
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise DlbenchError(f"{what} file {where} does not exist. Check the path.") from None
        except IsADirectoryError:
            raise DlbenchError(f"{what} file {where} is a directory; give the file itself.") from None
        except OSError as err:
            raise DlbenchError(f"cannot read {what} file {where}: {err.strerror}.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DlbenchError(f"{what} file {where}, line {line}: not UTF-8 text (byte {raw[err.start]:#04x} at offset "
                           f"{err.start}). Convert the file to UTF-8, e.g. with 'iconv -f latin1 -t utf-8'.") from None
    if not text.strip():
        raise DlbenchError(f"{what} file {where} is empty. Give a file with one example a line.")
    return text


def tab_fields(text: str, what: str, where: str, n_fields: tuple[int, int],
               expected: str) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-blank line of tab-separated ``text``, each line holding between
    ``n_fields[0]`` and ``n_fields[1]`` fields (the last field takes any further tabs when ``n_fields[1]`` is reached);
    a line that does not is a DlbenchError naming its number and ``expected``, the format."""
    low, high = n_fields
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t", high - 1)
        if len(fields) < low or any(not f.strip() for f in fields[:low]):
            raise DlbenchError(f"{what} file {where}, line {line_no}: expected {expected}, got {line[:80]!r}. "
                               f"Fix or delete that line.")
        rows.append((line_no, fields))
    return rows
