"""The target decoder: GRU/LSTM layers with attention, one step at a time or a whole target.

Three decoder structures, chosen by ``model.attention`` and ``model.input_feed``; for the
previous target word ``y_{t-1}``, its embedding ``E y_{t-1}`` and the encoder states ``h``:

.. code-block:: text

    none      s_t  = RNN(E y_{t-1}, s_{t-1})                 Sutskever et al. (2014)
              f_t  = drop(s_t)
    bahdanau  c_t  = attend(s_{t-1}, h)                      Bahdanau et al. (2015)
              s_t  = RNN([E y_{t-1}; c_t], s_{t-1})
              f_t  = drop(tanh(W_f [s_t; c_t]))
    luong_*   h_t  = RNN([E y_{t-1}; h~_{t-1}], h_{t-1})    Luong et al. (2015); without
              c_t  = attend(h_t, h)                          input feeding the RNN reads
              h~_t = drop(tanh(W_c [c_t; h_t])) = f_t        E y_{t-1} alone

where ``attend`` is :class:`~mtkit.model.attention.Attention`, states fed to it or to
``W`` are the top layer's, and ``f_t`` are the features the model's output layer reads.

:meth:`Decoder.step` computes one such step. The RNN's first-layer input product
``W_ih [E y_{t-1}; v] + b_ih`` is taken in two parts that add up to it, never
concatenating: the word's part ``W_ih[:, :E] E y_{t-1} + b_ih`` (:class:`WordGates`) depends
on no earlier step, so teacher forcing (:meth:`Decoder.forward`) computes it for all
target steps in one product, and an inference copy may tabulate it; the fed vector's part
``W_ih[:, E:] v`` is added inside the loop. When nothing feeds back (``none``, or Luong
without input feeding) the whole target goes through the RNN in one fused call, and for
``bahdanau`` the feature layer runs once over all steps. :meth:`Decoder.reference_step`
is the step as written above (concatenated input, torch's own cells, the attention's
reference scores): the tests hold :meth:`~Decoder.step` and :meth:`~Decoder.forward` to it.

Shapes: B batch, S source length, T target length, E embedding, H hidden, D encoder
output size, G first-layer gates, L decoder layers.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from mtkit.config import ModelConfig
from mtkit.corpus.tokenizer import PAD_ID
from mtkit.model.attention import Attention
from mtkit.model.dropout import Dropout
from mtkit.model.encoder import EncoderOutput
from mtkit.model.rnn import make_rnn
from mtkit.model.state import Bridge, DecoderState

__all__ = ["Decoder", "DecoderState", "WordGates"]

# What a step's recurrence returns: the top output (B, H), the new state, the Bahdanau
# context (B, D) or None, and the attention weights (B, S) or None.
Recurrence = tuple[torch.Tensor, DecoderState, torch.Tensor | None, torch.Tensor | None]


class WordGates(nn.Module):
    """The previous word's part of the first RNN layer's input gates,
    ``W_ih[:, :E] drop(E y) + b_ih``: ids (B, [T]) -> (B, [T], G).

    ``product`` is the RNN's input product over the embedding's columns. The embedding is
    the decoder's, held outside the module tree (as :class:`~mtkit.model.cells.ColumnProduct`
    holds its owner), so that its weight keeps the name ``decoder.embed.weight``.
    """

    def __init__(self, embed: nn.Embedding, dropout: Dropout, product: nn.Module) -> None:
        super().__init__()
        self._embed = (embed,)
        self.dropout = dropout
        self.product = product

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.product(self.dropout(self._embed[0](ids)))  # type: ignore[no-any-return]


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
        fed = enc_dim if self.feeds_context else (self.hidden_size if self.feeds_feature else 0)
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
        self.dropout = Dropout(cfg.dropout)
        self.rnn = make_rnn(
            cfg.cell,
            cfg.embed_dim + fed,
            self.hidden_size,
            self.layers,
            cfg.dropout,
            peepholes=cfg.peepholes,
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
        # W_ih [E y; v] + b_ih in its two parts: the word's, and the fed vector's (if any)
        word = self.rnn.input_product(0, self.embed_dim)
        self.word_gates: nn.Module = WordGates(self.embed, self.dropout, word)
        self.fed_gates: nn.Module | None = (
            self.rnn.input_product(self.embed_dim, fed, bias=False) if fed else None
        )

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
        """One step (module docstring): previous ids (B,) -> ``(f_t (B, H), state, a_t (B, S))``.

        The attention weights ``a_t`` are None without attention.
        """
        # 1. the previous word's part of the RNN input gates: W_ih[:, :E] E y_{t-1} + b_ih (B, G)
        word = self.word_gates(prev_ids)
        # 2. the recurrence: attention, then the RNN (Bahdanau), or the RNN, then attention
        output, state, context, attention = self._recur(word, state, enc)
        # 3. the features f_t (B, H)
        return self._features(output, context), state, attention

    def _recur(self, word: torch.Tensor, state: DecoderState, enc: EncoderOutput) -> Recurrence:
        """The RNN and attention part of a step, from the word's gates (B, G)."""
        if self.kind == "bahdanau":
            return self._bahdanau(word, state, enc)
        if self.kind == "none":
            return self._sutskever(word, state)
        return self._luong(word, state, enc)

    def _sutskever(self, word: torch.Tensor, state: DecoderState) -> Recurrence:
        """``s_t = RNN(E y_{t-1}, s_{t-1})``: returns ``(s_t top (B, H), state, None, None)``."""
        hidden, cell = self.rnn.step(word, state.hidden, state.cell)  # s_t (L, B, H)
        return hidden[-1], DecoderState(hidden, cell), None, None

    def _bahdanau(self, word: torch.Tensor, state: DecoderState, enc: EncoderOutput) -> Recurrence:
        """``c_t = attend(s_{t-1}, h)``, ``s_t = RNN([E y_{t-1}; c_t], s_{t-1})``: returns
        ``(s_t top (B, H), state, c_t (B, D), a_t (B, S))``."""
        assert self.attention is not None and self.fed_gates is not None and enc.keys is not None
        # a. the previous top state attends: c_t (B, D), a_t (B, S)
        context, attention = self.attention(state.hidden[-1], enc.keys, enc.states, enc.mask)
        # b. the input gates W_ih [E y_{t-1}; c_t] + b_ih (B, G), then s_t (L, B, H)
        gates = word + self.fed_gates(context)
        hidden, cell = self.rnn.step(gates, state.hidden, state.cell)
        return hidden[-1], DecoderState(hidden, cell), context, attention

    def _luong(self, word: torch.Tensor, state: DecoderState, enc: EncoderOutput) -> Recurrence:
        """``h_t = RNN([E y_{t-1}; h~_{t-1}], h_{t-1})``, ``c_t = attend(h_t, h)``,
        ``h~_t = drop(tanh(W_c [c_t; h_t]))``: returns
        ``(h~_t (B, H), state, None, a_t (B, S))``."""
        assert self.attention is not None and self.feature_layer is not None
        assert enc.keys is not None
        # a. the input gates W_ih [E y_{t-1}; h~_{t-1}] + b_ih (or of E y_{t-1} alone)
        #    (B, G), then h_t (L, B, H)
        gates = word if self.fed_gates is None else word + self.fed_gates(state.feed)
        hidden, cell = self.rnn.step(gates, state.hidden, state.cell)
        top = hidden[-1]  # (B, H)
        # b. the new top state attends: c_t (B, D), a_t (B, S)
        context, attention = self.attention(top, enc.keys, enc.states, enc.mask)
        # c. the attentional vector h~_t (B, H), fed to the next step with input feeding
        combined = self.feature_layer(torch.cat([context, top], -1))
        attentional = self.dropout(torch.tanh(combined))
        feed = attentional if self.feeds_feature else None
        return attentional, DecoderState(hidden, cell, feed), None, attention

    def _features(self, output: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """``f_t`` from a recurrence's output and context, for one step (B, H) or many (B, T, H)."""
        if self.kind == "none":
            return self.dropout(output)
        if not self.feeds_context:
            return output  # Luong: the attentional vector
        assert context is not None and self.feature_layer is not None
        return self.dropout(torch.tanh(self.feature_layer(torch.cat([output, context], -1))))

    def reference_step(
        self, prev_ids: torch.Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """:meth:`step` as the module docstring writes it, for tests and reading: the RNN
        input concatenated, the layers through torch's cells, the papers' attention scores."""
        embedded = self.dropout(self.embed(prev_ids))  # E y_{t-1} (B, E)
        if self.kind == "bahdanau":
            assert self.feature_layer is not None
            context, attention = self._reference_attention(state.hidden[-1], enc)
            rnn_input = torch.cat([embedded, context], -1)  # (B, E + D)
            hidden, cell = self.rnn.reference_step(rnn_input, state.hidden, state.cell)
            combined = self.feature_layer(torch.cat([hidden[-1], context], -1))
            return self.dropout(torch.tanh(combined)), DecoderState(hidden, cell), attention
        fed = [] if state.feed is None else [state.feed]
        rnn_input = torch.cat([embedded, *fed], -1)  # (B, E [+ H])
        hidden, cell = self.rnn.reference_step(rnn_input, state.hidden, state.cell)
        if self.kind == "none":
            return self.dropout(hidden[-1]), DecoderState(hidden, cell), None
        assert self.feature_layer is not None
        context, attention = self._reference_attention(hidden[-1], enc)
        combined = self.feature_layer(torch.cat([context, hidden[-1]], -1))
        attentional = self.dropout(torch.tanh(combined))
        feed = attentional if self.feeds_feature else None
        return attentional, DecoderState(hidden, cell, feed), attention

    def _reference_attention(
        self, query: torch.Tensor, enc: EncoderOutput
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (B, D) and weights (B, S) for queries (B, H), from the papers' scores."""
        assert self.attention is not None
        context, weights = self.attention.reference(query.unsqueeze(1), enc.states, enc.mask)
        return context.squeeze(1), weights.squeeze(1)

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
        # unbind, not words[:, t]: its backward writes all steps' gradients in one go.
        words = self.word_gates(tgt_in).unbind(1)  # T x (B, G)
        outputs, contexts = [], []
        for word in words:
            output, state, context, _ = self._recur(word, state, enc)
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
