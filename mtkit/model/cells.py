"""GRU and LSTM layers with two paths over the same weights: a whole sequence, or one step.

:class:`GRU` and :class:`LSTM` are ``torch.nn.GRU`` / ``torch.nn.LSTM`` (the fused
whole-sequence ``forward`` is inherited, parameter names are the library's), plus a
:meth:`~StackedRNN.step` that advances every layer by one time step from the first
layer's input gates ``W_ih x + b_ih``, which the caller computes: the decoder takes that
product in parts, the embedding's part for all target steps at once
(:mod:`mtkit.model.decoder`). The cell equations, as ``torch.nn`` documents them, are
written out in each class's docstring and implemented once, in ``_cell``;
:meth:`~StackedRNN.reference_step` is the same step through torch's own cell functions,
which the tests hold :meth:`~StackedRNN.step` to.

Every product of a step is a module (:class:`ColumnProduct`), so that an inference copy
can put another form of the same product in its place (:mod:`mtkit.search.quantize`).

Shapes: B batch, I input size, H hidden size, L layers, G gates (3H for GRU, 4H for LSTM).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from mtkit.model.dropout import dropout


class ColumnProduct(nn.Module):
    """``x W[:, first:first + n]^T (+ b)`` for a weight W (N, ·) and bias b (N,) of another
    module: ``x`` (..., n) -> (..., N).

    A product is a module of its own so that an inference copy can replace it by another
    form with the same call (int8, or a lookup table) while the model stays unaware of
    it. The parameters remain their owner's (``weight_ih_l0`` of the RNN, ...), under the
    names checkpoints use: the owner is held outside the module tree, and its parameters
    are read at each call, so the product follows ``.to()``, loading and training.
    """

    def __init__(
        self, owner: nn.Module, weight: str, bias: str | None, first: int, size: int
    ) -> None:
        super().__init__()
        self._owner = (owner,)  # a tuple: nn.Module would register a module attribute
        self.weight_name, self.bias_name = weight, bias
        self.first, self.size = first, size

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight's columns ``first .. first + n`` (N, n), and the bias or None."""
        owner = self._owner[0]
        weight = cast(torch.Tensor, getattr(owner, self.weight_name))
        bias = None if self.bias_name is None else getattr(owner, self.bias_name)
        return weight[:, self.first : self.first + self.size], bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.weight_and_bias())

    def extra_repr(self) -> str:
        columns = f"{self.first}:{self.first + self.size}"
        return f"{self.weight_name}[:, {columns}], bias={self.bias_name}"


