"""The seq2seq plugin: causal and padding masks, greedy decoding, BLEU inputs, the generated language and the
sentence-pair loader."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
from dlbench_plugins.seq2seq.data import (
    ADJECTIVES,
    ARTICLES,
    NAMES,
    NOUNS,
    PREPOSITIONS,
    VERBS,
    SentencePairsDataModule,
    SyntheticTranslationDataModule,
    synthetic_pair,
)
from dlbench_plugins.seq2seq.model import Seq2SeqTransformer

from dlbench.core.errors import DlbenchError
from dlbench.data.text import BOS_INDEX, EOS_INDEX, PAD_INDEX, UNK_INDEX

TEST_DATA = os.environ.get("DLBENCH_TEST_DATA")


def _model(**kw) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    args = {"src_vocab_size": 20, "tgt_vocab_size": 25, "max_len": 10, "d_model": 16, "nhead": 2,
            "num_encoder_layers": 2, "num_decoder_layers": 2, "dim_feedforward": 16, **kw}
    return Seq2SeqTransformer(**args).eval()


def test_decoder_is_causal():
    model = _model()
    src = torch.tensor([[5, 6, 7, 8, EOS_INDEX]])
    tgt = torch.tensor([[BOS_INDEX, 9, 10, 11, 12, 13]])
    later_changed = tgt.clone()
    later_changed[0, 3:] = torch.tensor([20, 21, 22])
    with torch.no_grad():
        a, b = model(src, tgt), model(src, later_changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # positions 0..2 see only tokens 0..2
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_source_and_target_padding_are_masked_out():
    model = _model()
    src = torch.tensor([[5, 6, 7, EOS_INDEX]])
    tgt = torch.tensor([[BOS_INDEX, 9, 10]])
    src_padded = torch.cat([src, torch.full((1, 5), PAD_INDEX)], dim=1)
    tgt_padded = torch.cat([tgt, torch.full((1, 4), PAD_INDEX)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(src_padded, tgt), model(src, tgt))
        torch.testing.assert_close(model(src_padded, tgt_padded)[:, :3], model(src, tgt))


def test_the_source_matters():
    model = _model()
    tgt = torch.tensor([[BOS_INDEX, 9, 10]])
    with torch.no_grad():
        assert not torch.allclose(model(torch.tensor([[5, 6, EOS_INDEX]]), tgt),
                                  model(torch.tensor([[6, 5, EOS_INDEX]]), tgt))


def test_greedy_decoding_layout_and_agreement_with_teacher_forcing():
    model = _model()
    src = torch.tensor([[5, 6, 7, EOS_INDEX, PAD_INDEX], [8, 9, EOS_INDEX, PAD_INDEX, PAD_INDEX]])
    out = model.greedy(src)
    assert out.shape == (2, 9)
    for row in out.tolist():
        if EOS_INDEX in row:
            assert all(t == PAD_INDEX for t in row[row.index(EOS_INDEX) + 1 :])
    # Each greedy word is the argmax of the teacher-forced logits given the words decoded before it.
    tgt_in = torch.cat([torch.full((2, 1), BOS_INDEX), out[:, :-1]], dim=1)
    with torch.no_grad():
        forced = model(src, tgt_in).argmax(-1)
    first_eos = [row.index(EOS_INDEX) if EOS_INDEX in row else len(row) - 1 for row in out.tolist()]
    for i, stop in enumerate(first_eos):
        assert torch.equal(forced[i, : stop + 1], out[i, : stop + 1])


def test_bleu_words_stop_at_eos_and_never_match_unknown_references():
    model = _model()
    ids = torch.tensor([[7, UNK_INDEX, 8, EOS_INDEX, 9, PAD_INDEX]])
    assert model._words(ids) == ["7 1 8"]
    assert model._words(ids, reference=True) == ["7 <unk-ref> 8"]


@pytest.mark.parametrize("bad, message", [({"nhead": 3}, "nhead must divide d_model"),
                                          ({"max_len": 2}, "max_len"),
                                          ({"bos_index": 0}, "must differ"),
                                          ({"eos_index": 40}, "eos_index"),
                                          ({"label_smoothing": 1.0}, "label_smoothing")])
def test_invalid_arguments_name_the_argument(bad, message):
    with pytest.raises(ValueError, match=message):
        _model(**bad)


def test_generated_language_follows_its_rules():
    rng = random.Random(5)
    lexicon = {**ADJECTIVES, **VERBS, **PREPOSITIONS, **{n: w for n, (w, _) in NOUNS.items()}, ".": "."}
    gender = {w: g for w, g in NOUNS.values()}
    for _ in range(500):
        source, target = synthetic_pair(rng)
        s, t = source.split(), target.split()
        assert s[-1] == t[-1] == "." and len(s) == len(t)
        assert t[-2] == VERBS[next(w for w in s if w in VERBS)]  # verb last
        # Word for word the same content: the lexicon image of the source, articles aside.
        content = sorted(lexicon.get(w, w) for w in s if w not in ("the", "a", "an"))
        assert content == sorted(w for w in t if w not in set(ARTICLES.values()))
        for i, w in enumerate(t):  # an article agrees with the noun right after it
            if w in ARTICLES.values():
                assert (w in ("lo", "un")) == (gender[t[i + 1]] == "m")
        # Word-for-word substitution in source order is never the translation: the verb moves.
        assert [lexicon.get(w, w) for w in s if w not in ("the", "a", "an")] != \
            [w for w in t if w not in set(ARTICLES.values())]


def test_synthetic_datamodule_batches_and_linked_sizes():
    dm = SyntheticTranslationDataModule(n_pairs=300, max_len=20)
    assert (dm.max_len, dm.pad_index, dm.bos_index, dm.eos_index, dm.unk_index) == \
        (20, PAD_INDEX, BOS_INDEX, EOS_INDEX, UNK_INDEX)
    src, tgt, copy = next(iter(dm.train_dataloader()))
    assert src.shape == tgt.shape == copy.shape == (64, 20)
    assert (tgt[:, 0] == BOS_INDEX).all() and not (src == BOS_INDEX).any()
    assert ((src == EOS_INDEX).sum(1) == 1).all() and ((tgt == EOS_INDEX).sum(1) == 1).all()
    assert {len(s[0]) for s in dm.splits.values()} == {30, 240}
    # The copy baseline is the source spelt in the target vocabulary: names and "." are shared.
    row = dm.decode_target(dm.splits["train"][2][0])
    assert row.endswith(".") and all(w in NAMES or w in (".", "<unk>") for w in row.split())


def _write_pairs(path: Path, n: int = 50, attribution: bool = False) -> None:
    lines = [f"I see thing{i % 7} number{i} .\tIch sehe ding{i % 7} nummer{i} ."
             + ("\tCC-BY 2.0 (France) Attribution: tatoeba.org #1 (x) & #2 (y)" if attribution else "")
             for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("attribution", [False, True])
def test_sentence_pairs_loader_reads_both_formats(tmp_path, attribution):
    _write_pairs(tmp_path / "pairs.tsv", attribution=attribution)
    dm = SentencePairsDataModule(root=str(tmp_path), min_freq=1)
    assert sum(len(s[0]) for s in dm.splits.values()) == 50
    assert len(dm.splits["test"][0]) == 5
    assert "sehe" in dm.tgt_vocab and "see" in dm.src_vocab and "tatoeba" not in dm.tgt_vocab
    reverse = SentencePairsDataModule(path=str(tmp_path / "pairs.tsv"), direction="reverse", min_freq=1)
    assert "sehe" in reverse.src_vocab and "see" in reverse.tgt_vocab
    assert dm.decode_source(dm.splits["test"][0][0]).startswith("i see thing")


def test_vocabularies_come_from_the_training_pairs_only(tmp_path):
    _write_pairs(tmp_path / "pairs.tsv")
    dm = SentencePairsDataModule(root=str(tmp_path), min_freq=1)
    numbers = {w for w in dm.src_vocab.itos if w.startswith("number")}
    assert len(numbers) == len(dm.splits["train"][0])  # one per training pair, none from validation or test
    for split in ("val", "test"):
        src, tgt, _ = dm.splits[split]
        assert (src == UNK_INDEX).any(1).all() and (tgt == UNK_INDEX).any(1).all()


@pytest.mark.parametrize("content, message", [
    (b"a b\tc d\nonly one column\ne f\tg h\n", "line 2"),
    (b"a b\tc d\n\n\tempty source\n", "line 3"),
    (b"  \n", "is empty"),
    ("caf\xe9\tKaffee\n".encode("latin-1"), "line 1: not UTF-8"),
])
def test_bad_pair_files_are_dlbench_errors(tmp_path, content, message):
    (tmp_path / "pairs.tsv").write_bytes(content)
    with pytest.raises(DlbenchError, match=message):
        SentencePairsDataModule(root=str(tmp_path))


def test_missing_or_tiny_pair_files_are_dlbench_errors(tmp_path):
    with pytest.raises(DlbenchError, match="--data.path"):
        SentencePairsDataModule()
    with pytest.raises(DlbenchError, match="does not exist"):
        SentencePairsDataModule(path=str(tmp_path / "nope.tsv"))
    _write_pairs(tmp_path / "pairs.tsv", n=4)
    with pytest.raises(DlbenchError, match="at least 10"):
        SentencePairsDataModule(root=str(tmp_path))
    with pytest.raises(ValueError, match="direction"):
        SentencePairsDataModule(root=str(tmp_path), direction="backward")


@pytest.mark.skipif(not TEST_DATA, reason="DLBENCH_TEST_DATA is not set")
def test_shared_english_german_pairs():
    dm = SentencePairsDataModule(root=str(Path(TEST_DATA) / "de-en"))
    sizes = {name: len(s[0]) for name, s in dm.splits.items()}
    assert sum(sizes.values()) == 16044 and sizes["test"] == round(16044 * 0.1)
    assert "the" in dm.src_vocab and "der" in dm.tgt_vocab and "der" not in dm.src_vocab
    assert dm.n_truncated < 0.01 * 16044


def test_command_without_a_pairs_file_is_a_short_error(capsys):
    from dlbench.cli import main

    assert main(["fit", "--model", "seq2seq", "--data", "sentence_pairs"]) == 2
    assert "--data.path FILE" in capsys.readouterr().err
