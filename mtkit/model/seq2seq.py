"""Seq2Seq: encoder + decoder + output projection, the step API that search uses, and
scheduled sampling.

The decoder returns features; the model owns the output projection and its *output
vocabulary* (the mapping between token ids and output columns); the loss decides how to
use the projection (full softmax, or sampled softmax over a few candidate rows of it).
Outside this module, inputs are token ids and losses see output columns: ``forward``
returns the targets as columns, ``step`` returns log-probs over columns, and
``output_ids`` maps a column back to its id.

Shapes: B batch, S source length, T target length, H feature size, M output columns.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtkit.config import ModelConfig
from mtkit.corpus.batching import Batch
from mtkit.corpus.tokenizer import EOS_ID, PAD_ID, UNK_ID, SubwordModel
from mtkit.errors import ConfigError
from mtkit.model.decoder import Decoder, DecoderState
from mtkit.model.encoder import Encoder, EncoderOutput

log = logging.getLogger(__name__)


class Seq2Seq(nn.Module):
    """Encoder, decoder and output layer.

    The output layer covers the model's *output vocabulary*: ``output_ids`` (M,) lists the
    target ids it can produce, in column order. By default these are the pieces seen on
    the target side of the training data (as OpenNMT-py and JoeyNMT build their target
    vocabularies); with a joint sentencepiece model that is about half of the pieces, and
    the output layer, the costliest part of the model, shrinks accordingly. Ids outside
    the output vocabulary are scored as UNK's column.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        src_vocab: int,
        tgt_vocab: int,
        output_ids: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(src_vocab, cfg)
        self.decoder = Decoder(tgt_vocab, cfg)
        ids = torch.arange(tgt_vocab) if output_ids is None else output_ids_for(output_ids)
        self.output_ids: torch.Tensor
        self.column_of: torch.Tensor
        self.register_buffer("output_ids", ids)  # (M,) column -> id; saved in checkpoints
        columns = torch.full((tgt_vocab,), int(torch.searchsorted(ids, UNK_ID)), dtype=torch.long)
        columns[ids] = torch.arange(len(ids))
        self.register_buffer("column_of", columns, persistent=False)  # (V,) id -> column
        self.output = nn.Linear(self.decoder.output_dim, len(ids))
        if cfg.init_range > 0:
            for parameter in self.parameters():
                nn.init.uniform_(parameter, -cfg.init_range, cfg.init_range)
        with torch.no_grad():
            self.encoder.embed.weight[PAD_ID].zero_()
            self.decoder.embed.weight[PAD_ID].zero_()
        if cfg.tie_embeddings:
            if len(ids) != tgt_vocab:
                raise ConfigError("model.tie_embeddings needs model.output_vocab=full")
            self.output.weight = self.decoder.embed.weight

    def column_counts(self, values: np.ndarray, n_sentences: int) -> np.ndarray:
        """How often each output column (M,) occurs in the training targets.

        ``values`` are the target ids of all training pairs; each pair also ends in one
        EOS. Ids outside the output vocabulary count as UNK's column. Used for the
        frequency-based proposals of the sampled softmax.
        """
        column_of = self.column_of.cpu().numpy()  # (V,)
        per_id = np.bincount(values, minlength=len(column_of))  # (V,)
        per_id[EOS_ID] += n_sentences
        counts = np.bincount(column_of, weights=per_id, minlength=len(self.output_ids))
        return counts.astype(np.int64)

    # -- the step API ------------------------------------------------------------------------

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """Encode (B, S) source ids; attention keys are projected here, once."""
        return self.decoder.prepare(self.encoder(src, src_lengths))

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        return self.decoder.init_state(enc)

    def step(
        self, prev_ids: torch.Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One step: previous ids (B,) -> (log-probs (B, M) in fp32, state, attention (B, S))."""
        features, state, attention = self.decoder.step(prev_ids, state, enc)
        log_probs = F.log_softmax(self.output(features), dim=-1, dtype=torch.float32)
        return log_probs, state, attention

    # -- training ----------------------------------------------------------------------------

    def forward(
        self, batch: Batch, teacher_forcing: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, T, H) for a batch, and its targets as output columns (B, T).

        The features are teacher-forced, or with ``teacher_forcing < 1`` scheduled-sampled
        (:meth:`_forward_sampled`); the loss applies :attr:`output` to them. Target ids
        outside the output vocabulary become UNK's column.
        """
        enc = self.encode(batch.src, batch.src_lengths)
        state = self.init_state(enc)
        if teacher_forcing < 1.0:
            features = self._forward_sampled(batch.tgt_in, enc, state, teacher_forcing)
        else:
            features = self.decoder(batch.tgt_in, enc, state)
        return features, self.column_of[batch.tgt_out]

    def _forward_sampled(
        self,
        tgt_in: torch.Tensor,
        enc: EncoderOutput,
        state: DecoderState,
        teacher_forcing: float,
    ) -> torch.Tensor:
        """Scheduled sampling (Bengio et al., 2015): features (B, T, H) for inputs (B, T).

        At each step after the first (BOS), each sentence is fed its gold token with
        probability ``teacher_forcing``, else the argmax of the model's own previous
        output (computed without gradient, mapped from column to id). Padding positions
        keep their gold (PAD) input.
        """
        features: list[torch.Tensor] = []
        prev = tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            if t > 0:
                gold = tgt_in[:, t]
                use_gold = torch.rand(gold.shape, device=gold.device) < teacher_forcing
                with torch.no_grad():
                    own = self.output_ids[self.output(features[-1]).argmax(dim=-1)]
                prev = torch.where(use_gold | (gold == PAD_ID), gold, own)
            step_features, state, _ = self.decoder.step(prev, state, enc)
            features.append(step_features)
        return torch.stack(features, dim=1)


def output_ids_for(ids: torch.Tensor) -> torch.Tensor:
    """Sorted unique ids, always including UNK and EOS."""
    extra = torch.tensor([UNK_ID, EOS_ID], dtype=torch.long)
    return torch.unique(torch.cat([ids.long().flatten(), extra]))


def build_model(
    cfg: ModelConfig, src: SubwordModel, tgt: SubwordModel, target_ids: np.ndarray | None = None
) -> Seq2Seq:
    """A model for the given vocabularies, with pretrained embeddings if asked.

    ``target_ids`` are the training targets' ids; with ``model.output_vocab=observed`` the
    output layer covers exactly the ids that occur in them.
    """
    output_ids = None
    if cfg.output_vocab == "observed" and target_ids is not None:
        output_ids = torch.from_numpy(np.unique(target_ids).astype(np.int64))
    model = Seq2Seq(cfg, src.vocab_size, tgt.vocab_size, output_ids)
    log.info("output vocabulary: %d of %d target pieces", len(model.output_ids), tgt.vocab_size)
    if cfg.pretrained_src_embeddings:
        load_pretrained(
            model.encoder.embed,
            cfg.pretrained_src_embeddings,
            src,
            "model.pretrained_src_embeddings",
        )
    if cfg.pretrained_tgt_embeddings:
        load_pretrained(
            model.decoder.embed,
            cfg.pretrained_tgt_embeddings,
            tgt,
            "model.pretrained_tgt_embeddings",
        )
    return model


def load_pretrained(embedding: nn.Embedding, path: str, vocab: SubwordModel, key: str) -> int:
    """Copy vectors from a word2vec text file into the rows of the pieces it covers.

    The file may start with a ``count dim`` header line; each other line is a piece and
    its vectors. Returns the number of covered pieces (also logged with the coverage).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{key}={path!r}: no such file")
    dim = embedding.embedding_dim
    covered = 0
    with torch.no_grad(), file.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip().split(" ")
            if number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                continue
            if len(fields) != dim + 1:
                raise ConfigError(
                    f"{file}:{number}: expected a piece and {dim} numbers "
                    f"(model.embed_dim), found {len(fields) - 1}"
                )
            index = vocab.piece_to_id(fields[0])
            if index <= 3 and vocab.id_to_piece(index) != fields[0]:
                continue  # not in the vocabulary (mapped to unk)
            try:
                vector = torch.tensor([float(x) for x in fields[1:]])
            except ValueError:
                raise ConfigError(f"{file}:{number}: expected numbers after the piece") from None
            if not bool(torch.isfinite(vector).all()):
                raise ConfigError(f"{file}:{number}: the vector holds NaN or inf ({key})")
            embedding.weight[index] = vector
            covered += 1
    log.info(
        "%s: %d of %d pieces covered (%.1f%%)",
        key,
        covered,
        embedding.num_embeddings,
        100.0 * covered / embedding.num_embeddings,
    )
    return covered
