"""The LSTM with peephole connections (Gers & Schmidhuber, 2000), step by step.

Its gates also look at the cell state, through diagonal (element-wise) weights: the
input and forget gates at the previous cell ``c``, the output gate at the new cell ``c'``.
Beside :class:`~mtkit.model.cells.LSTM`'s equations, for input ``x``, state ``h``, cell ``c``:

.. code-block:: text

    i  = σ(W_ii x + b_ii + W_hi h + b_hi + w_ci ⊙ c)     input gate
    f  = σ(W_if x + b_if + W_hf h + b_hf + w_cf ⊙ c)     forget gate
    g  = tanh(W_ig x + b_ig + W_hg h + b_hg)             candidate cell (no peephole)
    c' = f ⊙ c + i ⊙ g
    o  = σ(W_io x + b_io + W_ho h + b_ho + w_co ⊙ c')    output gate, at the new cell
    h' = o ⊙ tanh(c')

as TensorFlow's ``LSTMCell(use_peepholes=True)`` computes them. The diagonal weights are
parameters of their own, ``weight_ci_l{k}``, ``weight_cf_l{k}``, ``weight_co_l{k}`` (H,) per
layer (``_reverse`` for the backward direction), beside the library's LSTM parameters.
With them at zero the cell is the plain LSTM exactly.

Fused library LSTMs have no peepholes, so every path here is a loop over time steps: a
layer's input product ``W_ih x + b_ih`` is taken for all steps at once, and each step adds
the hidden product and the gate arithmetic, for the rows still running (packed order).
:func:`peephole_cell_reference` is the equations above, gate by gate, for tests and
reading.

Shapes: B batch, S steps, I input size, H hidden size, L layers, G = 4H gates.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from mtkit.model.cells import LSTM
from mtkit.model.dropout import dropout

PEEPHOLES = ("weight_ci", "weight_cf", "weight_co")

State = tuple[torch.Tensor, torch.Tensor]


def peephole_cell(
    gates: torch.Tensor, c: torch.Tensor, w_ci: torch.Tensor, w_cf: torch.Tensor, w_co: torch.Tensor
) -> State:
    """The new (h, c) (B, H) from all gates but the peepholes, ``W_i x + b_i + W_h h + b_h``
    (B, G, rows ``[i; f; g; o]``), and the previous cell ``c`` (B, H)."""
    in_gate, forget_gate, candidate, out_gate = gates.chunk(4, dim=1)
    in_gate = torch.sigmoid(in_gate + w_ci * c)
    forget_gate = torch.sigmoid(forget_gate + w_cf * c)
    new_cell = forget_gate * c + in_gate * torch.tanh(candidate)
    new_hidden = torch.sigmoid(out_gate + w_co * new_cell) * torch.tanh(new_cell)
    return new_hidden, new_cell.to(c.dtype)


def peephole_cell_reference(
    x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weights: list[torch.Tensor]
) -> State:
    """The module docstring's equations, gate by gate: input (B, I), state and cell (B, H);
    ``weights`` are ``[W_ih, W_hh, b_ih, b_hh, w_ci, w_cf, w_co]``."""
    w_ih, w_hh, b_ih, b_hh, w_ci, w_cf, w_co = weights
    (w_ii, w_if, w_ig, w_io), (w_hi, w_hf, w_hg, w_ho) = w_ih.chunk(4), w_hh.chunk(4)
    (b_ii, b_if, b_ig, b_io), (b_hi, b_hf, b_hg, b_ho) = b_ih.chunk(4), b_hh.chunk(4)
    i = torch.sigmoid(x @ w_ii.T + b_ii + h @ w_hi.T + b_hi + w_ci * c)
    f = torch.sigmoid(x @ w_if.T + b_if + h @ w_hf.T + b_hf + w_cf * c)
    g = torch.tanh(x @ w_ig.T + b_ig + h @ w_hg.T + b_hg)
    new_c = f * c + i * g
    o = torch.sigmoid(x @ w_io.T + b_io + h @ w_ho.T + b_ho + w_co * new_c)
    return o * torch.tanh(new_c), new_c


class PeepholeLSTM(LSTM):
    """:class:`~mtkit.model.cells.LSTM` with peephole connections (module docstring).

    ``forward`` takes what ``torch.nn.LSTM`` takes (batch first, a padded tensor or a
    :class:`PackedSequence`, an optional ``(h0, c0)``) and returns the same, computed by
    the stepwise loop; ``step`` and ``reference_step`` are the decoder's, as for the plain
    LSTM.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        suffixes = ("", "_reverse") if self.bidirectional else ("",)
        for layer in range(self.num_layers):
            for suffix in suffixes:
                for name in PEEPHOLES:
                    weight = nn.Parameter(torch.empty(self.hidden_size))
                    self.register_parameter(f"{name}_l{layer}{suffix}", weight)
        self.reset_peepholes()

    def reset_peepholes(self) -> None:
        """TensorFlow's default for the diagonal weights: Glorot-uniform on an (H,) shape,
        ``U(±sqrt(6 / (H + H)))``. (A model with ``init_range > 0`` then draws every
        parameter from ``U(±init_range)``, as TensorFlow's scope initializer would.)"""
        bound = math.sqrt(3.0 / self.hidden_size)
        for name, parameter in self.named_parameters():
            if name.startswith(PEEPHOLES):
                nn.init.uniform_(parameter, -bound, bound)

    def peepholes(self, layer: int, suffix: str = "") -> list[torch.Tensor]:
        """``[w_ci, w_cf, w_co]`` (H,) of a layer (and direction)."""
        return [cast(torch.Tensor, getattr(self, f"{name}_l{layer}{suffix}")) for name in PEEPHOLES]

    def _layer_cell(
        self,
        layer: int,
        gates_x: torch.Tensor,
        gates_h: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert c is not None, "an LSTM step needs the cell state"
        return peephole_cell(gates_x + gates_h, c, *self.peepholes(layer))

    def _reference_layer(
        self, layer: int, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert c is not None, "an LSTM step needs the cell state"
        weights = self.layer_weights(layer) + self.peepholes(layer)
        return peephole_cell_reference(x, h, c, weights)

    # -- whole sequences -----------------------------------------------------------------

    def forward(  # type: ignore[override]
        self, input: torch.Tensor | PackedSequence, hx: State | None = None
    ) -> tuple[torch.Tensor | PackedSequence, State]:
        """What ``torch.nn.LSTM`` returns: the top layer's outputs (batch first, or packed
        as the input was), and the final ``(h, c)``, each (L * dirs, B, H), taken at each
        row's last real step.

        Both inputs run as packed sequences do in the library: time-major rows sorted by
        length, so that step t computes only the ``batch_sizes[t]`` rows still running and
        padding costs nothing. A padded tensor is a packing with every row running.
        """
        packed = input if isinstance(input, PackedSequence) else _as_packed(input)
        data, batch_sizes = packed.data, packed.batch_sizes.tolist()
        directions = 2 if self.bidirectional else 1
        batch = batch_sizes[0]
        if hx is None:
            zeros = data.new_zeros(self.num_layers * directions, batch, self.hidden_size)
            hx = (zeros, zeros)
        elif packed.sorted_indices is not None:
            hx = (hx[0].index_select(1, packed.sorted_indices),
                  hx[1].index_select(1, packed.sorted_indices))  # fmt: skip
        finals: list[State] = []
        for layer in range(self.num_layers):
            if layer > 0:
                data = dropout(data, self.dropout, self.training)
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                start = (hx[0][index], hx[1][index])
                run = self._backward if direction == 1 else self._forward
                out, final = run(data, batch_sizes, start, layer)
                outputs.append(out)
                finals.append(final)
            data = outputs[0] if directions == 1 else torch.cat(outputs, -1)
        hidden, cell = torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals])
        if packed.unsorted_indices is not None:
            hidden = hidden.index_select(1, packed.unsorted_indices)
            cell = cell.index_select(1, packed.unsorted_indices)
        out_packed = PackedSequence(
            data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
        )
        if isinstance(input, PackedSequence):
            return out_packed, (hidden, cell)
        return data.view(len(batch_sizes), batch, -1).transpose(0, 1), (hidden, cell)

    def _weights(self, layer: int, suffix: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.layer_weights(layer, suffix), self.peepholes(layer, suffix)

    def _forward(
        self, data: torch.Tensor, batch_sizes: list[int], start: State, layer: int
    ) -> tuple[torch.Tensor, State]:
        """One layer read forwards over packed rows (N, I): outputs (N, H), final (h, c)
        (B, H). A row leaves the running batch after its last step, keeping that state."""
        (w_ih, w_hh, b_ih, b_hh), peepholes = self._weights(layer, "")
        gates_x = F.linear(data, w_ih, b_ih).split(batch_sizes)  # per step (b_t, G)
        h, c = start
        done: list[State] = []  # the states of rows that ended, last rows first
        outputs = []
        for gates in gates_x:
            running = gates.size(0)
            if running < h.size(0):
                done.append((h[running:], c[running:]))
                h, c = h[:running], c[:running]
            h, c = peephole_cell(gates + F.linear(h, w_hh, b_hh), c, *peepholes)
            outputs.append(h)
        done.append((h, c))
        final_h = torch.cat([h for h, _ in reversed(done)])
        final_c = torch.cat([c for _, c in reversed(done)])
        return torch.cat(outputs), (final_h, final_c)

    def _backward(
        self, data: torch.Tensor, batch_sizes: list[int], start: State, layer: int
    ) -> tuple[torch.Tensor, State]:
        """One layer read backwards over packed rows (N, I): outputs (N, H), final (h, c)
        (B, H). A row joins the running batch at its last step, from its start state."""
        (w_ih, w_hh, b_ih, b_hh), peepholes = self._weights(layer, "_reverse")
        gates_x = F.linear(data, w_ih, b_ih).split(batch_sizes)  # per step (b_t, G)
        h, c = start[0][: batch_sizes[-1]], start[1][: batch_sizes[-1]]
        outputs = []
        for gates in reversed(gates_x):
            running = gates.size(0)
            if running > h.size(0):
                h = torch.cat([h, start[0][h.size(0) : running]])
                c = torch.cat([c, start[1][c.size(0) : running]])
            h, c = peephole_cell(gates + F.linear(h, w_hh, b_hh), c, *peepholes)
            outputs.append(h)
        return torch.cat(outputs[::-1]), (h, c)


def _as_packed(x: torch.Tensor) -> PackedSequence:
    """A batch-first tensor (B, T, I) as a packing of B rows that all run T steps."""
    batch, steps = x.size(0), x.size(1)
    data = x.transpose(0, 1).reshape(batch * steps, -1)  # time-major (T * B, I)
    return PackedSequence(data, torch.full((steps,), batch, dtype=torch.long), None, None)