class StackedRNN(nn.RNNBase):
    """The layer loop of one step, shared by :class:`GRU` and :class:`LSTM` (a mixin).

    Layer ``l > 0`` reads ``drop(output of layer l - 1)`` at the module's ``dropout`` rate in
    training, as the fused path does (there torch draws the mask, here
    :func:`mtkit.model.dropout.dropout`). Stepping is for unidirectional stacks (the
    decoder); a bidirectional stack has no step products.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        layers = range(self.num_layers) if not self.bidirectional else range(0)
        size = self.hidden_size
        # W_hh_l h + b_hh_l for every layer; W_ih_l x + b_ih_l for the layers above the first
        self.hidden_products = nn.ModuleList(
            ColumnProduct(self, f"weight_hh_l{layer}", f"bias_hh_l{layer}", 0, size)
            for layer in layers
        )
        self.layer_inputs = nn.ModuleList(
            ColumnProduct(self, f"weight_ih_l{layer}", f"bias_ih_l{layer}", 0, size)
            for layer in layers[1:]
        )

    def input_product(self, first: int, size: int, bias: bool = True) -> ColumnProduct:
        """The first layer's input gates of input columns ``first .. first + size``:
        ``W_ih[:, cols] x (+ b_ih)``, (..., size) -> (..., G). The products of disjoint
        column groups, one of them with the bias, add up to ``W_ih x + b_ih``."""
        return ColumnProduct(self, "weight_ih_l0", "bias_ih_l0" if bias else None, first, size)

    def step(
        self, gates: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Advance all layers one step from the first layer's input gates (B, G).

        ``hidden`` (and for an LSTM ``cell``) are (L, B, H); returns the new ones. The top
        layer's output is ``new_hidden[-1]``.
        """
        hiddens: list[torch.Tensor] = []
        cells: list[torch.Tensor] = []
        for layer in range(self.num_layers):
            if layer > 0:
                below = dropout(hiddens[-1], self.dropout, self.training)
                gates = self.layer_inputs[layer - 1](below)
            previous = hidden[layer]
            gates_h = self.hidden_products[layer](previous)
            c_previous = None if cell is None else cell[layer]
            h, c = self._layer_cell(layer, gates, gates_h, previous, c_previous)
            hiddens.append(h)
            if c is not None:
                cells.append(c)
        return torch.stack(hiddens), (torch.stack(cells) if cells else None)

    def reference_step(
        self, x: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`step` from the whole first-layer input ``x`` (B, I), each layer through
        torch's own cell function on the full weights (``torch.gru_cell``,
        ``torch.lstm_cell``): the plain form, for tests and reading."""
        hiddens: list[torch.Tensor] = []
        cells: list[torch.Tensor] = []
        for layer in range(self.num_layers):
            if layer > 0:
                x = dropout(hiddens[-1], self.dropout, self.training)
            c_previous = None if cell is None else cell[layer]
            h, c = self._reference_layer(layer, x, hidden[layer], c_previous)
            hiddens.append(h)
            if c is not None:
                cells.append(c)
        return torch.stack(hiddens), (torch.stack(cells) if cells else None)

    def layer_weights(self, layer: int, suffix: str = "") -> list[torch.Tensor]:
        """``[W_ih, W_hh, b_ih, b_hh]`` of a layer (``suffix="_reverse"``: its backward
        direction), in the order torch's cell functions take them."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return [cast(torch.Tensor, getattr(self, f"{name}_l{layer}{suffix}")) for name in names]

    def _layer_cell(
        self,
        layer: int,
        gates_x: torch.Tensor,
        gates_h: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layer ``layer``'s new (h, c): :meth:`_cell`, unless a cell has weights of its own
        beside the gates' (the peephole LSTM's)."""
        return self._cell(gates_x, gates_h, h, c)

    def _reference_layer(
        self, layer: int, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layer ``layer``'s new (h, c) from its whole input, through torch's own cell."""
        weights = self.layer_weights(layer)
        if c is None:
            return torch.gru_cell(x, h, *weights), None
        new_h, new_c = torch.lstm_cell(x, (h, c), *weights)
        return new_h, new_c

    @staticmethod
    def _cell(
        gates_x: torch.Tensor, gates_h: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The new (h, c) of one layer from its input gates and hidden gates (B, G)."""
        raise NotImplementedError


class GRU(StackedRNN, nn.GRU):
    """``torch.nn.GRU`` with a stepwise update. For input ``x`` and previous state ``h``:

    .. code-block:: text

        r  = σ(W_ir x + b_ir + W_hr h + b_hr)          reset gate
        z  = σ(W_iz x + b_iz + W_hz h + b_hz)          update gate
        n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))  candidate
        h' = (1 − z) ⊙ n + z ⊙ h                       computed as n + z ⊙ (h − n)

    ``W_i* x + b_i*`` are the input gates, ``W_h* h + b_h*`` the hidden gates, rows ordered
    ``[r; z; n]`` as in ``weight_ih_l{k}``.
    """

    @staticmethod
    def _cell(
        gates_x: torch.Tensor, gates_h: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, None]:
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

    ``W_i* x + b_i*`` are the input gates, ``W_h* h + b_h*`` the hidden gates, rows ordered
    ``[i; f; g; o]`` as in ``weight_ih_l{k}``. The new cell keeps the dtype of the old one
    (fp32 under autocast).
    """

    @staticmethod
    def _cell(
        gates_x: torch.Tensor, gates_h: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert c is not None, "an LSTM step needs the cell state"
        gates = gates_x + gates_h
        in_gate, forget_gate, candidate, out_gate = gates.chunk(4, dim=1)
        new_cell = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(candidate)
        new_hidden = torch.sigmoid(out_gate) * torch.tanh(new_cell)
        return new_hidden, new_cell.to(c.dtype)
