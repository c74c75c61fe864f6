"""Translating a user's own sentences with a trained seq2seq run (``dlbench predict --input sentences.txt``).

Inputs are read as for the transformer's text classifier (:func:`dlbench_plugins.transformer.predict.text_lines`):
one sentence a line of a text file or of standard input (``--input -``), keyed ``FILE:LINE``, or a text on its own
(what a server passes for ``{"text": "..."}``) under the source's name; a blank line becomes an error row in its
place while the other lines are translated.

Each sentence goes through the run's one tokeniser (:func:`dlbench_plugins.seq2seq.data.sentence_tokens`, with the
settings the run kept), the training split's source vocabulary (unknown words become ``<unk>``, as in training) and
becomes ``tokens <eos>``, padded or cut to the run's ``max_len`` as the training sources were. The model's
``predict_step`` decodes (greedily today) and returns ``{"tokens": (N, T)}``: target indices, ``<eos>``, then
padding; the rows give them back as text through the target vocabulary and
:func:`dlbench_plugins.seq2seq.data.sentence_text`.

Rows: ``input``, ``source`` (the sentence as read) and ``translation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from dlbench_plugins.seq2seq.data import sentence_text, sentence_tokens
from dlbench_plugins.transformer.predict import (
    TEXT_SUFFIXES,
    check_specials,
    error_row,
    line_examples,
    text_lines,
    warn_cut,
    write_token_lines,
)

from dlbench.data.predict import Example, Predictor, Sink, Source
from dlbench.data.text import SPECIALS, Vocabulary, encode_batch


class TranslationPredictor(Predictor):
    """Sentences as the run's data module prepared its sources: tokenised with ``tokenizer``, looked up in
    ``source_vocab``, ``<eos>`` appended, padded or cut to ``max_len``; translations read back through
    ``target_vocab`` (both vocabularies as tokens in index order, the special tokens first)."""

    inputs = "text"
    extensions = TEXT_SUFFIXES

    def __init__(self, source_vocab: Sequence[str], target_vocab: Sequence[str], tokenizer: dict[str, Any],
                 max_len: int) -> None:
        self.source_vocab = Vocabulary(list(source_vocab))
        self.target_vocab = Vocabulary(list(target_vocab))
        self.tokenizer = dict(tokenizer)
        self.max_len = int(max_len)

    def state(self) -> dict[str, Any]:
        return {"source_vocab": list(self.source_vocab.itos), "target_vocab": list(self.target_vocab.itos),
                "tokenizer": dict(self.tokenizer), "max_len": self.max_len, "specials": list(SPECIALS)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TranslationPredictor:
        check_specials(state["specials"])
        return cls(state["source_vocab"], state["target_vocab"], state["tokenizer"], state["max_len"])

    def describe(self) -> str:
        return (f"text files of one sentence a line (or - for standard input), each translated; up to "
                f"{self.max_len - 1} words a sentence")

    def tokens(self, sentence: str) -> list[str]:
        return sentence_tokens(sentence, self.tokenizer)

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """``(N, max_len)`` source indices (``tokens <eos>``, padded), exactly as the run encoded its sources."""
        return encode_batch(self.source_vocab, [self.tokens(s) for s in sentences], self.max_len, eos=True)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of one row of target indices: up to ``<eos>``, without padding."""
        return sentence_text(self.target_vocab.decode(ids), self.tokenizer)

    def read(self, source: Source, options: dict[str, Any]) -> list[Example]:
        lines = text_lines(source)
        tokens = [self.tokens(line.text) for line in lines]
        warn_cut(source.name, lines, tokens, self.max_len - 1, "translates")
        return line_examples(lines, encode_batch(self.source_vocab, tokens, self.max_len, eos=True))

    def write_inputs(self, batch, folder: Path) -> list[Path]:
        return write_token_lines(self.source_vocab, batch[0], "word", folder)

    def rows(self, outputs: dict[str, Any], examples: Sequence[Example], options: dict[str, Any],
             sink: Sink) -> list[dict[str, Any]]:
        return [error_row(e) or {"input": e.key, "source": e.extra["text"], "translation": self.decode(ids)}
                for e, ids in zip(examples, outputs["tokens"].tolist(), strict=True)]
