"""GRU and LSTM layers with two paths over the same weights: a whole sequence, or one step.

:class:`GRU` and :class:`LSTM` are ``torch.nn.GRU`` / ``torch.nn.LSTM`` (the fused
whole-sequence ``forward`` is inherited, parameter names are the library's), plus a
:meth:`~StackedRNN.step` that advances every layer by one time step from *precomputed*
first-layer input gates. The decoder needs that split: the embedding half of the
first layer's input projection can be computed for all target steps at once, and only
the half that depends on the previous step (attention context, input feeding) is added
inside the loop. The cell equations, as ``torch.nn`` documents them, are written out in
each class's docstring and implemented once, in :meth:`_cell`.

Shapes: B batch, I input size, H hidden size, L layers, G gates (3H for GRU, 4H for LSTM).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from mtkit.model.dropout import dropout


class StackedRNN(nn.RNNBase):
    """The layer loop of one step, shared by :class:`GRU` and :class:`LSTM` (a mixin).

    Layer ``l > 0`` reads ``drop(output of layer l - 1)`` at the module's ``dropout`` rate in
    training, as the fused path does (there torch draws the mask, here
    :func:`mtkit.model.dropout.dropout`). Stepping is for unidirectional stacks (the decoder).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # int8 copies of the step's products (mtkit.search.int8), keyed by (weight name, first
        # input column, columns, with bias); empty unless quantize_ made them.
        self.int8: dict[tuple[str, int, int, bool], nn.Module] = {}

    def _param(self, name: str) -> torch.Tensor:
        return cast(torch.Tensor, getattr(self, name))

    def _linear(
        self, x: torch.Tensor, name: str, first: int = 0, bias: bool = True
    ) -> torch.Tensor:
        """``x W[:, first:first + n]^T (+ b)`` for weight ``name`` and its bias, where
        ``x`` is (..., n): in fp32 (or autocast), or through an int8 copy when there is one."""
        quantized = self.int8.get((name, first, x.size(-1), bias)) if self.int8 else None
        if quantized is not None:
            return cast(torch.Tensor, quantized(x))
        return F.linear(x, *self._weight_and_bias(name, first, x.size(-1), bias))

    def _weight_and_bias(
        self, name: str, first: int, size: int, bias: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Columns ``first .. first + size`` of weight ``name``, and its bias if asked for."""
        weight = self._param(name)[:, first : first + size]
        return weight, self._param(name.replace("weight", "bias")) if bias else None

    def quantize_(self, first_layer_splits: list[tuple[int, int, bool, float]]) -> None:
        """Make int8 copies (:class:`mtkit.search.int8.Int8Linear`) of every product of a step.

        ``first_layer_splits``: the (first column, columns, with bias, input bound) groups
        in which :meth:`input_gates` is called on the first layer's input. The hidden
        states the other products read lie in [-1, 1].
        """
        from mtkit.search.int8 import Int8Linear

        def copy(name: str, first: int, size: int, bias: bool, bound: float) -> None:
            weight, b = self._weight_and_bias(name, first, size, bias)
            self.int8[(name, first, size, bias)] = Int8Linear(weight, b, bound)

        self.int8 = {}
        for first, size, bias, bound in first_layer_splits:
            copy("weight_ih_l0", first, size, bias, bound)
        for layer in range(self.num_layers):
            copy(f"weight_hh_l{layer}", 0, self.hidden_size, True, 1.0)
            if layer > 0:
                copy(f"weight_ih_l{layer}", 0, self.hidden_size, True, 1.0)

    def input_gates(self, x: torch.Tensor, first: int = 0, bias: bool = True) -> torch.Tensor:
        """First-layer input gates of some input columns: ``W_ih[:, cols] x (+ b_ih)``.

        ``x`` (..., n) holds input columns ``first .. first + n`` of the first layer; the
        gates (..., G) of disjoint column groups add up to those of the whole input.
        """
        return self._linear(x, "weight_ih_l0", first, bias)

    def step(
        self, gates: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Advance all layers one step from first-layer input gates (B, G).

        ``hidden`` (and for an LSTM ``cell``) are (L, B, H); returns the new ones. The top
        layer's output is ``new_hidden[-1]``.
        """
        hiddens: list[torch.Tensor] = []
        cells: list[torch.Tensor] = []
        for layer in range(self.num_layers):
            if layer > 0:
                below = dropout(hiddens[-1], self.dropout, self.training)
                gates = self._linear(below, f"weight_ih_l{layer}")
            h, c = self._cell(layer, gates, hidden[layer], None if cell is None else cell[layer])
            hiddens.append(h)
            if c is not None:
                cells.append(c)
        return torch.stack(hiddens), (torch.stack(cells) if cells else None)

    def _cell(
        self, layer: int, gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class GRU(StackedRNN, nn.GRU):
    """``torch.nn.GRU`` with a stepwise update. For input ``x`` and previous state ``h``:

    .. code-block:: text

        r  = σ(W_ir x + b_ir + W_hr h + b_hr)          reset gate
        z  = σ(W_iz x + b_iz + W_hz h + b_hz)          update gate
        n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))  candidate
        h' = (1 − z) ⊙ n + z ⊙ h                       computed as n + z ⊙ (h − n)

    ``W_i* x + b_i*`` are the precomputed input gates, rows ordered ``[r; z; n]`` as in
    ``weight_ih_l{k}``.
    """

    def _cell(
        self, layer: int, gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, None]:
        gates_h = self._linear(h, f"weight_hh_l{layer}")
        size = h.size(-1)
        reset_update = torch.sigmoid(gates_x[:, : 2 * size] + gates_h[:, : 2 * size])
        reset, update = reset_update.chunk(2, dim=1)
        candidate = torch.tanh(gates_x[:, 2 * size :] + reset * gates_h[:, 2 * size :])
        return candidate + update * (h - candidate), None


class LSTM(StackedRNN, nn.LSTM):
    """``torch.nn.LSTM`` with a stepwise update. For input ``x``, state ``h`` and cell ``c``:

    .. code-block:: text

        i  = σ(W_ii x + b_ii + W_hi h + b_hi)          input gate
        f  = σ(W_if x + b_if + W_hf h + b_hf)          forget gate
        g  = tanh(W_ig x + b_ig + W_hg h + b_hg)       candidate cell
        o  = σ(W_io x + b_io + W_ho h + b_ho)          output gate
        c' = f ⊙ c + i ⊙ g
        h' = o ⊙ tanh(c')

    ``W_i* x + b_i*`` are the precomputed input gates, rows ordered ``[i; f; g; o]`` as in
    ``weight_ih_l{k}``. The new cell keeps the dtype of the old one (fp32 under autocast).
    """

    def _cell(
        self, layer: int, gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert c is not None, "an LSTM step needs the cell state"
        gates = gates_x + self._linear(h, f"weight_hh_l{layer}")
        in_gate, forget_gate, candidate, out_gate = gates.chunk(4, dim=1)
        new_cell = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(candidate)
        new_hidden = torch.sigmoid(out_gate) * torch.tanh(new_cell)
        return new_hidden, new_cell.to(c.dtype)


def make_rnn(
    cell: str,
    input_size: int,
    hidden: int,
    layers: int,
    dropout: float,
    bidirectional: bool = False,
) -> GRU | LSTM:
    """A batch-first ``cell`` (``gru`` | ``lstm``) stack, dropout only between layers."""
    rnn_class = GRU if cell == "gru" else LSTM
    return rnn_class(
        input_size,
        hidden,
        num_layers=layers,
        batch_first=True,
        dropout=dropout if layers > 1 else 0.0,
        bidirectional=bidirectional,
    )
