"""The two graphs of an export, as torch modules written for ``torch.onnx.export``.

A model leaves PyTorch as its step protocol: :class:`EncoderGraph` encodes a batch once
(source ids and lengths -> encoder states, attention keys, the decoder's start state),
and :class:`StepGraph` is one decoder step (previous ids, state, encoder states, keys
and source mask -> log-probabilities over the output columns, the new state and the
attention weights). Both are exported by the dynamo exporter with dynamic batch and
source-length axes (:mod:`mtkit.export.writer`).

The step is the model's own :meth:`~mtkit.model.seq2seq.Seq2Seq.step`: ordinary tensor
operations, for every cell (the peephole LSTM's too), attention type and input feeding.
The encoder is not: the model encodes packed sequences, whose shapes depend on the
lengths' values, which a graph with a dynamic length axis cannot hold. Each encoder
layer becomes ONNX's own recurrent operator instead (``GRU`` or ``LSTM`` with
``sequence_lens``, both directions in one node), which reads each row only up to its
length, as packing does, so a sentence encodes alike alone or in a batch. Its
parameters are the layer's, in ONNX's gate order (:func:`onnx_rnn_weights`); the
peephole LSTM's diagonal weights are ONNX LSTM's ``P`` input, whose equations are
those of :mod:`mtkit.model.peephole` (input and forget gates at the previous cell,
the output gate at the new one).

Shapes: B batch, S source length, E embedding, H hidden, D encoder output size, Q
attention key size, L layers, M output columns, G gates.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtkit.model.cells import GRU, LSTM, StackedRNN
from mtkit.model.encoder import EncoderOutput
from mtkit.model.peephole import PeepholeLSTM
from mtkit.model.seq2seq import Seq2Seq
from mtkit.model.state import DecoderState

# ONNX's gate order, as indices into PyTorch's: a GRU's [r; z; n] -> [z; r; h], an
# LSTM's [i; f; g; o] -> [i; o; f; c]; the peepholes' [ci; cf; co] -> [i; o; f].
GRU_GATES = (1, 0, 2)
LSTM_GATES = (0, 3, 1, 2)
PEEPHOLE_ORDER = (0, 2, 1)


def _reorder(weight: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """Rows of a (len(order) * H, ...) gate block in ``order``."""
    return torch.cat([weight.chunk(len(order))[i] for i in order])


def onnx_rnn_weights(rnn: StackedRNN, layer: int) -> list[torch.Tensor]:
    """``[W, R, B]`` (and ``P`` for a peephole LSTM) of one layer, both directions, for
    ONNX's GRU/LSTM: W (dirs, G, I), R (dirs, G, H), B (dirs, 2G), P (dirs, 3H)."""
    order = GRU_GATES if isinstance(rnn, GRU) else LSTM_GATES
    suffixes = ("", "_reverse") if rnn.bidirectional else ("",)
    w, r, b, p = [], [], [], []
    for suffix in suffixes:
        w_ih, w_hh, b_ih, b_hh = rnn.layer_weights(layer, suffix)
        w.append(_reorder(w_ih, order))
        r.append(_reorder(w_hh, order))
        b.append(torch.cat([_reorder(b_ih, order), _reorder(b_hh, order)]))
        if isinstance(rnn, PeepholeLSTM):
            peepholes = rnn.peepholes(layer, suffix)
            p.append(torch.cat([peepholes[i] for i in PEEPHOLE_ORDER]))
    weights = [torch.stack(w).detach(), torch.stack(r).detach(), torch.stack(b).detach()]
    return [*weights, torch.stack(p).detach()] if p else weights


