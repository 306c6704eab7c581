"""The target decoder: GRU/LSTM layers with attention, one step at a time or a whole target.

Three decoder structures, chosen by ``model.attention`` and ``model.input_feed``:

- ``none``: the Sutskever et al. (2014) decoder, conditioned only on the encoder's final
  state (through the bridge); features are the top RNN outputs.
- ``bahdanau``: Bahdanau et al. (2015). The previous state queries the source, and the
  context enters the RNN input next to the embedding; features are
  ``tanh(W [state; context])``.
- ``luong_*``: Luong et al. (2015). The RNN steps first, its output queries the source,
  and the attentional vector ``tanh(W [context; output])`` is the feature. With input
  feeding it is also fed to the next step's RNN input.

When nothing feeds back (``none``, or Luong without input feeding) a teacher-forced
target goes through the RNN in one call; otherwise :meth:`Decoder.forward` loops over
:meth:`Decoder.step`, with everything that does not depend on the previous step (the
embedding half of the first layer's input projection, the final feature layer for
``bahdanau``) computed for all steps in single batched calls.

Shapes: B batch, S source length, T target length, E embedding, H hidden, D encoder
output size, L decoder layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from mtkit.attention import Attention
from mtkit.config import ModelConfig
from mtkit.dropout import Dropout, dropout
from mtkit.encoder import EncoderOutput, make_rnn
from mtkit.tokenizer import PAD_ID


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


def gru_update(
    gates_x: torch.Tensor, hidden: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor
) -> torch.Tensor:
    """One GRU step from precomputed input gates (same equations as ``torch.nn.GRU``)."""
    gates_h = F.linear(hidden, w_hh, b_hh)
    size = hidden.size(-1)
    reset_update = torch.sigmoid(gates_x[:, : 2 * size] + gates_h[:, : 2 * size])
    reset, update = reset_update.chunk(2, dim=1)
    candidate = torch.tanh(gates_x[:, 2 * size :] + reset * gates_h[:, 2 * size :])
    return candidate + update * (hidden - candidate)


def lstm_update(
    gates_x: torch.Tensor,
    hidden: torch.Tensor,
    cell: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from precomputed input gates (same equations as ``torch.nn.LSTM``)."""
    gates = gates_x + F.linear(hidden, w_hh, b_hh)
    in_gate, forget_gate, candidate, out_gate = gates.chunk(4, dim=1)
    new_cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(in_gate) * torch.tanh(candidate)
    new_hidden = torch.sigmoid(out_gate) * torch.tanh(new_cell)
    return new_hidden, new_cell.to(cell.dtype)


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
    def __init__(self, vocab_size: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.attention
        self.lstm = cfg.cell == "lstm"
        self.hidden_size = cfg.decoder_hidden
        self.layers = cfg.num_decoder_layers
        self.embed_dim = cfg.embed_dim
        self.dropout_p = cfg.dropout
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

    def _input_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first RNN layer's input weight (embedding columns first) and bias."""
        return cast(torch.Tensor, self.rnn.weight_ih_l0), cast(torch.Tensor, self.rnn.bias_ih_l0)

    def embedding_gates(self, ids: torch.Tensor) -> torch.Tensor:
        """First-layer input gates from the embeddings: (B, [T]) -> (B, [T], G)."""
        embedded = self.dropout(self.embed(ids))
        weight, bias = self._input_weights()
        return F.linear(embedded, weight[:, : self.embed_dim], bias)

    def step(
        self, gates_emb: torch.Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None, torch.Tensor | None]:
        """Advance one step from first-layer embedding gates (B, G).

        Returns ``(output, state, context, attention)``: the top RNN output (B, H); for
        ``bahdanau`` the context (B, D) that :meth:`features` combines with it; and the
        attention weights (B, S). For Luong attention ``output`` is already the feature.
        """
        extra_weight = self._input_weights()[0][:, self.embed_dim :]
        context = attention = None
        if self.feeds_context:
            assert self.attention is not None and enc.keys is not None
            context, attention = self.attention(state.hidden[-1], enc.keys, enc.states, enc.mask)
            gates_emb = gates_emb + F.linear(context, extra_weight)
        elif self.feeds_feature:
            assert state.feed is not None
            gates_emb = gates_emb + F.linear(state.feed, extra_weight)
        hidden, cell = self._rnn_layers(gates_emb, state)
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

    def _rnn_layers(
        self, gates: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hiddens: list[torch.Tensor] = []
        cells: list[torch.Tensor] = []
        for layer in range(self.layers):
            if layer > 0:
                below = dropout(hiddens[-1], self.dropout_p, self.training)
                gates = F.linear(
                    below,
                    getattr(self.rnn, f"weight_ih_l{layer}"),
                    getattr(self.rnn, f"bias_ih_l{layer}"),
                )
            w_hh = getattr(self.rnn, f"weight_hh_l{layer}")
            b_hh = getattr(self.rnn, f"bias_hh_l{layer}")
            if self.lstm:
                assert state.cell is not None
                h, c = lstm_update(gates, state.hidden[layer], state.cell[layer], w_hh, b_hh)
                hiddens.append(h)
                cells.append(c)
            else:
                hiddens.append(gru_update(gates, state.hidden[layer], w_hh, b_hh))
        return torch.stack(hiddens), (torch.stack(cells) if cells else None)

    def features(self, output: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Final features from step outputs, for one step (B, H) or many (B, T, H)."""
        if not self.feeds_context:
            return output if self.kind != "none" else self.dropout(output)
        assert context is not None and self.feature_layer is not None
        return self.dropout(torch.tanh(self.feature_layer(torch.cat([output, context], -1))))

    # -- whole target ------------------------------------------------------------------------

    def forward(
        self,
        tgt_in: torch.Tensor,
        enc: EncoderOutput,
        state: DecoderState,
        teacher_forcing: float = 1.0,
        predict: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Features (B, T, H) for decoder inputs (B, T) = BOS + target pieces.

        With ``teacher_forcing < 1`` each sentence's input at each step is the gold token
        with that probability, else the model's own previous prediction (``predict``
        maps features to ids), as in scheduled sampling (Bengio et al., 2015).
        """
        if teacher_forcing < 1.0:
            assert predict is not None
            return self._forward_sampled(tgt_in, enc, state, teacher_forcing, predict)
        if not self.sequential:
            return self._forward_parallel(tgt_in, enc, state)
        # unbind, not gates[:, t]: its backward writes all steps' gradients in one go.
        gates = self.embedding_gates(tgt_in).unbind(1)  # T x (B, G)
        outputs, contexts = [], []
        for step_gates in gates:
            output, state, context, _ = self.step(step_gates, state, enc)
            outputs.append(output)
            contexts.append(context)
        stacked = torch.stack(outputs, dim=1)  # (B, T, H)
        if self.feeds_context:
            return self.features(stacked, torch.stack(contexts, dim=1))  # type: ignore[arg-type]
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

    def _forward_sampled(
        self,
        tgt_in: torch.Tensor,
        enc: EncoderOutput,
        state: DecoderState,
        teacher_forcing: float,
        predict: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        features: list[torch.Tensor] = []
        prev = tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            if t > 0:
                gold = tgt_in[:, t]
                use_gold = torch.rand(gold.shape, device=gold.device) < teacher_forcing
                with torch.no_grad():
                    own = predict(features[-1])
                prev = torch.where(use_gold | (gold == PAD_ID), gold, own)
            output, state, context, _ = self.step(self.embedding_gates(prev), state, enc)
            features.append(self.features(output, context))
        return torch.stack(features, dim=1)
