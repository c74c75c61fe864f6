"""Text classification data held in memory as padded token tensors.

:class:`TextClassificationDataModule` does the common part: a stratified, fixed-seed split into train, validation
and test, tokenising, a vocabulary built on the training split only (words first seen in validation or test map to
``<unk>``) and batching on the device. A dataset only says how to load its texts and labels:

* :class:`SyntheticTextDataModule`: generated restaurant/film reviews whose sentiment depends on word order (the
  default; no labelled text corpus ships with any of dlbench's dependencies).
* :class:`SmsSpamDataModule`: the SMS Spam Collection (5,574 real messages, 747 of them spam).
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch

from dlbench import DlbenchError
from dlbench.data.batches import tensor_loader
from dlbench.data.download import Remote, data_root, fetch
from dlbench.data.text import LEVELS, PAD_INDEX, Vocabulary, encode_batch, read_text_file, tab_fields, tokenize


def tokenizer_settings(level: str) -> dict[str, Any]:
    """The tokenisation of this plugin as plain data (kept in the run's predictor): the ``level`` and lower-casing."""
    return {"level": level, "lowercase": True}


def text_tokens(text: str, tokenizer: dict[str, Any]) -> list[str]:
    """The one tokeniser of this plugin: the training texts and the texts a trained run predicts on (see
    :mod:`dlbench_plugins.transformer.predict`) both go through it, with the settings of :func:`tokenizer_settings`."""
    if not tokenizer.get("lowercase", True):
        raise ValueError("this version of the transformer plugin only tokenises lower-cased text")
    return tokenize(text, tokenizer["level"])


def stratified_split(labels: torch.Tensor, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train, validation and test indices holding each class in the same proportion (within one example)."""
    g = torch.Generator().manual_seed(seed)
    parts: tuple[list[torch.Tensor], ...] = ([], [], [])
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test, n_val = round(len(idx) * test_fraction), round(len(idx) * val_fraction)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    # Mix the classes again so that the first batch of each split holds both.
    return tuple(torch.cat(p)[torch.randperm(sum(len(i) for i in p), generator=g)] for p in parts)


class TextClassificationDataModule(L.LightningDataModule):
    """Base for labelled texts that fit in memory. Subclasses set ``class_names`` and implement :meth:`load`."""

    class_names: tuple[str, ...] = ()

    def __init__(self, level: Literal["word", "char"] = "word", min_freq: int = 1, max_vocab: int | None = None,
                 max_len: int = 64, val_fraction: float = 0.1, test_fraction: float = 0.2, batch_size: int = 64,
                 seed: int = 0) -> None:
        """
        Args:
            level: Tokens are lower-cased 'word's and punctuation marks, or single 'char'acters.
            min_freq: A token enters the vocabulary when it occurs at least this often in the training split.
            max_vocab: Largest vocabulary, special tokens included (most frequent tokens kept); no limit when None.
            max_len: Tokens per text; longer texts are cut at the end.
            val_fraction: Fraction of each class held out for validation.
            test_fraction: Fraction of each class held out for testing.
            batch_size: Texts per training batch.
            seed: Seed of the split, kept apart from the training seed so that runs with different training seeds
                are judged on the same texts.
        """
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 0.9):
            raise ValueError(f"val_fraction and test_fraction must be in (0, 1) and leave at least 10% for "
                             f"training, got {val_fraction} and {test_fraction}")
        self.save_hyperparameters()
        texts, labels = self.load()
        y = torch.tensor(labels, dtype=torch.long)
        train, val, test = stratified_split(y, val_fraction, test_fraction, seed)
        self.tokenizer = tokenizer_settings(level)
        tokens = [text_tokens(t, self.tokenizer) for t in texts]
        self.vocab = Vocabulary.build((tokens[i] for i in train.tolist()), min_freq=min_freq, max_size=max_vocab)
        x = encode_batch(self.vocab, tokens, max_len)
        self.splits = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}
        # Sizes the model receives through linked arguments (see dlbench.core.spec.DATA_KINDS["text"]).
        self.num_classes = len(self.class_names)
        self.vocab_size = len(self.vocab)
        self.max_len = max_len
        self.pad_index = PAD_INDEX

    def load(self) -> tuple[list[str], list[int]]:
        """All texts and their labels (indices into ``class_names``)."""
        raise NotImplementedError

    def predictor(self):
        """What ``dlbench predict`` and ``dlbench serve`` need: the vocabulary, the tokenisation, the length and the
        class names (see :mod:`dlbench.data.predict`)."""
        from dlbench_plugins.transformer.predict import TextPredictor

        return TextPredictor(self.vocab.itos, self.tokenizer, self.max_len, self.class_names)

    def decode(self, ids: torch.Tensor) -> str:
        """The tokens behind a row of indices, as the model saw them (unknown words as ``<unk>``)."""
        return ("" if self.hparams.level == "char" else " ").join(self.vocab.decode(ids.tolist()))

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


# The synthetic reviews: one sentiment adjective and at most one "not" per review. The "not" either negates the
# adjective ("... was not good") or sits in a clause that does not govern it ("the soup that i did not order was
# good"). Both hold the same words, so a bag of words cannot tell them apart and scores about 67% (right on the third
# without a "not", a coin toss on the rest); the label depends on where the "not" stands relative to the adjective.
NOUNS = ("soup", "pasta", "service", "room", "movie", "plot", "staff", "coffee", "hotel", "music", "wine", "show",
         "dessert", "view", "concert", "menu")
VERBS = ("order", "try", "book", "see", "choose", "recommend", "pick", "want")
SUBJECTS = ("i", "we", "my friend", "my sister", "the critic", "everyone")
POSITIVE = ("good", "great", "excellent", "lovely", "superb", "fine", "tasty", "pleasant", "wonderful", "nice")
NEGATIVE = ("bad", "awful", "terrible", "poor", "bland", "dreadful", "boring", "rude", "horrible", "dull")
INTENSIFIERS = ("", "", "really", "very", "quite", "truly")
OPENERS = ("", "", "honestly ,", "overall ,", "in the end ,", "to be fair ,", "sadly ,", "luckily ,")


def synthetic_review(rng: random.Random) -> tuple[str, int]:
    """One generated review and its sentiment (1 positive, 0 negative)."""
    positive = rng.random() < 0.5
    adjective = rng.choice(POSITIVE if positive else NEGATIVE)
    # Where the one "not" goes, if anywhere: before the adjective (flips it), or into the other clause (changes
    # nothing). The reviews without one give the adjectives a first-order signal to start learning from.
    where = rng.choice(("none", "adjective", "other"))
    noun, verb, subject = rng.choice(NOUNS), rng.choice(VERBS), rng.choice(SUBJECTS)
    negated = where == "adjective"
    judged = " ".join(w for w in ("was", "not" if negated else "", rng.choice(INTENSIFIERS), adjective) if w)
    other = f"did {'not ' if where == 'other' else ''}{verb}"
    if rng.random() < 0.5:
        body = f"the {noun} that {subject} {other} {judged}"
    else:
        body = f"{subject} {other} the {noun} , and it {judged}"
    return f"{rng.choice(OPENERS)} {body}".strip(), int(positive != negated)


class SyntheticTextDataModule(TextClassificationDataModule):
    """Generated reviews whose sentiment needs word order (see :func:`synthetic_review`): a bag-of-words model stays
    near 67%, a model that attends to positions reaches 100%."""

    class_names = ("negative", "positive")

    def __init__(self, n_samples: int = 6000, level: Literal["word", "char"] = "word", min_freq: int = 1,
                 max_vocab: int | None = None, max_len: int = 24, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, batch_size: int = 64, seed: int = 0) -> None:
        """
        Args:
            n_samples: Number of reviews generated (train, validation and test together).
            level: Tokens are lower-cased 'word's and punctuation marks, or single 'char'acters.
            min_freq: A token enters the vocabulary when it occurs at least this often in the training split.
            max_vocab: Largest vocabulary, special tokens included; no limit when None.
            max_len: Tokens per review (the longest generated review has 17); use about 110 with 'char'.
            val_fraction: Fraction of each class held out for validation.
            test_fraction: Fraction of each class held out for testing.
            batch_size: Reviews per training batch.
            seed: Seed of the generator and of the split.
        """
        if n_samples < 20:
            raise ValueError(f"n_samples must be >= 20, got {n_samples}")
        super().__init__(level=level, min_freq=min_freq, max_vocab=max_vocab, max_len=max_len,
                         val_fraction=val_fraction, test_fraction=test_fraction, batch_size=batch_size, seed=seed)

    def load(self) -> tuple[list[str], list[int]]:
        rng = random.Random(self.hparams.seed)
        texts, labels = zip(*(synthetic_review(rng) for _ in range(self.hparams.n_samples)), strict=True)
        return list(texts), list(labels)


SMS_SPAM_FILE = "SMSSpamCollection"
SMS_SPAM_REMOTE = Remote(
    filename="smsspamcollection.zip",
    urls=("https://archive.ics.uci.edu/ml/machine-learning-databases/00228/smsspamcollection.zip",),
    sha256="1587ea43e58e82b14ff1f5425c88e17f8496bfcdb67a583dbff9eefaf9963ce3",
)
SMS_LABELS = ("ham", "spam")


def read_sms_spam(text: str, where: str) -> tuple[list[str], list[int]]:
    """Messages and labels (0 ham, 1 spam) of the SMS Spam Collection's ``label<TAB>message`` lines."""
    texts, labels = [], []
    for line_no, (label, message) in tab_fields(text, "SMS spam", where, (2, 2), "'ham' or 'spam', a tab, the message"):
        if label not in SMS_LABELS:
            raise DlbenchError(f"SMS spam file {where}, line {line_no}: label {label[:20]!r} is neither 'ham' nor "
                               f"'spam'. Fix or delete that line.")
        texts.append(message)
        labels.append(SMS_LABELS.index(label))
    return texts, labels


def sms_spam_text(root: str | None) -> tuple[str, str]:
    """The text of the SMS Spam Collection and where it came from: ``root`` may be the file itself or a directory
    holding it, unzipped or as the UCI zip; the zip is downloaded into the cache when nothing is there."""
    if root is not None and Path(root).is_file():
        return read_text_file(root, "SMS spam"), str(root)
    directory = data_root("sms_spam", root)
    plain = directory / SMS_SPAM_FILE
    if plain.is_file():
        return read_text_file(plain, "SMS spam"), str(plain)
    try:
        archive = fetch("sms_spam", SMS_SPAM_REMOTE, root)
    except DlbenchError as err:
        raise DlbenchError(f"{err} The unzipped {SMS_SPAM_FILE} file works too.") from None
    where = f"{archive}:{SMS_SPAM_FILE}"
    try:
        with zipfile.ZipFile(archive) as zf:
            raw = zf.read(SMS_SPAM_FILE)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise DlbenchError(f"SMS spam archive {archive} is not a readable zip file ({err}). Delete it and download "
                           f"it again.") from None
    except KeyError:
        raise DlbenchError(f"SMS spam archive {archive} has no member {SMS_SPAM_FILE}. It is not the UCI "
                           f"smsspamcollection.zip: delete it and download it again.") from None
    return read_text_file(raw, "SMS spam", source=where), where


class SmsSpamDataModule(TextClassificationDataModule):
    """The SMS Spam Collection v.1 (Almeida, Gomez Hidalgo, 2011): 5,574 English text messages, 747 spam. Class 1 is
    spam, so the F1 logged is the spam class's."""

    class_names = SMS_LABELS

    def __init__(self, root: str | None = None, level: Literal["word", "char"] = "word", min_freq: int = 2,
                 max_vocab: int | None = 20000, max_len: int = 64, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, batch_size: int = 64, seed: int = 0) -> None:
        """
        Args:
            root: Directory holding SMSSpamCollection or the UCI smsspamcollection.zip (or the file itself);
                downloaded into $DLBENCH_DATA_DIR/sms_spam (default ~/.cache/dlbench/sms_spam) when not given.
            level: Tokens are lower-cased 'word's and punctuation marks, or single 'char'acters.
            min_freq: A token enters the vocabulary when it occurs at least this often in the training split.
            max_vocab: Largest vocabulary, special tokens included (most frequent tokens kept); no limit when None.
            max_len: Tokens per message, longer messages are cut (64 words and marks cover 99% of messages); use
                about 200 with 'char'.
            val_fraction: Fraction of each class held out for validation.
            test_fraction: Fraction of each class held out for testing.
            batch_size: Messages per training batch.
            seed: Seed of the stratified split.
        """
        super().__init__(level=level, min_freq=min_freq, max_vocab=max_vocab, max_len=max_len,
                         val_fraction=val_fraction, test_fraction=test_fraction, batch_size=batch_size, seed=seed)

    def load(self) -> tuple[list[str], list[int]]:
        text, where = sms_spam_text(self.hparams.root)
        return read_sms_spam(text, where)
