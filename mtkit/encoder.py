"""The source encoder: embeddings -> (bidirectional, multi-layer) GRU/LSTM over packed sequences.

Packing means the RNN never reads a padding position, so a sentence encodes to the same
states alone or in a padded batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mtkit.cells import make_rnn
from mtkit.config import ModelConfig
from mtkit.dropout import Dropout
from mtkit.tokenizer import PAD_ID


@dataclass
class EncoderOutput:
    """What the decoder attends to. B batch, S source length, D encoder output size."""

    states: torch.Tensor  # (B, S, D) top-layer outputs, zero on padding
    mask: torch.Tensor  # (B, S) True on real tokens
    final_hidden: torch.Tensor  # (L, B, D) last state of every layer, directions concatenated
    final_cell: torch.Tensor | None  # (L, B, D) LSTM only
    keys: torch.Tensor | None = None  # (B, S, Q) attention keys, projected once

    def select(self, index: torch.Tensor) -> EncoderOutput:
        """Rows picked (or repeated, for beams) by ``index`` along the batch."""
        return EncoderOutput(
            states=self.states.index_select(0, index),
            mask=self.mask.index_select(0, index),
            final_hidden=self.final_hidden.index_select(1, index),
            final_cell=None if self.final_cell is None else self.final_cell.index_select(1, index),
            keys=None if self.keys is None else self.keys.index_select(0, index),
        )


class Encoder(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
        self.dropout = Dropout(cfg.dropout)
        self.rnn = make_rnn(
            cfg.cell, cfg.embed_dim, cfg.encoder_hidden, cfg.layers, cfg.dropout, cfg.bidirectional
        )
        self.layers = cfg.layers
        self.directions = 2 if cfg.bidirectional else 1
        self.output_dim = cfg.encoder_output_dim

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """Encode (B, S) ids with lengths (B,) into an :class:`EncoderOutput`."""
        mask = src != PAD_ID
        embedded = self.dropout(self.embed(src))  # (B, S, E)
        packed = pack_padded_sequence(
            embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, final = self.rnn(packed)
        states, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.size(1))
        if isinstance(final, tuple):
            hidden, cell = self._merge_directions(final[0]), self._merge_directions(final[1])
        else:
            hidden, cell = self._merge_directions(final), None
        return EncoderOutput(
            states=self.dropout(states), mask=mask, final_hidden=hidden, final_cell=cell
        )

    def _merge_directions(self, final: torch.Tensor) -> torch.Tensor:
        """(L * dirs, B, H) -> (L, B, dirs * H)."""
        _, batch, hidden = final.shape
        final = final.view(self.layers, self.directions, batch, hidden)
        return final.transpose(1, 2).reshape(self.layers, batch, self.directions * hidden)
