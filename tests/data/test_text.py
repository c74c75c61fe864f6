"""Tokenising, vocabularies, encoding and tab-separated text files (dlbench.data.text)."""

from __future__ import annotations

import pytest
import torch

from dlbench.core.errors import DlbenchError
from dlbench.data.text import (
    BOS_INDEX,
    EOS_INDEX,
    PAD_INDEX,
    SPECIALS,
    UNK_INDEX,
    Vocabulary,
    encode_batch,
    read_text_file,
    tab_fields,
    tokenize,
)


def test_word_tokens_split_punctuation_and_keep_umlauts():
    assert tokenize("Hast du früher nicht lange Haare gehabt?") == \
        ["hast", "du", "früher", "nicht", "lange", "haare", "gehabt", "?"]
    assert tokenize("Call 0800-123, NOW!!") == ["call", "0800", "-", "123", ",", "now", "!", "!"]


def test_char_tokens_collapse_white_space():
    assert tokenize("Ok  lar\t!", level="char") == list("ok lar !")
    with pytest.raises(ValueError, match="level"):
        tokenize("x", level="byte")


def test_vocabulary_orders_by_frequency_then_alphabet_and_applies_limits():
    corpus = [["b", "a", "c"], ["a", "c"], ["a", "d"]]
    vocab = Vocabulary.build(corpus)
    assert vocab.itos == [*SPECIALS, "a", "c", "b", "d"]
    assert Vocabulary.build(corpus, min_freq=2).itos == [*SPECIALS, "a", "c"]
    assert Vocabulary.build(corpus, max_size=len(SPECIALS) + 1).itos == [*SPECIALS, "a"]
    with pytest.raises(ValueError, match="min_freq"):
        Vocabulary.build(corpus, min_freq=0)
    with pytest.raises(ValueError, match="max_vocab"):
        Vocabulary.build(corpus, max_size=len(SPECIALS))


def test_words_outside_the_training_corpus_map_to_unk():
    train = [tokenize("the cat sat"), tokenize("the dog sat")]
    vocab = Vocabulary.build(train)
    ids = vocab.encode(tokenize("the bird sat"))
    assert ids[1] == UNK_INDEX and ids[0] != UNK_INDEX and ids[2] != UNK_INDEX
    assert "bird" not in vocab
    assert vocab.decode(ids) == ["the", "<unk>", "sat"]


def test_special_tokens_in_text_are_not_vocabulary_entries():
    vocab = Vocabulary.build([["<pad>", "<eos>", "word"]])
    assert vocab.itos == [*SPECIALS, "word"]


def test_encode_batch_pads_truncates_and_marks_ends():
    vocab = Vocabulary.build([["a", "b", "c", "d"]])
    a, b, c = vocab.encode(["a", "b", "c"])
    x = encode_batch(vocab, [["a", "b", "c", "d"], ["a"], []], max_len=5, bos=True, eos=True)
    assert x.shape == (3, 5) and x.dtype == torch.long
    assert x[0].tolist() == [BOS_INDEX, a, b, c, EOS_INDEX]  # cut to fit, <eos> kept
    assert x[1].tolist() == [BOS_INDEX, a, EOS_INDEX, PAD_INDEX, PAD_INDEX]
    assert x[2].tolist() == [BOS_INDEX, UNK_INDEX, EOS_INDEX, PAD_INDEX, PAD_INDEX]  # never only padding
    with pytest.raises(ValueError, match="max_len"):
        encode_batch(vocab, [["a"]], max_len=2, bos=True, eos=True)


def test_decode_stops_at_eos_and_drops_padding():
    vocab = Vocabulary.build([["x", "y"]])
    x, y = vocab.encode(["x", "y"])
    assert vocab.decode([BOS_INDEX, x, y, EOS_INDEX, x, PAD_INDEX]) == ["x", "y"]
    assert vocab.decode([BOS_INDEX, x, EOS_INDEX], strip_specials=False) == ["<bos>", "x", "<eos>"]


def test_read_text_file_problems_are_dlbench_errors(tmp_path):
    with pytest.raises(DlbenchError, match="does not exist"):
        read_text_file(tmp_path / "missing.tsv", "pairs")
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n  \n")
    with pytest.raises(DlbenchError, match="is empty"):
        read_text_file(empty, "pairs")
    latin = tmp_path / "latin1.tsv"
    latin.write_bytes("ok\tfine\nnaïve\tcafé\n".encode("latin-1"))
    with pytest.raises(DlbenchError, match=r"line 2: not UTF-8"):
        read_text_file(latin, "pairs")
    with pytest.raises(DlbenchError, match="directory"):
        read_text_file(tmp_path, "pairs")


def test_read_text_file_drops_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.tsv"
    path.write_bytes(b"\xef\xbb\xbfham\thello\n")
    assert read_text_file(path, "SMS").startswith("ham")


def test_tab_fields_name_the_bad_line():
    text = "a\tb\n\nc\td\textra\tmore\ne f\n"
    with pytest.raises(DlbenchError, match="line 4"):
        tab_fields(text, "pairs", "f.tsv", (2, 3), "two columns")
    rows = tab_fields(text.rsplit("e f", 1)[0], "pairs", "f.tsv", (2, 3), "two columns")
    assert rows == [(1, ["a", "b"]), (3, ["c", "d", "extra\tmore"])]
    with pytest.raises(DlbenchError, match="line 1"):
        tab_fields("a\t \n", "pairs", "f.tsv", (2, 2), "two columns")