class OnnxRNNLayer(nn.Module):
    """One encoder layer as ONNX's GRU or LSTM node (valid only inside ``torch.onnx.export``).

    ``x`` (S, B, I) time-major, ``lengths`` (B,) int32 -> outputs (S, B, dirs * H), zero
    beyond each row's length, and the final hidden (and cell) state (B, dirs * H) per
    row, at its last real step forwards and its first backwards.
    """

    def __init__(self, rnn: StackedRNN, layer: int) -> None:
        super().__init__()
        self.lstm = isinstance(rnn, LSTM)
        self.directions = 2 if rnn.bidirectional else 1
        self.hidden = rnn.hidden_size
        weights = onnx_rnn_weights(rnn, layer)
        self.W: torch.Tensor
        self.R: torch.Tensor
        self.B: torch.Tensor
        self.P: torch.Tensor | None
        for name, tensor in zip("WRB", weights, strict=False):
            self.register_buffer(name, tensor)
        self.register_buffer("P", weights[3] if len(weights) == 4 else None)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        steps, batch = x.size(0), x.size(1)
        zeros = x.new_zeros(self.directions, batch, self.hidden)
        inputs: list[torch.Tensor | None] = [x, self.W, self.R, self.B, lengths, zeros]
        attrs: dict[str, Any] = {
            "hidden_size": self.hidden,
            "direction": "bidirectional" if self.directions == 2 else "forward",
        }
        shapes: list[list[int | torch.SymInt]] = [
            [steps, self.directions, batch, self.hidden],
            [self.directions, batch, self.hidden],
        ]
        if self.lstm:
            inputs += [zeros, self.P]
            shapes.append([self.directions, batch, self.hidden])
        else:
            attrs["linear_before_reset"] = 1  # PyTorch's GRU: r ⊙ (W_hn h + b_hn)
        outputs = torch.onnx.ops.symbolic_multi_out(
            "LSTM" if self.lstm else "GRU",
            inputs,
            attrs,
            dtypes=[x.dtype] * len(shapes),
            shapes=shapes,
            version=14,
        )
        y = outputs[0].permute(0, 2, 1, 3).reshape(steps, batch, -1)  # (S, B, dirs * H)
        final_h = outputs[1].permute(1, 0, 2).reshape(batch, -1)  # (B, dirs * H): [fwd; bwd]
        final_c = outputs[2].permute(1, 0, 2).reshape(batch, -1) if self.lstm else None
        return y, final_h, final_c


class EncoderGraph(nn.Module):
    """Source ids (B, S) and lengths (B,) -> states (B, S, D), keys (B, S, Q), and the
    decoder's start state: hidden (L, B, H), cell (L, B, H) for an LSTM, the input-feeding
    vector (B, H) for Luong attention with input feeding. Outputs the model lacks are left
    out (``outputs`` names those given)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model
        rnn = model.encoder.rnn
        self.layers = nn.ModuleList(OnnxRNNLayer(rnn, layer) for layer in range(rnn.num_layers))
        decoder = model.decoder
        self.outputs = ["states", "keys", "hidden"]
        if decoder.lstm:
            self.outputs.append("cell")
        if decoder.feeds_feature:
            self.outputs.append("feed")
        if decoder.attention is None:
            self.outputs.remove("keys")

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask = src != 0  # (B, S) PAD_ID = 0
        x = self.model.encoder.embed(src).transpose(0, 1)  # (S, B, E)
        seq_lens = lengths.to(torch.int32)
        finals_h, finals_c = [], []
        for layer in self.layers:
            x, final_h, final_c = layer(x, seq_lens)
            finals_h.append(final_h)
            finals_c.append(final_c)
        states = x.transpose(0, 1) * mask.unsqueeze(-1).to(x.dtype)  # (B, S, D)
        cell = torch.stack(finals_c) if finals_c[0] is not None else None  # type: ignore[arg-type]
        enc = EncoderOutput(states, mask, torch.stack(finals_h), cell)
        enc = self.model.decoder.prepare(enc)
        state = self.model.init_state(enc)
        values = {
            "states": states,
            "keys": enc.keys,
            "hidden": state.hidden,
            "cell": state.cell,
            "feed": state.feed,
        }
        return tuple(values[name] for name in self.outputs)  # type: ignore[misc]


class StepGraph(nn.Module):
    """One step of :meth:`Seq2Seq.step`: previous ids (B,), the state (``state_names``),
    encoder states (B, S, D), keys (B, S, Q) and mask (B, S) -> log-probs (B, M), the new
    state, and the attention weights (B, S) when the model attends."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model
        decoder = model.decoder
        self.has_cell = decoder.lstm
        self.has_feed = decoder.feeds_feature
        self.attends = decoder.attention is not None

    @property
    def state_names(self) -> list[str]:
        return ["hidden"] + ["cell"] * self.has_cell + ["feed"] * self.has_feed

    @property
    def input_names(self) -> list[str]:
        encoder = ["states", "keys", "mask"] if self.attends else []
        return ["prev_ids", *self.state_names, *encoder]

    @property
    def output_names(self) -> list[str]:
        new_state = [f"new_{name}" for name in self.state_names]
        return ["log_probs", *new_state] + ["attention"] * self.attends

    def forward(self, prev_ids: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.input_names[1:], inputs, strict=True))
        hidden = named["hidden"]
        state = DecoderState(hidden, named.get("cell"), named.get("feed"))
        states = named.get("states", hidden.new_zeros(hidden.size(1), 1, 1))
        mask = named.get("mask", torch.ones_like(states[:, :, 0], dtype=torch.bool))
        enc = EncoderOutput(states, mask, hidden, None, named.get("keys"))
        log_probs, state, attention = self.model.step(prev_ids, state, enc)
        out = [log_probs, state.hidden, state.cell, state.feed, attention]
        wanted = [True, True, self.has_cell, self.has_feed, self.attends]
        return tuple(value for value, keep in zip(out, wanted, strict=True) if keep)  # type: ignore[misc]
