"""A Transformer encoder-decoder that translates token sequences.

The encoder reads the source (token plus learned position embeddings, self-attention that ignores padding); the
decoder reads the target so far under a causal mask (position t sees positions <= t only) and attends to the
encoder's output. Training uses teacher forcing (the decoder reads the true previous words); validation, test and
predict decode greedily, one word at a time from ``<bos>`` until ``<eos>`` or ``max_len``.

Metrics: ``val/acc`` is teacher-forced token accuracy; ``val/bleu`` and ``test/bleu`` are corpus BLEU-4
(torchmetrics) of the greedy translations against the references, over lower-cased word tokens. Token indices stand
for the words one to one, except that a word missing from the target vocabulary (``<unk>`` in a reference) never
counts as matched. The baseline ``test/bleu_copy`` is the BLEU of copying the source sentence as its translation:
what a model gets for words shared by both languages (names, numbers, punctuation) without learning to translate.

The source articles' translation example uses 256-dimensional embeddings, 4 heads, 512 feed-forward units, 2 layers
on each side and sequences of 50. Their 4 heads and 2 layers a side are the defaults here; the width is the 64/128 of
their encoder example, so that the default run takes a minute or two on a CPU (--model.d_model 256
--model.dim_feedforward 512 restores theirs). Their sketch also lacks the decoder's cross-attention, which this one
has.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import Accuracy
from torchmetrics.text import BLEUScore

from dlbench import LossMean

SHOWN = 6  # translations written to TensorBoard per validation epoch


class Seq2SeqTransformer(L.LightningModule):
    def __init__(self, src_vocab_size: int = 1000, tgt_vocab_size: int = 1000, max_len: int = 24, pad_index: int = 0,
                 bos_index: int = 2, eos_index: int = 3, unk_index: int = 1, d_model: int = 64, nhead: int = 4,
                 num_encoder_layers: int = 2, num_decoder_layers: int = 2, dim_feedforward: int = 128,
                 dropout: float = 0.1, label_smoothing: float = 0.1, lr: float = 2e-3, weight_decay: float = 0.01,
                 warmup_fraction: float = 0.05) -> None:
        """
        Args:
            src_vocab_size: Entries in the source vocabulary, special tokens included (linked from the data).
            tgt_vocab_size: Entries in the target vocabulary, special tokens included (linked from the data).
            max_len: Longest sequence, <bos> and <eos> included; greedy decoding stops there (linked from the data).
            pad_index: Index of padding, ignored by attention and the loss (linked from the data).
            bos_index: Index of <bos>, the decoder's first input (linked from the data).
            eos_index: Index of <eos>, which ends a translation (linked from the data).
            unk_index: Index of <unk>; such a word in a reference never counts as matched in BLEU (linked from the
                data).
            d_model: Width of the embeddings and of every layer.
            nhead: Attention heads per layer; must divide d_model.
            num_encoder_layers: Encoder layers.
            num_decoder_layers: Decoder layers.
            dim_feedforward: Units in the hidden layer of each feed-forward block.
            dropout: Dropout in attention, feed-forward blocks and on the embeddings.
            label_smoothing: Probability mass spread over all words in the training loss.
            lr: Peak AdamW learning rate.
            weight_decay: AdamW weight decay.
            warmup_fraction: Fraction of the training steps over which the learning rate rises to lr, before it
                decays to near zero (one-cycle schedule, cosine-shaped).
        """
        super().__init__()
        for name, value in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size),
                            ("d_model", d_model), ("nhead", nhead), ("num_encoder_layers", num_encoder_layers),
                            ("num_decoder_layers", num_decoder_layers), ("dim_feedforward", dim_feedforward)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3, got {max_len}")
        if d_model % nhead:
            raise ValueError(f"nhead must divide d_model, got nhead={nhead} and d_model={d_model}")
        for name, value in (("pad_index", pad_index), ("bos_index", bos_index), ("eos_index", eos_index),
                            ("unk_index", unk_index)):
            if not 0 <= value < min(src_vocab_size, tgt_vocab_size):
                raise ValueError(f"{name} must be a valid index of both vocabularies, got {value}")
        if len({pad_index, bos_index, eos_index}) < 3:
            raise ValueError(f"pad_index, bos_index and eos_index must differ, got {pad_index}, {bos_index}, "
                             f"{eos_index}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 < warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in (0, 1), got {warmup_fraction}")
        self.save_hyperparameters()
        self.src_embedding = nn.Embedding(src_vocab_size, d_model, padding_idx=pad_index)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, d_model, padding_idx=pad_index)
        self.src_position = nn.Embedding(max_len, d_model)
        self.tgt_position = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        # Pre-norm layers train more stably at this size without a long warm-up; nested tensors need post-norm.
        enc_layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
        dec_layer = nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc_layer, num_encoder_layers, norm=nn.LayerNorm(d_model),
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec_layer, num_decoder_layers, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, tgt_vocab_size)
        for emb in (self.src_embedding, self.tgt_embedding, self.src_position, self.tgt_position):
            # Words and positions on the same small scale (GPT-2's init), so neither drowns the other out.
            nn.init.normal_(emb.weight, std=0.02)
        for emb in (self.src_embedding, self.tgt_embedding):
            emb.weight.data[pad_index].zero_()
        src = (torch.arange(2 * max_len) % (src_vocab_size - 4) + 4).view(2, max_len)
        tgt = torch.full((2, max_len - 1), bos_index)
        self.example_input_array = (src, tgt)

        self.train_loss, self.val_loss, self.test_loss = LossMean(), LossMean(), LossMean()
        self.val_acc, self.test_acc = (Accuracy(task="multiclass", num_classes=tgt_vocab_size,
                                                ignore_index=pad_index) for _ in range(2))
        self.val_bleu, self.test_bleu, self.val_bleu_copy, self.test_bleu_copy = (BLEUScore(n_gram=4)
                                                                                  for _ in range(4))
        self._shown: tuple[torch.Tensor, ...] | None = None

    def _embed(self, tokens: torch.Tensor, embedding: nn.Embedding, position: nn.Embedding) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.dropout(embedding(tokens) + position(positions))

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, S)`` source indices -> encoder output ``(N, S, d_model)`` and the source padding mask."""
        src_pad = src == self.hparams.pad_index
        memory = self.encoder(self._embed(src, self.src_embedding, self.src_position), src_key_padding_mask=src_pad)
        return memory, src_pad

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_pad: torch.Tensor,
               last_only: bool = False) -> torch.Tensor:
        """``(N, T)`` target indices so far -> ``(N, T, tgt_vocab_size)`` logits of the next word at each position
        (``(N, tgt_vocab_size)`` at the last position only, with ``last_only``)."""
        length = tgt_in.shape[1]
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=tgt_in.device), diagonal=1)
        h = self.decoder(self._embed(tgt_in, self.tgt_embedding, self.tgt_position), memory, tgt_mask=causal,
                         tgt_key_padding_mask=tgt_in == self.hparams.pad_index, memory_key_padding_mask=src_pad,
                         tgt_is_causal=True)
        return self.head(h[:, -1] if last_only else h)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits: ``tgt_in`` is the target shifted right (starting with <bos>)."""
        return self.decode(tgt_in, *self.encode(src))

    @torch.no_grad()
    def greedy(self, src: torch.Tensor) -> torch.Tensor:
        """Greedy translations ``(N, max_len - 1)``: words, then <eos>, then padding (the layout of ``tgt[:, 1:]``)."""
        hp = self.hparams
        memory, src_pad = self.encode(src)
        out = torch.full((len(src), 1), hp.bos_index, dtype=torch.long, device=src.device)
        done = torch.zeros(len(src), dtype=torch.bool, device=src.device)
        for _ in range(hp.max_len - 1):
            # No key/value cache: the decoder reruns over the prefix, cheap at these lengths.
            step = self.decode(out, memory, src_pad, last_only=True).argmax(-1)
            step = step.masked_fill(done, hp.pad_index)
            out = torch.cat([out, step[:, None]], dim=1)
            done |= step == hp.eos_index
            if bool(done.all()):
                break
        return nn.functional.pad(out[:, 1:], (0, hp.max_len - out.shape[1]), value=hp.pad_index)

    def _words(self, ids: torch.Tensor, reference: bool = False) -> list[str]:
        """Token rows as space-separated strings for BLEU, up to <eos>. In references, <unk> becomes a word no
        output can match: a word the vocabulary lacks cannot have been translated right."""
        hp, out = self.hparams, []
        for row in ids.tolist():
            words = []
            for i in row:
                if i == hp.eos_index:
                    break
                if i not in (hp.pad_index, hp.bos_index):
                    words.append("<unk-ref>" if reference and i == hp.unk_index else str(i))
            out.append(" ".join(words))
        return out

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        src, tgt = batch[0], batch[1]
        tgt_in, labels = tgt[:, :-1], tgt[:, 1:]
        logits = self(src, tgt_in)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=self.hparams.pad_index,
                                           label_smoothing=self.hparams.label_smoothing)
        mean_loss = getattr(self, f"{stage}_loss")
        # update(): a call would also compute a per-batch value
        mean_loss.update(loss, weight=(labels != self.hparams.pad_index).sum())
        if stage != "train":  # the training loss is logged once an epoch, from on_train_epoch_end
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        if stage == "train":
            return loss
        acc = getattr(self, f"{stage}_acc")
        acc(logits.argmax(-1), labels)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True)
        hyp = self.greedy(src)
        refs = [[r] for r in self._words(labels, reference=True)]
        bleu = getattr(self, f"{stage}_bleu")
        bleu(self._words(hyp), refs)
        self.log(f"{stage}/bleu", bleu, on_step=False, on_epoch=True, prog_bar=True)
        if len(batch) > 2:  # the source in target-vocabulary indices: the copy baseline
            copy = getattr(self, f"{stage}_bleu_copy")
            copy(self._words(batch[2]), refs)
            self.log(f"{stage}/bleu_copy", copy, on_step=False, on_epoch=True)
        if stage == "val" and self._shown is None and self._logs_text():
            self._shown = (src[:SHOWN].cpu(), labels[:SHOWN].cpu(), hyp[:SHOWN].cpu())
        return loss

    def on_train_epoch_end(self) -> None:
        # The training loss is logged here, once an epoch, rather than from every training_step: the same epoch mean
        # at the same step, without Lightning's per-call logging cost on every batch.
        if self.train_loss.update_called:
            self.log("train/loss", self.train_loss, prog_bar=True)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """``{"tokens": (N, max_len - 1)}``: greedy translations as target indices (words, <eos>, then padding), the
        encoder run once a batch; the data's predictor turns them into text (see
        :mod:`dlbench_plugins.seq2seq.predict`)."""
        return {"tokens": self.greedy(batch[0])}

    def _logs_text(self) -> bool:
        return isinstance(self.logger, TensorBoardLogger) and self.trainer.is_global_zero \
            and not self.trainer.sanity_checking

    def on_validation_epoch_end(self) -> None:
        if self._shown is None:
            return
        src, ref, hyp = self._shown
        self._shown = None
        data = self.trainer.datamodule
        decode_src = getattr(data, "decode_source", lambda ids: self._words(ids[None])[0])
        decode_tgt = getattr(data, "decode_target", lambda ids: self._words(ids[None])[0])
        rows = ["| source | reference | model |", "|---|---|---|"]
        for s, r, h in zip(src, ref, hyp, strict=True):
            cells = (decode_src(s), decode_tgt(r), decode_tgt(h))
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        self.logger.experiment.add_text("val/translations", "\n".join(rows), self.global_step)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            # Norms, biases and embeddings are not decayed (the usual Transformer recipe).
            (no_decay if p.ndim < 2 or "embedding" in name or "position" in name else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):  # neither max_epochs nor max_steps: keep lr constant
            return opt
        # Warm-up to lr, then decay: Transformers train poorly at full lr from the first step.
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=int(total) + 1,
                                                    pct_start=self.hparams.warmup_fraction, anneal_strategy="cos",
                                                    cycle_momentum=False)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
