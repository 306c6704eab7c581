"""The target decoder: GRU/LSTM layers with attention, one step at a time or a whole target.

Three decoder structures, chosen by ``model.attention`` and ``model.input_feed``:

- ``none``: the Sutskever et al. (2014) decoder, conditioned only on the encoder's final
  state (through the bridge); features are the (dropped-out) top RNN outputs.
- ``bahdanau``: Bahdanau et al. (2015). The previous state queries the source, and the
  context enters the RNN input next to the embedding; features are
  ``tanh(W [state; context])``.
- ``luong_*``: Luong et al. (2015). The RNN steps first, its output queries the source,
  and the attentional vector ``tanh(W [context; output])`` is the feature. With input
  feeding it is also fed to the next step's RNN input.

:meth:`Decoder.step` is one step from the previous ids, returning the features (the input
of the output projection, which :class:`~mtkit.model.seq2seq.Seq2Seq` owns). The teacher-forced
:meth:`Decoder.forward` computes the same as a loop of steps, faster: when nothing feeds
back (``none``, or Luong without input feeding) the target goes through the RNN in one
call; otherwise it loops over the RNN/attention part of a step (``_advance``), with what
does not depend on the previous step (the embedding half of the first layer's input
projection, the final feature layer for ``bahdanau``) computed for all steps in single
batched calls. The cell equations live in :mod:`mtkit.model.cells`.

Shapes: B batch, S source length, T target length, E embedding, H hidden, D encoder
output size, G first-layer gates, L decoder layers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from mtkit.config import ModelConfig
from mtkit.corpus.tokenizer import PAD_ID
from mtkit.model.attention import Attention
from mtkit.model.cells import make_rnn
from mtkit.model.dropout import Dropout
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


class Decoder(nn.Module):
    """Target embedding, RNN stack, attention and feature layer (the projection is the model's)."""

    def __init__(self, vocab_size: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.attention
        self.lstm = cfg.cell == "lstm"
        self.hidden_size = cfg.decoder_hidden
        self.layers = cfg.num_decoder_layers
        self.embed_dim = cfg.embed_dim
        enc_dim = cfg.encoder_output_dim
        self.feeds_context = self.kind == "bahdanau"
        self.feeds_feature = self.kind.startswith("luong") and cfg.input_feed
        extra = enc_dim if self.feeds_context else (self.hidden_size if self.feeds_feature else 0)
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
        self.dropout = Dropout(cfg.dropout)
        self.rnn = make_rnn(
            cfg.cell, cfg.embed_dim + extra, self.hidden_size, self.layers, cfg.dropout
        )
        self.bridge = Bridge(
            cfg.bridge, enc_dim, self.hidden_size, cfg.layers, self.layers, self.lstm
        )
        self.attention = (
            None if self.kind == "none" else Attention(self.kind, self.hidden_size, enc_dim)
        )
        self.feature_layer = (
            None if self.kind == "none" else nn.Linear(enc_dim + self.hidden_size, self.hidden_size)
        )
        self.output_dim = self.hidden_size
        self.gate_table: torch.Tensor | None  # see tabulate_embedding_gates
        self.register_buffer("gate_table", None, persistent=False)

    @property
    def sequential(self) -> bool:
        """True when each step needs the previous step's attention (no one-call path)."""
        return self.feeds_context or self.feeds_feature

    def prepare(self, enc: EncoderOutput) -> EncoderOutput:
        """Project the attention keys once per batch."""
        if self.attention is None:
            return enc
        return replace(enc, keys=self.attention.prepare(enc.states))

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        hidden, cell = self.bridge(enc)
        feed = (
            enc.states.new_zeros(enc.states.size(0), self.hidden_size)
            if self.feeds_feature
            else None
        )
        return DecoderState(hidden=hidden, cell=cell, feed=feed)

    # -- one step ---------------------------------------------------------------------------

    def step(
        self, prev_ids: torch.Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One step: previous ids (B,) -> ``(features (B, H), state, attention (B, S))``.

        The features are the input of the output projection, whatever the structure:
        ``drop(s^top)`` without attention, ``drop(tanh(W_f [s^top; c]))`` for
        ``bahdanau``, the attentional vector for ``luong_*``. The attention weights are
        None without attention.
        """
        output, state, context, attention = self._advance(
            self._embedding_gates(prev_ids), state, enc
        )
        return self._features(output, context), state, attention

    def _embedding_gates(self, ids: torch.Tensor) -> torch.Tensor:
        """The embedding half of the first layer's input gates: (B, [T]) -> (B, [T], G).

        ``W_ih[:, :E] emb(y) + b_ih``, or its row ``y`` of the table that
        :meth:`tabulate_embedding_gates` made for an inference copy.
        """
        if self.gate_table is not None and not self.training:
            return F.embedding(ids, self.gate_table)
        return self.rnn.input_gates(self.dropout(self.embed(ids)))

    def tabulate_embedding_gates(self) -> None:
        """Replace the embedding half of the first layer's input gates by a lookup table.

        Those gates depend only on the previous token, so for a model that no longer
        trains they are one table (V, G), computed here in fp32: a step then looks its B
        rows up instead of multiplying (B, E) by (E, G), which for a few rows is a
        product's fixed cost, not its arithmetic (mtkit.search.int8 uses it). Only in eval
        mode; training ignores the table, which is not saved with the model.
        """
        with torch.no_grad():
            table = self.rnn.input_gates(self.embed.weight.detach().float())  # (V, G)
        self.gate_table = table.contiguous()

    def _advance(
        self, gates_emb: torch.Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None, torch.Tensor | None]:
        """The RNN (and for Luong, attention) part of a step, from embedding gates (B, G).

        Returns ``(output, state, context, attention)``: the Luong attentional vector or
        else the top RNN output (B, H); for ``bahdanau`` the context (B, D) that
        :meth:`_features` combines with it (else None); the attention weights (B, S).
        """
        context = attention = None
        if self.feeds_context:
            assert self.attention is not None and enc.keys is not None
            context, attention = self.attention(state.hidden[-1], enc.keys, enc.states, enc.mask)
            gates_emb = gates_emb + self.rnn.input_gates(context, self.embed_dim, bias=False)
        elif self.feeds_feature:
            assert state.feed is not None
            gates_emb = gates_emb + self.rnn.input_gates(state.feed, self.embed_dim, bias=False)
        hidden, cell = self.rnn.step(gates_emb, state.hidden, state.cell)
        output = hidden[-1]
        feed = None
        if self.kind.startswith("luong"):
            assert self.attention is not None and self.feature_layer is not None
            assert enc.keys is not None
            step_context, attention = self.attention(output, enc.keys, enc.states, enc.mask)
            output = self.dropout(
                torch.tanh(self.feature_layer(torch.cat([step_context, output], -1)))
            )
            feed = output if self.feeds_feature else None
        return output, DecoderState(hidden, cell, feed), context, attention

    def _features(self, output: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Features from :meth:`_advance` outputs, for one step (B, H) or many (B, T, H)."""
        if not self.feeds_context:
            return output if self.kind != "none" else self.dropout(output)
        assert context is not None and self.feature_layer is not None
        return self.dropout(torch.tanh(self.feature_layer(torch.cat([output, context], -1))))

    # -- whole target ------------------------------------------------------------------------

    def forward(
        self, tgt_in: torch.Tensor, enc: EncoderOutput, state: DecoderState
    ) -> torch.Tensor:
        """Teacher-forced features (B, T, H) for decoder inputs (B, T) = BOS + target pieces.

        Equal to a loop of :meth:`step` over ``tgt_in``, computed faster: in one RNN call
        when nothing feeds back, else with the step-independent parts batched over T.
        """
        if not self.sequential:
            return self._forward_parallel(tgt_in, enc, state)
        # unbind, not gates[:, t]: its backward writes all steps' gradients in one go.
        gates = self._embedding_gates(tgt_in).unbind(1)  # T x (B, G)
        outputs, contexts = [], []
        for step_gates in gates:
            output, state, context, _ = self._advance(step_gates, state, enc)
            outputs.append(output)
            contexts.append(context)
        stacked = torch.stack(outputs, dim=1)  # (B, T, H)
        if self.feeds_context:
            return self._features(stacked, torch.stack(contexts, dim=1))  # type: ignore[arg-type]
        return stacked

    def _forward_parallel(
        self, tgt_in: torch.Tensor, enc: EncoderOutput, state: DecoderState
    ) -> torch.Tensor:
        """All steps in one RNN call (nothing feeds back from attention)."""
        embedded = self.dropout(self.embed(tgt_in))  # (B, T, E)
        initial = state.hidden if state.cell is None else (state.hidden, state.cell)
        outputs, _ = self.rnn(embedded, initial)  # (B, T, H)
        if self.attention is None:
            return self.dropout(outputs)
        assert enc.keys is not None and self.feature_layer is not None
        context, _ = self.attention(outputs, enc.keys, enc.states, enc.mask)  # (B, T, D)
        return self.dropout(torch.tanh(self.feature_layer(torch.cat([context, outputs], -1))))
