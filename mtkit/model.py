"""Seq2Seq: encoder + decoder + output projection, and the step API that search uses.

The decoder returns features; the model owns the output projection; the loss decides how
to use it (full softmax, or sampled softmax over a few candidate rows of the projection).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mtkit.batching import Batch
from mtkit.config import ModelConfig
from mtkit.decoder import Decoder, DecoderState
from mtkit.encoder import Encoder, EncoderOutput
from mtkit.errors import ConfigError
from mtkit.tokenizer import PAD_ID, SubwordModel

log = logging.getLogger(__name__)


class Seq2Seq(nn.Module):
    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(src_vocab, cfg)
        self.decoder = Decoder(tgt_vocab, cfg)
        self.output = nn.Linear(self.decoder.output_dim, tgt_vocab)
        if cfg.init_range > 0:
            for parameter in self.parameters():
                nn.init.uniform_(parameter, -cfg.init_range, cfg.init_range)
        with torch.no_grad():
            self.encoder.embed.weight[PAD_ID].zero_()
            self.decoder.embed.weight[PAD_ID].zero_()
        if cfg.tie_embeddings:
            self.output.weight = self.decoder.embed.weight

    # -- the step API ------------------------------------------------------------------------

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """Encode (B, S) source ids; attention keys are projected here, once."""
        return self.decoder.prepare(self.encoder(src, src_lengths))

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        return self.decoder.init_state(enc)

    def step(
        self, prev_ids: torch.Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One step: previous ids (B,) -> (log-probs (B, V) in fp32, state, attention (B, S))."""
        output, state, context, attention = self.decoder.step(
            self.decoder.embedding_gates(prev_ids), state, enc
        )
        features = self.decoder.features(output, context)
        log_probs = F.log_softmax(self.output(features).float(), dim=-1)
        return log_probs, state, attention

    # -- training ----------------------------------------------------------------------------

    def forward(self, batch: Batch, teacher_forcing: float = 1.0) -> torch.Tensor:
        """Teacher-forced (or scheduled-sampling) features (B, T, H) for a batch."""
        enc = self.encode(batch.src, batch.src_lengths)
        state = self.init_state(enc)
        return self.decoder(batch.tgt_in, enc, state, teacher_forcing, self.predict)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.output(features)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Most likely next ids for features (B, H)."""
        return self.output(features).argmax(dim=-1)


def build_model(cfg: ModelConfig, src: SubwordModel, tgt: SubwordModel) -> Seq2Seq:
    """A model for the given sentencepiece vocabularies, with pretrained embeddings if asked."""
    model = Seq2Seq(cfg, src.vocab_size, tgt.vocab_size)
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
                embedding.weight[index] = torch.tensor([float(x) for x in fields[1:]])
            except ValueError:
                raise ConfigError(f"{file}:{number}: expected numbers after the piece") from None
            covered += 1
    log.info(
        "%s: %d of %d pieces covered (%.1f%%)",
        key,
        covered,
        embedding.num_embeddings,
        100.0 * covered / embedding.num_embeddings,
    )
    return covered
