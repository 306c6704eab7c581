"""The one place that picks a recurrent stack for ``model.cell`` and ``model.peepholes``.

Shapes and equations are the cells' own: :mod:`mtkit.model.cells` (GRU, LSTM) and
:mod:`mtkit.model.peephole` (the LSTM with peephole connections).
"""

from __future__ import annotations

from mtkit.model.cells import GRU, LSTM
from mtkit.model.peephole import PeepholeLSTM


def make_rnn(
    cell: str,
    input_size: int,
    hidden: int,
    layers: int,
    dropout: float,
    bidirectional: bool = False,
    peepholes: bool = False,
) -> GRU | LSTM:
    """A batch-first ``cell`` (``gru`` | ``lstm``) stack, dropout only between layers;
    ``peepholes`` makes an LSTM a :class:`~mtkit.model.peephole.PeepholeLSTM`."""
    if cell == "gru":
        if peepholes:
            raise ValueError("peephole connections need an LSTM cell, not a GRU")
        rnn_class: type[GRU | LSTM] = GRU
    else:
        rnn_class = PeepholeLSTM if peepholes else LSTM
    return rnn_class(
        input_size,
        hidden,
        num_layers=layers,
        batch_first=True,
        dropout=dropout if layers > 1 else 0.0,
        bidirectional=bidirectional,
    )
