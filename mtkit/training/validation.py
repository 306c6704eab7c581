"""Scoring a model on a held-out split during training: loss, perplexity and BLEU.

The loss is the full-softmax cross-entropy whatever the training loss (so runs with
sampled softmax are compared on the same scale); BLEU comes from searching the split
as a user would translate it (sacrebleu on detokenized text).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtkit.config import DecodeConfig
from mtkit.corpus.batching import collate, sorted_batches
from mtkit.corpus.layout import CorpusSplit
from mtkit.corpus.tokenizer import TextCodec
from mtkit.metrics import Score, bleu, perplexity
from mtkit.model.checkpoint import load_model
from mtkit.model.loss import Criterion
from mtkit.model.seq2seq import Seq2Seq
from mtkit.runtime import autocast_context
from mtkit.search.hypothesis import output_cap
from mtkit.search.translator import Translator

log = logging.getLogger("mtkit")


@dataclass
class Scorer:
    """Everything scoring needs besides the model and the split."""

    codec: TextCodec
    decode: DecodeConfig
    criterion: Criterion
    batch_tokens: int
    device: torch.device
    precision: str
    max_len: int  # data.max_len: no training target was longer

    @property
    def output_cap(self) -> int:
        """Outputs longer than any training target are cut here
        (:func:`~mtkit.search.hypothesis.output_cap`)."""
        return output_cap(self.decode, self.max_len)

    @torch.no_grad()
    def loss(self, model: Seq2Seq, split: CorpusSplit) -> tuple[float, float]:
        """Mean token NLL (label smoothing aside) and perplexity of ``split``, in eval mode.

        Only the pairs within ``data.max_len`` on both sides count (:func:`within_limit`):
        teacher forcing runs the decoder over the whole reference, attending to the whole
        source, so one pair of 15,000 words a side would cost minutes at every validation.
        Training saw no longer pair, and the start of the run names the pairs left out.
        """
        was_training = model.training
        model.eval()
        nll, tokens = 0.0, 0
        pairs = within_limit(split, self.max_len)
        lengths = np.maximum(split.src_lengths, split.tgt_lengths)[pairs]
        for positions in sorted_batches(lengths.tolist(), self.batch_tokens):
            indices = pairs[positions]
            batch = collate([split.source(i) for i in indices], [split.target(i) for i in indices])
            batch = batch.to(self.device)
            with autocast_context(self.device, self.precision):
                features, targets = model(batch)
                result = self.criterion.eval_loss(features, targets, batch.tgt_mask, model.output)
            nll += float(result.nll_sum)
            tokens += result.n_tokens
        model.train(was_training)
        mean = nll / max(tokens, 1)
        return mean, perplexity(mean)

    def bleu(
        self,
        model: Seq2Seq,
        split: CorpusSplit,
        codec: TextCodec | None = None,
    ) -> Score:
        """Greedy BLEU of ``split`` (other search settings from ``decode``).

        ``codec`` overrides the scorer's, for a model loaded from a checkpoint.
        """
        was_training = model.training
        translator = Translator(
            model, codec or self.codec, self.decode, self.device, self.precision
        )
        hypotheses = translator.translate(  # greedy even where decode.sampling=true
            split.texts("src"), beam_size=1, max_len_cap=self.output_cap, sampling=False
        )
        model.train(was_training)
        return bleu(hypotheses, split.texts("tgt"))

    def validate(
        self, model: Seq2Seq, split: CorpusSplit, step: int, with_bleu: bool
    ) -> dict[str, float]:
        """Validation loss, perplexity and greedy BLEU (NaN unless ``with_bleu``), logged."""
        loss, ppl = self.loss(model, split)
        metrics = {"val_loss": loss, "val_ppl": ppl, "val_bleu": math.nan}
        message = f"step {step} validation: loss {loss:.4f} ppl {ppl:.2f}"
        if with_bleu:
            score = self.bleu(model, split)
            metrics["val_bleu"] = score.score
            message += f" BLEU {score.score:.2f} ({score.signature})"
        log.info(message)
        return metrics

    def test_best(self, best: Path, model: Seq2Seq, split: CorpusSplit) -> dict[str, Any]:
        """Greedy BLEU of ``best`` (best.pt), or of ``model`` if it was never saved, on the
        test ``split``; logged."""
        codec = self.codec
        if best.is_file():
            model, codec, _ = load_model(best)
        score = self.bleu(model.to(self.device), split, codec=codec)
        log.info("test (best.pt, greedy): BLEU %.2f (%s)", score.score, score.signature)
        return {"bleu_greedy": round(score.score, 2), "signature": score.signature}


def long_pairs(split: CorpusSplit, max_len: int, side: str = "src") -> list[int]:
    """1-based numbers of the pairs of ``split`` with more than ``max_len`` pieces on
    ``side`` (``src`` or ``tgt``; the lengths count EOS, the limit does not)."""
    lengths = split.src_lengths if side == "src" else split.tgt_lengths
    return [int(i) + 1 for i in np.flatnonzero(lengths - 1 > max_len)]


def within_limit(split: CorpusSplit, max_len: int) -> np.ndarray:
    """Indices (int64, ``(n,)``) of the pairs of ``split`` with at most ``max_len`` pieces on
    both sides: the pairs the validation loss is computed on."""
    longest = np.maximum(split.src_lengths, split.tgt_lengths).astype(np.int64)
    return np.flatnonzero(longest - 1 <= max_len).astype(np.int64)
