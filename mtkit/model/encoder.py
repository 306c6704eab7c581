"""The source encoder: embeddings -> (bidirectional, multi-layer) GRU/LSTM over packed sequences.

Packing means the RNN never reads a padding position, so a sentence encodes to the same
states alone or in a padded batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mtkit.config import ModelConfig
from mtkit.corpus.tokenizer import PAD_ID
from mtkit.model.dropout import Dropout
from mtkit.model.rnn import make_rnn


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

    def cat(self, other: EncoderOutput) -> EncoderOutput:
        """These rows, then ``other``'s (B1 + B2 rows), both padded to a common length.

        The common length is that of the longest real source among the rows, so columns
        that are padding in every row (left by long sentences that were selected away)
        are dropped. Padding is masked, so attention gives it weight 0: a row attends
        alike in either batch. Greedy search in the service appends new sentences to
        the running batch this way.
        """
        length = int(torch.cat([self.mask.sum(1), other.mask.sum(1)]).max())
        return EncoderOutput(
            states=_pad_cat(self.states, other.states, length),
            mask=_pad_cat(self.mask, other.mask, length),
            final_hidden=torch.cat([self.final_hidden, other.final_hidden], 1),
            final_cell=None
            if self.final_cell is None or other.final_cell is None
            else torch.cat([self.final_cell, other.final_cell], 1),
            keys=None
            if self.keys is None or other.keys is None
            else _pad_cat(self.keys, other.keys, length),
        )


def _pad_cat(first: torch.Tensor, second: torch.Tensor, length: int) -> torch.Tensor:
    """(B1, S1, ...) and (B2, S2, ...) -> (B1 + B2, length, ...), zero (False) padded."""
    shape = (first.size(0) + second.size(0), length, *first.shape[2:])
    out = first.new_zeros(shape)
    kept, joined = first[:, :length], second[:, :length]
    out[: first.size(0), : kept.size(1)] = kept
    out[first.size(0) :, : joined.size(1)] = joined
    return out


class Encoder(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
        self.dropout = Dropout(cfg.dropout)
        self.rnn = make_rnn(
            cfg.cell,
            cfg.embed_dim,
            cfg.encoder_hidden,
            cfg.layers,
            cfg.dropout,
            cfg.bidirectional,
            cfg.peepholes,
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
