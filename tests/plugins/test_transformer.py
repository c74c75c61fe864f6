"""The transformer plugin: padding masks, the generated reviews, the SMS Spam Collection loader and its splits."""

from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path

import pytest
import torch
from dlbench_plugins.transformer.data import (
    POSITIVE,
    SmsSpamDataModule,
    SyntheticTextDataModule,
    stratified_split,
    synthetic_review,
)
from dlbench_plugins.transformer.model import TransformerClassifier

from dlbench.core.errors import DlbenchError
from dlbench.data.text import PAD_INDEX, UNK_INDEX

TEST_DATA = os.environ.get("DLBENCH_TEST_DATA")


def _model(pooling: str = "mean", **kw) -> TransformerClassifier:
    torch.manual_seed(0)
    args = {"vocab_size": 30, "num_classes": 3, "max_len": 12, "d_model": 16, "nhead": 2, "num_layers": 2,
            "dim_feedforward": 16, "pooling": pooling, **kw}
    return TransformerClassifier(**args).eval()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_is_masked_out(pooling):
    model = _model(pooling)
    tokens = torch.tensor([[5, 9, 7, 4, 11]])
    padded = torch.cat([tokens, torch.full((1, 7), PAD_INDEX)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(tokens))
        # Without the mask the padding is attended to and changes the output: the check above is not vacuous.
        model.padding_mask = lambda t: torch.zeros_like(t, dtype=torch.bool)
        assert not torch.allclose(model(padded), model(tokens))


def test_all_padding_row_gives_finite_output():
    model = _model()
    with torch.no_grad():
        assert torch.isfinite(model(torch.full((2, 12), PAD_INDEX))).all()


def test_word_order_changes_the_output():
    model = _model()
    with torch.no_grad():
        assert not torch.allclose(model(torch.tensor([[5, 9, 7]])), model(torch.tensor([[7, 9, 5]])))


@pytest.mark.parametrize("bad, message", [({"nhead": 3}, "nhead must divide d_model"),
                                          ({"pooling": "max"}, "pooling"),
                                          ({"num_classes": 1}, "num_classes"),
                                          ({"pad_index": 30}, "pad_index"),
                                          ({"dropout": 1.0}, "dropout")])
def test_invalid_arguments_name_the_argument(bad, message):
    with pytest.raises(ValueError, match=message):
        _model(**bad)


def test_reviews_need_word_order():
    rng = random.Random(3)
    reviews = [synthetic_review(rng) for _ in range(3000)]
    labels = [y for _, y in reviews]
    assert 0.45 < sum(labels) / len(labels) < 0.55
    for text, label in reviews:
        words = text.split()
        assert words.count("not") <= 1
        # The label is the adjective's polarity, flipped exactly when "not" stands in the judging clause.
        judged = words[words.index("was") + 1 :]
        assert label == int((judged[-1] in POSITIVE) != ("not" in judged))
    # A bag of words sees the same words whatever the "not" negates: a linear model on counts stays far from
    # what word order allows (100%).
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    counts = CountVectorizer(token_pattern=r"\S+").fit_transform([t for t, _ in reviews])
    bow = LogisticRegression(max_iter=1000).fit(counts[:2000], labels[:2000]).score(counts[2000:], labels[2000:])
    assert bow < 0.75


def test_synthetic_datamodule_exposes_linked_sizes_before_setup():
    dm = SyntheticTextDataModule(n_samples=200, max_len=20)
    assert (dm.num_classes, dm.max_len, dm.pad_index) == (2, 20, PAD_INDEX)
    assert dm.vocab_size == len(dm.vocab)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 20) and x.dtype == torch.long and y.shape == (64,)
    assert sum(len(s[1]) for s in dm.splits.values()) == 200


def test_stratified_split_keeps_class_proportions():
    labels = torch.tensor([0] * 900 + [1] * 100)
    train, val, test = stratified_split(labels, 0.1, 0.2, seed=0)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(1000))
    assert (labels[test] == 1).sum() == 20 and (labels[val] == 1).sum() == 10
    assert torch.equal(train, stratified_split(labels, 0.1, 0.2, seed=0)[0])


