"""The decoder's recurrent state: what it carries from step to step, and where it starts.

Shapes: B batch, H decoder hidden size, L decoder layers, D encoder output size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtkit.model.encoder import EncoderOutput


@dataclass
class DecoderState:
    """Recurrent state carried between steps; :meth:`select` reorders it for beams."""

    hidden: torch.Tensor  # (L, B, H)
    cell: torch.Tensor | None = None  # (L, B, H), LSTM only
    feed: torch.Tensor | None = None  # (B, H) previous attentional vector (input feeding)

    def select(self, index: torch.Tensor) -> DecoderState:
        """Rows picked (or repeated) by ``index``, for GRU and LSTM alike."""
        return DecoderState(
            hidden=self.hidden.index_select(1, index),
            cell=None if self.cell is None else self.cell.index_select(1, index),
            feed=None if self.feed is None else self.feed.index_select(0, index),
        )

    def cat(self, other: DecoderState) -> DecoderState:
        """These rows, then ``other``'s: the counterpart of :meth:`select` for joining batches."""
        return DecoderState(
            hidden=torch.cat([self.hidden, other.hidden], 1),
            cell=None
            if self.cell is None or other.cell is None
            else torch.cat([self.cell, other.cell], 1),
            feed=None
            if self.feed is None or other.feed is None
            else torch.cat([self.feed, other.feed]),
        )


class Bridge(nn.Module):
    """Initial decoder state from the encoder's final states (or zeros).

    Decoder layer j starts from encoder layer j, counted from the top when the encoder is
    deeper, and from the top encoder layer when the decoder is deeper.
    """

    def __init__(
        self, kind: str, enc_dim: int, hidden: int, enc_layers: int, dec_layers: int, lstm: bool
    ) -> None:
        super().__init__()
        self.kind = kind
        self.hidden_size = hidden
        self.dec_layers = dec_layers
        offset = max(0, enc_layers - dec_layers)
        self.sources = [min(offset + j, enc_layers - 1) for j in range(dec_layers)]
        self.lstm = lstm
        if kind == "learned":
            self.to_hidden = nn.ModuleList(nn.Linear(enc_dim, hidden) for _ in range(dec_layers))
            self.to_cell = (
                nn.ModuleList(nn.Linear(enc_dim, hidden) for _ in range(dec_layers))
                if lstm
                else None
            )

    def forward(self, enc: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(L, B, H) hidden state, and for an LSTM the (L, B, H) cell state."""
        batch = enc.states.size(0)
        if self.kind == "zero":
            zeros = enc.states.new_zeros(self.dec_layers, batch, self.hidden_size)
            return zeros, (zeros.clone() if self.lstm else None)
        hidden = torch.stack(
            [
                torch.tanh(layer(enc.final_hidden[src]))
                for layer, src in zip(self.to_hidden, self.sources, strict=True)
            ]
        )
        cell = None
        if self.to_cell is not None:
            assert enc.final_cell is not None
            cell = torch.stack(
                [
                    layer(enc.final_cell[src])
                    for layer, src in zip(self.to_cell, self.sources, strict=True)
                ]
            )
        return hidden, cell
