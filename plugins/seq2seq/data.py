"""Sentence pairs for translation, held in memory as padded token tensors.

:class:`TranslationDataModule` does the common part: a fixed-seed split into train, validation and test, word
tokenising, one vocabulary per language built on the training split only, and batching on the device. Batches are
``(src, tgt, copy)``: the source as ``tokens <eos>``, the target as ``<bos> tokens <eos>``, and the source words
looked up in the *target* vocabulary (``tokens <eos>``), which the model scores as the copy-the-source baseline.
A dataset only says how to load its pairs:

* :class:`SyntheticTranslationDataModule`: an invented language with a lexicon, gender agreement and reordering
  rules (the default).
* :class:`SentencePairsDataModule`: any tab-separated file of pairs in the Tatoeba/Anki format.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch

from dlbench import DlbenchError
from dlbench.data.batches import tensor_loader
from dlbench.data.text import (
    BOS_INDEX,
    EOS_INDEX,
    PAD_INDEX,
    UNK_INDEX,
    Vocabulary,
    encode_batch,
    read_text_file,
    tab_fields,
    tokenize,
)

WORD_TOKENIZER: dict[str, Any] = {"kind": "word", "lowercase": True}
"""The tokenisation of this plugin as plain data (kept in the run's predictor): lower-cased words and punctuation
marks, the same for both languages."""


def sentence_tokens(sentence: str, tokenizer: dict[str, Any]) -> list[str]:
    """The one tokeniser of this plugin: the training pairs (both sides) and the sentences a trained run translates
    (see :mod:`dlbench_plugins.seq2seq.predict`) all go through it, with the settings the run kept (``tokenizer``).
    Another tokeniser (subwords) goes here and in :func:`sentence_text`, its settings (merges, ...) in the dict."""
    if tokenizer.get("kind") != "word" or not tokenizer.get("lowercase", True):
        raise ValueError(f"this version of the seq2seq plugin tokenises lower-cased words only, not {tokenizer}")
    return tokenize(sentence, "word")


def sentence_text(tokens: list[str], tokenizer: dict[str, Any]) -> str:
    """The text of ``tokens`` (:func:`sentence_tokens` undone, as far as it can be): words joined by spaces."""
    return " ".join(tokens)


class TranslationDataModule(L.LightningDataModule):
    """Base for sentence pairs that fit in memory. Subclasses implement :meth:`load`."""

    def __init__(self, min_freq: int = 1, max_vocab: int | None = None, max_len: int = 24,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, batch_size: int = 64, seed: int = 0) -> None:
        """
        Args:
            min_freq: A word enters its language's vocabulary when it occurs this often in the training split.
            max_vocab: Largest vocabulary per language, special tokens included; no limit when None.
            max_len: Tokens per sentence, <bos> and <eos> included; longer sentences are cut at the end.
            val_fraction: Fraction of the pairs held out for validation.
            test_fraction: Fraction of the pairs held out for testing.
            batch_size: Pairs per training batch.
            seed: Seed of the split, kept apart from the training seed so that runs with different training seeds
                are judged on the same sentences.
        """
        super().__init__()
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3 (<bos>, a word, <eos>), got {max_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 0.9):
            raise ValueError(f"val_fraction and test_fraction must be in (0, 1) and leave at least 10% for "
                             f"training, got {val_fraction} and {test_fraction}")
        self.save_hyperparameters()
        pairs = self.load()
        if len(pairs) < 10:
            raise DlbenchError(f"only {len(pairs)} sentence pairs: at least 10 are needed to split them into train, "
                               f"validation and test. Give a larger file.")
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
        n_test, n_val = max(1, round(len(pairs) * test_fraction)), max(1, round(len(pairs) * val_fraction))
        index = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        self.tokenizer = dict(WORD_TOKENIZER)
        src = [sentence_tokens(s, self.tokenizer) for s, _ in pairs]
        tgt = [sentence_tokens(t, self.tokenizer) for _, t in pairs]
        train = index["train"]
        self.src_vocab = Vocabulary.build((src[i] for i in train), min_freq=min_freq, max_size=max_vocab)
        self.tgt_vocab = Vocabulary.build((tgt[i] for i in train), min_freq=min_freq, max_size=max_vocab)
        tensors = (encode_batch(self.src_vocab, src, max_len, eos=True),
                   encode_batch(self.tgt_vocab, tgt, max_len, bos=True, eos=True),
                   encode_batch(self.tgt_vocab, src, max_len, eos=True))
        self.splits = {name: tuple(t[idx] for t in tensors) for name, idx in index.items()}
        self.n_truncated = sum(len(s) > max_len - 1 or len(t) > max_len - 2 for s, t in zip(src, tgt, strict=True))
        # Sizes and indices the model receives through linked arguments (DATA_KINDS["translation"]).
        self.src_vocab_size, self.tgt_vocab_size = len(self.src_vocab), len(self.tgt_vocab)
        self.max_len = max_len
        self.pad_index, self.bos_index, self.eos_index, self.unk_index = PAD_INDEX, BOS_INDEX, EOS_INDEX, UNK_INDEX

    def load(self) -> list[tuple[str, str]]:
        """All (source sentence, target sentence) pairs."""
        raise NotImplementedError

    def predictor(self):
        """What ``dlbench predict`` and ``dlbench serve`` need: both vocabularies, the tokenisation and the length
        (see :mod:`dlbench.data.predict`)."""
        from dlbench_plugins.seq2seq.predict import TranslationPredictor

        return TranslationPredictor(self.src_vocab.itos, self.tgt_vocab.itos, self.tokenizer, self.max_len)

    def decode_source(self, ids: torch.Tensor) -> str:
        return sentence_text(self.src_vocab.decode(ids.tolist()), self.tokenizer)

    def decode_target(self, ids: torch.Tensor) -> str:
        return sentence_text(self.tgt_vocab.decode(ids.tolist()), self.tokenizer)

    def _loader(self, split: str, shuffle: bool):
        size = self.hparams.batch_size if shuffle else max(self.hparams.batch_size, 500)
        return tensor_loader(self, *self.splits[split], batch_size=size, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("test", shuffle=False)


# The invented target language ("Lexish"; word forms loosely after Esperanto). English-like source sentences
# "SUBJECT VERB OBJECT [PREPOSITION NOUN-PHRASE] ." are translated word for word through the lexicon, with three
# rules that make the model learn alignment rather than a word-by-word substitution:
#   1. verb last, prepositional phrase before the object: "S V O P N ." -> "S P N O V ."
#   2. adjectives follow their noun, in mirrored order: "the big red dog" -> "lo hundo ruga granda"
#   3. articles agree with the gender of the noun, which comes later in the source: the -> lo/la, a/an -> un/una.
# Names are the same in both languages (copied).
NOUNS = {"dog": ("hundo", "m"), "cat": ("mirka", "f"), "bird": ("pipo", "m"), "house": ("domo", "f"),
         "garden": ("gardo", "m"), "car": ("auto", "m"), "tree": ("arbo", "m"), "river": ("rivo", "f"),
         "book": ("libro", "m"), "table": ("tablo", "f"), "child": ("kido", "m"), "teacher": ("lerna", "f"),
         "ball": ("balo", "f"), "horse": ("chevo", "m"), "boat": ("boto", "f"), "city": ("urbo", "f")}
ADJECTIVES = {"big": "granda", "small": "peta", "red": "ruga", "old": "malnova", "new": "nova", "green": "verda",
              "happy": "gaja", "quiet": "kvieta", "fast": "rapida", "dark": "malhela"}
VERBS = {"sees": "vidas", "likes": "shatas", "follows": "sekvas", "finds": "trovas", "paints": "pentras",
         "carries": "portas", "watches": "rigardas", "helps": "helpas"}
PREPOSITIONS = {"in": "en", "near": "apud", "behind": "malantau", "under": "sub", "with": "kun"}
ARTICLES = {("the", "m"): "lo", ("the", "f"): "la", ("a", "m"): "un", ("a", "f"): "una", ("an", "m"): "un",
            ("an", "f"): "una"}
NAMES = ("anna", "tom", "maria", "paul", "lisa", "omar")


def _noun_phrase(rng: random.Random) -> tuple[list[str], list[str]]:
    if rng.random() < 0.2:
        name = rng.choice(NAMES)
        return [name], [name]
    article, noun = rng.choice(("the", "a")), rng.choice(list(NOUNS))
    adjectives = rng.sample(list(ADJECTIVES), k=rng.choice((0, 0, 1, 1, 2)))
    word, gender = NOUNS[noun]
    if article == "a" and (adjectives[0] if adjectives else noun)[0] in "aeiou":
        article = "an"
    source = [article, *adjectives, noun]
    target = [ARTICLES[article, gender], word, *(ADJECTIVES[a] for a in reversed(adjectives))]
    return source, target


def synthetic_pair(rng: random.Random) -> tuple[str, str]:
    """One generated (English-like source, invented-language target) sentence pair."""
    (subj_s, subj_t), (obj_s, obj_t) = _noun_phrase(rng), _noun_phrase(rng)
    verb = rng.choice(list(VERBS))
    pp_s, pp_t = [], []
    if rng.random() < 0.5:
        prep = rng.choice(list(PREPOSITIONS))
        np_s, np_t = _noun_phrase(rng)
        pp_s, pp_t = [prep, *np_s], [PREPOSITIONS[prep], *np_t]
    source = [*subj_s, verb, *obj_s, *pp_s, "."]
    target = [*subj_t, *pp_t, *obj_t, VERBS[verb], "."]
    return " ".join(source), " ".join(target)


class SyntheticTranslationDataModule(TranslationDataModule):
    """Generated sentence pairs from English-like sentences into an invented language with verb-final order,
    adjectives after the noun and gendered articles (see :func:`synthetic_pair`)."""

    def __init__(self, n_pairs: int = 10000, min_freq: int = 1, max_vocab: int | None = None, max_len: int = 20,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, batch_size: int = 64, seed: int = 0) -> None:
        """
        Args:
            n_pairs: Number of sentence pairs generated (train, validation and test together).
            min_freq: A word enters its language's vocabulary when it occurs this often in the training split.
            max_vocab: Largest vocabulary per language, special tokens included; no limit when None.
            max_len: Tokens per sentence, <bos> and <eos> included (the longest generated sentence has 15 words).
            val_fraction: Fraction of the pairs held out for validation.
            test_fraction: Fraction of the pairs held out for testing.
            batch_size: Pairs per training batch.
            seed: Seed of the generator and of the split.
        """
        if n_pairs < 10:
            raise ValueError(f"n_pairs must be >= 10, got {n_pairs}")
        super().__init__(min_freq=min_freq, max_vocab=max_vocab, max_len=max_len, val_fraction=val_fraction,
                         test_fraction=test_fraction, batch_size=batch_size, seed=seed)

    def load(self) -> list[tuple[str, str]]:
        rng = random.Random(self.hparams.seed)
        return [synthetic_pair(rng) for _ in range(self.hparams.n_pairs)]


PAIRS_FILE = "pairs.tsv"
PAIRS_FORMAT = "'source<TAB>target' or 'source<TAB>target<TAB>attribution'"


def read_sentence_pairs(text: str, where: str) -> list[tuple[str, str]]:
    """The (first column, second column) pairs of a Tatoeba/Anki-style file; a third column (attribution) is
    ignored."""
    return [(fields[0].strip(), fields[1].strip())
            for _, fields in tab_fields(text, "sentence pairs", where, (2, 3), PAIRS_FORMAT)]


class SentencePairsDataModule(TranslationDataModule):
    """Tab-separated sentence pairs, one pair a line: ``source<TAB>target[<TAB>attribution]`` (the format of the
    Tatoeba/Anki files at manythings.org/anki, and of dlbench's test copy of English-German pairs)."""

    def __init__(self, path: str | None = None, root: str | None = None,
                 direction: Literal["forward", "reverse"] = "forward", min_freq: int = 2,
                 max_vocab: int | None = 20000, max_len: int = 24, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, batch_size: int = 64, seed: int = 0) -> None:
        """
        Args:
            path: The pairs file.
            root: A directory holding the pairs as pairs.tsv (used when path is not given).
            direction: 'forward' translates the first column into the second, 'reverse' the second into the first.
            min_freq: A word enters its language's vocabulary when it occurs this often in the training split.
            max_vocab: Largest vocabulary per language, special tokens included; no limit when None.
            max_len: Tokens per sentence, <bos> and <eos> included; longer sentences are cut at the end.
            val_fraction: Fraction of the pairs held out for validation.
            test_fraction: Fraction of the pairs held out for testing (10%, the usual held-out share).
            batch_size: Pairs per training batch.
            seed: Seed of the split.
        """
        if direction not in ("forward", "reverse"):
            raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
        if path is None and root is None:
            raise DlbenchError("sentence_pairs needs a file: pass --data.path FILE (tab-separated "
                               f"{PAIRS_FORMAT}, one pair a line) or --data.root DIR holding {PAIRS_FILE}.")
        super().__init__(min_freq=min_freq, max_vocab=max_vocab, max_len=max_len, val_fraction=val_fraction,
                         test_fraction=test_fraction, batch_size=batch_size, seed=seed)

    def load(self) -> list[tuple[str, str]]:
        path = Path(self.hparams.path) if self.hparams.path else Path(self.hparams.root) / PAIRS_FILE
        pairs = read_sentence_pairs(read_text_file(path, "sentence pairs"), str(path))
        return [(t, s) for s, t in pairs] if self.hparams.direction == "reverse" else pairs
