"""Classifying a user's own texts with a trained transformer run (``dlbench predict --input texts.txt``).

A text file (or standard input, ``--input -``) holds one example a line, keyed ``FILE:LINE`` (lines counted from 1,
as a person counts them). A text on its own (``Source.text`` under another name than ``stdin``: what a server
passes for ``{"text": "..."}``) is one example under the source's name, new lines and all.

Each text goes through the run's own tokenisation (:func:`dlbench_plugins.transformer.data.text_tokens`, with the
settings the run trained with), its tokens through the training split's vocabulary (a word the training split did
not have becomes ``<unk>``, as in training), padded or cut to the run's ``max_len``. A line longer than that is cut
at the end, as in training, and said so on standard error.

A blank line cannot be classified, but the other lines of its file can: :meth:`Predictor.read` answers for a whole
source, so a blank line comes back as an :class:`Example` whose ``extra`` holds the ``error`` (its value is a
harmless one-``<unk>`` row so that it batches with the others), and :meth:`TextPredictor.rows` turns it into an error
row (``input``, ``error``) in its place. A source with no usable line at all is an :class:`InputError`.

Rows: ``input``, ``text`` (the line as read), then ``prediction``, ``probability``, ``top2``,
``top2_probability``, ... as :func:`dlbench_plugins.images.predict.class_rows` writes them for every classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from dlbench_plugins.transformer.data import text_tokens

from dlbench.data.predict import Example, InputError, Predictor, Sink, Source, warn
from dlbench.data.text import SPECIALS, Vocabulary, encode_batch

STDIN = "stdin"
"""The name ``dlbench predict`` gives standard input (``--input -``): its text is read as lines, like a file."""
TEXT_SUFFIXES = (".txt",)


class Line(NamedTuple):
    """One example of a text source: its ``key``, its ``text`` (stripped), and why it cannot be used, if so."""

    key: str
    text: str
    error: str | None = None


def text_lines(source: Source) -> list[Line]:
    """The examples of a text source: one a line of a file or of standard input, or the whole text of a
    ``Source.text`` given on its own. Blank lines come back with an ``error``; :class:`InputError` when nothing is
    usable."""
    if source.text is not None and source.path is None and source.data is None and source.name != STDIN:
        if not source.text.strip():
            raise InputError(f"{source.name}: the text is empty. Give the text to predict on.")
        return [Line(source.name, source.text.strip())]
    content = source.read_text().removeprefix("\ufeff")  # a byte-order mark some editors write
    lines = []
    for number, line in enumerate(content.splitlines(), start=1):
        key = f"{source.name}:{number}"
        if line.strip():
            lines.append(Line(key, line.strip()))
        else:
            lines.append(Line(key, "", f"{source.name}: line {number} is empty. Delete it or write a text on it "
                                       f"(one example a line); the other lines are predicted."))
    if not any(line.error is None for line in lines):
        what = "it is empty" if not lines else "it has only blank lines"
        raise InputError(f"{source.name}: {what}. Give a text file of one example a line.")
    return lines


def warn_cut(name: str, lines: Sequence[Line], tokens: Sequence[Sequence[str]], room: int, what: str) -> None:
    """One line on standard error when texts of ``name`` hold more tokens than the run reads."""
    cut = [line.key for line, t in zip(lines, tokens, strict=True) if line.error is None and len(t) > room]
    if cut:
        more = f" and {len(cut) - 1} more" if len(cut) > 1 else ""
        warn(f"{cut[0]}{more}: longer than the {room} tokens the run {what}; only the first {room} are used, as in "
             f"training.")


def line_examples(lines: Sequence[Line], ids: torch.Tensor) -> list[Example]:
    """An example a line: ``value`` its row of ``ids``, ``extra`` its ``text`` or its ``error``."""
    return [Example(line.key, (row,), {"text": line.text} if line.error is None else {"error": line.error})
            for line, row in zip(lines, ids, strict=True)]


def error_row(example: Example) -> dict[str, Any] | None:
    """The row of an example that could not be used (a blank line), else None."""
    error = example.extra.get("error")
    return None if error is None else {"input": example.key, "error": error}


def write_token_lines(vocab: Vocabulary, ids: torch.Tensor, level: str, folder: Path) -> list[Path]:
    """Each row of token indices (a test batch) written back as the text file of one line that encodes to the same
    indices: tokens joined by spaces (words) or run together (characters), an ``<unk>`` as a word the vocabulary does
    not have, so it comes back as ``<unk>``; for :meth:`Predictor.write_inputs`."""
    from dlbench.data.text import UNK, tokenize

    unknown = next(c for c in ("qzxunknownqzx", "\u2603", "\u2604", "\u2622", "\u2623")
                   if all(t not in vocab for t in tokenize(c, level)) and len(tokenize(c, level)) == 1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, row in enumerate(ids.tolist()):
        tokens = [unknown if t == UNK else t for t in vocab.decode(row)]
        paths.append(folder / f"{i:04d}.txt")
        paths[-1].write_text((" " if level == "word" else "").join(tokens) + "\n")
    return paths


def check_specials(specials: Sequence[str]) -> None:
    if tuple(specials) != SPECIALS:
        raise ValueError(f"the run's special tokens {list(specials)} are not this version's {list(SPECIALS)}")


class TextPredictor(Predictor):
    """Texts as the run's data module prepared them: tokenised with ``tokenizer`` (see
    :func:`dlbench_plugins.transformer.data.tokenizer_settings`), looked up in ``vocab`` (the tokens in index order,
    the special tokens first), padded or cut to ``max_len``; rows in terms of ``class_names``."""

    inputs = "text"
    extensions = TEXT_SUFFIXES

    def __init__(self, vocab: Sequence[str], tokenizer: dict[str, Any], max_len: int,
                 class_names: Sequence[str] = ()) -> None:
        self.vocab = Vocabulary(list(vocab))
        self.tokenizer = dict(tokenizer)
        self.max_len = int(max_len)
        self.class_names = tuple(str(c) for c in class_names)

    def state(self) -> dict[str, Any]:
        return {"vocab": list(self.vocab.itos), "tokenizer": dict(self.tokenizer), "max_len": self.max_len,
                "specials": list(SPECIALS), "class_names": list(self.class_names)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TextPredictor:
        check_specials(state["specials"])
        return cls(state["vocab"], state["tokenizer"], state["max_len"], state.get("class_names", ()))

    def describe(self) -> str:
        return (f"text files of one example a line (or - for standard input), read as lower-cased "
                f"{self.tokenizer['level']} tokens, the first {self.max_len} of each")

    def tokens(self, text: str) -> list[str]:
        return text_tokens(text, self.tokenizer)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N, max_len)`` token indices of ``texts``, exactly as the run encoded its training texts."""
        return encode_batch(self.vocab, [self.tokens(t) for t in texts], self.max_len)

    def read(self, source: Source, options: dict[str, Any]) -> list[Example]:
        lines = text_lines(source)
        tokens = [self.tokens(line.text) for line in lines]
        warn_cut(source.name, lines, tokens, self.max_len, "reads")
        return line_examples(lines, encode_batch(self.vocab, tokens, self.max_len))

    def write_inputs(self, batch, folder: Path) -> list[Path]:
        return write_token_lines(self.vocab, batch[0], self.tokenizer["level"], folder)

    def rows(self, outputs: dict[str, Any], examples: Sequence[Example], options: dict[str, Any],
             sink: Sink) -> list[dict[str, Any]]:
        from dlbench_plugins.images.predict import class_rows

        top_k = options.get("top_k")
        ranked = class_rows(outputs["probs"], self.class_names, 3 if top_k is None else int(top_k))
        return [error_row(e) or {"input": e.key, "text": e.extra["text"], **r}
                for e, r in zip(examples, ranked, strict=True)]