def _write_sms(path: Path, n: int = 60) -> list[tuple[str, str]]:
    """A file in the SMS Spam Collection's format; message i holds the word ``uniqI`` and no other message does."""
    rows = [("spam" if i % 5 == 0 else "ham", f"Hello there, word{i % 3} uniq{i}!") for i in range(n)]
    path.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    return rows


def test_sms_loader_reads_the_format_and_builds_the_vocabulary_on_train_only(tmp_path):
    rows = _write_sms(tmp_path / "SMSSpamCollection")
    dm = SmsSpamDataModule(root=str(tmp_path), min_freq=1, max_len=16)
    assert dm.class_names == ("ham", "spam")
    assert sum(len(y) for _, y in dm.splits.values()) == len(rows)
    assert sum(int(y.sum()) for _, y in dm.splits.values()) == sum(label == "spam" for label, _ in rows)
    uniq_in_vocab = {t for t in dm.vocab.itos if t.startswith("uniq")}
    assert len(uniq_in_vocab) == len(dm.splits["train"][1])  # one per training message, none from the others
    for split in ("val", "test"):
        x = dm.splits[split][0]
        assert (x == UNK_INDEX).any(1).all(), f"every {split} message has its unseen word as <unk>"
    assert not (dm.splits["train"][0] == UNK_INDEX).any()
    assert dm.decode(dm.splits["train"][0][0]).startswith("hello there , word")


def test_sms_loader_reads_the_uci_zip(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    _write_sms(tmp_path / "plain.txt")
    with zipfile.ZipFile(tmp_path / "smsspamcollection.zip", "w") as zf:
        zf.write(tmp_path / "plain.txt", "SMSSpamCollection")
        zf.writestr("readme", "SMS Spam Collection v.1")
    dm = SmsSpamDataModule(root=str(tmp_path), min_freq=1)
    assert sum(len(y) for _, y in dm.splits.values()) == 60


def test_sms_loader_accepts_the_file_itself(tmp_path):
    _write_sms(tmp_path / "messages.tsv")
    assert SmsSpamDataModule(root=str(tmp_path / "messages.tsv")).vocab_size > 4


@pytest.mark.parametrize("content, message", [
    (b"ham\tfine\nspam no tab here\n", "line 2"),
    (b"ham\tfine\n\nmaybe\tlabel unknown\n", "line 3: label 'maybe'"),
    (b"ham\t\n", "line 1"),
    (b"\n\n", "is empty"),
    ("ham\tça va\n".encode("latin-1"), "not UTF-8"),
])
def test_bad_sms_files_are_dlbench_errors(tmp_path, content, message):
    (tmp_path / "SMSSpamCollection").write_bytes(content)
    with pytest.raises(DlbenchError, match=message):
        SmsSpamDataModule(root=str(tmp_path))


def test_broken_zip_and_missing_data_are_dlbench_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    with pytest.raises(DlbenchError, match="smsspamcollection.zip"):
        SmsSpamDataModule(root=str(tmp_path))
    (tmp_path / "smsspamcollection.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DlbenchError, match="not a readable zip"):
        SmsSpamDataModule(root=str(tmp_path))
    with zipfile.ZipFile(tmp_path / "smsspamcollection.zip", "w") as zf:
        zf.writestr("other.txt", "ham\thi\n")
    with pytest.raises(DlbenchError, match="has no member SMSSpamCollection"):
        SmsSpamDataModule(root=str(tmp_path))


@pytest.mark.skipif(not TEST_DATA, reason="DLBENCH_TEST_DATA is not set")
def test_shared_sms_spam_collection():
    dm = SmsSpamDataModule(root=str(Path(TEST_DATA) / "sms-spam"))
    sizes = {name: len(y) for name, (_, y) in dm.splits.items()}
    spam = {name: int(y.sum()) for name, (_, y) in dm.splits.items()}
    assert sum(sizes.values()) == 5574 and sum(spam.values()) == 747
    assert spam["test"] == round(747 * 0.2) and sizes["test"] == round(747 * 0.2) + round(4827 * 0.2)
    assert dm.num_classes == 2 and 1000 < dm.vocab_size < 20000
