"""GRU/LSTM cells: the stepwise update against torch's fused RNNs and cells, its products as
modules over the RNN's own parameters, and unchanged parameter names."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtkit.config import ModelConfig
from mtkit.model.cells import GRU, LSTM, StackedRNN
from mtkit.model.dropout import dropout
from mtkit.model.rnn import make_rnn
from mtkit.model.seq2seq import Seq2Seq


def input_gates(rnn: StackedRNN, x: torch.Tensor) -> torch.Tensor:
    """The first layer's input gates of a whole input (B, I): W_ih x + b_ih."""
    return rnn.input_product(0, x.size(-1))(x)


def initial_state(cell: str, layers: int, batch: int, hidden: int):
    h0 = torch.randn(layers, batch, hidden)
    return h0, (torch.randn(layers, batch, hidden) if cell == "lstm" else None)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_stepwise_path_equals_the_fused_forward(cell, layers):
    """A loop of ``step`` over a sequence gives torch's fused outputs and final states."""
    torch.manual_seed(0)
    rnn = make_rnn(cell, 5, 7, layers, dropout=0.3).eval()
    assert isinstance(rnn, nn.GRU if cell == "gru" else nn.LSTM)
    x = torch.randn(3, 6, 5)
    h0, c0 = initial_state(cell, layers, 3, 7)
    with torch.no_grad():
        fused, final = rnn(x, h0 if c0 is None else (h0, c0))
        hidden, cell_state = h0, c0
        outputs = []
        for t in range(x.size(1)):
            hidden, cell_state = rnn.step(input_gates(rnn, x[:, t]), hidden, cell_state)
            outputs.append(hidden[-1])
    torch.testing.assert_close(torch.stack(outputs, dim=1), fused, atol=1e-6, rtol=0)
    if c0 is None:
        torch.testing.assert_close(hidden, final, atol=1e-6, rtol=0)
        assert cell_state is None
    else:
        torch.testing.assert_close(hidden, final[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(cell_state, final[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("training", [False, True])
def test_step_equals_torchs_own_cells(cell, layers, training):
    """``step`` (products as modules, the cell equations written out) = ``reference_step``
    (the whole input, torch.gru_cell / torch.lstm_cell), also with dropout between layers."""
    torch.manual_seed(0)
    rnn = make_rnn(cell, 5, 7, layers, dropout=0.3).train(training)
    x = torch.randn(4, 5)
    h0, c0 = initial_state(cell, layers, 4, 7)
    with torch.no_grad():
        torch.manual_seed(1)
        hidden, cell_state = rnn.step(input_gates(rnn, x), h0, c0)
        torch.manual_seed(1)
        want_hidden, want_cell = rnn.reference_step(x, h0, c0)
    torch.testing.assert_close(hidden, want_hidden, atol=1e-6, rtol=0)
    if c0 is None:
        assert cell_state is None and want_cell is None
    else:
        torch.testing.assert_close(cell_state, want_cell, atol=1e-6, rtol=0)


def test_input_gates_of_column_groups_add_up_to_the_whole_input():
    """The decoder adds context gates to precomputed embedding gates: the split is exact."""
    torch.manual_seed(0)
    rnn = make_rnn("lstm", 5, 4, 1, 0.0)
    x = torch.randn(3, 5)
    whole = input_gates(rnn, x)
    torch.testing.assert_close(whole, F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0))
    parts = rnn.input_product(0, 2)(x[:, :2]) + rnn.input_product(2, 3, bias=False)(x[:, 2:])
    torch.testing.assert_close(parts, whole)


def test_step_products_read_the_rnns_own_parameters():
    """The products are modules without parameters of their own: they add nothing to the
    state_dict and follow loading, dtype changes and deep copies of their RNN."""
    torch.manual_seed(0)
    rnn = make_rnn("gru", 5, 4, 2, 0.0)
    assert len(rnn.hidden_products) == 2 and len(rnn.layer_inputs) == 1
    assert sum(1 for _ in rnn.hidden_products.parameters()) == 0
    assert set(rnn.state_dict()) == set(nn.GRU(5, 4, num_layers=2).state_dict())
    product = rnn.hidden_products[1]
    h = torch.randn(3, 4)
    with torch.no_grad():
        rnn.load_state_dict({k: v + 1 for k, v in rnn.state_dict().items()})
    torch.testing.assert_close(product(h), F.linear(h, rnn.weight_hh_l1, rnn.bias_hh_l1))
    copied = copy.deepcopy(rnn)
    with torch.no_grad():
        copied.weight_hh_l1.zero_()
        copied.bias_hh_l1.zero_()
    assert torch.equal(copied.hidden_products[1](h), torch.zeros(3, 12))
    assert not torch.equal(product(h), torch.zeros(3, 12))
    half = rnn.to(torch.bfloat16)
    assert half.hidden_products[1](h.bfloat16()).dtype == torch.bfloat16
    assert len(make_rnn("gru", 5, 4, 2, 0.0, bidirectional=True).hidden_products) == 0


def test_step_drops_out_between_layers_only():
    """In training, layer 2 reads drop(layer 1's output); layer 1 and eval mode are exact."""
    torch.manual_seed(0)
    rnn = make_rnn("gru", 5, 7, 2, dropout=0.5)
    top = GRU(7, 7, batch_first=True)  # layer 2 of ``rnn``, on its own
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(top, f"{name}_l0").copy_(getattr(rnn, f"{name}_l1"))
    h0, _ = initial_state("gru", 2, 4, 7)
    gates = input_gates(rnn, torch.randn(4, 5))
    with torch.no_grad():
        evaluated, _ = rnn.eval().step(gates, h0)
        torch.manual_seed(1)
        trained, _ = rnn.train().step(gates, h0)
        torch.manual_seed(1)
        below = dropout(trained[0], 0.5, training=True)
        expected_top, _ = top.step(input_gates(top, below), h0[1:])
    assert torch.equal(trained[0], evaluated[0])
    assert not torch.equal(trained[1], evaluated[1])
    torch.testing.assert_close(trained[1], expected_top[0])
    single = make_rnn("gru", 5, 7, 1, dropout=0.5)
    x = torch.randn(4, 5)
    with torch.no_grad():  # one layer: nothing between layers to drop
        trained_single, _ = single.train().step(input_gates(single, x), h0[:1])
        evaluated_single, _ = single.eval().step(input_gates(single, x), h0[:1])
    assert torch.equal(trained_single, evaluated_single)


def test_make_rnn_builds_the_cells_of_this_module():
    assert type(make_rnn("gru", 3, 4, 1, 0.0)) is GRU
    lstm = make_rnn("lstm", 3, 4, 2, 0.2, bidirectional=True)
    assert type(lstm) is LSTM and lstm.dropout == 0.2 and lstm.bidirectional
    assert make_rnn("gru", 3, 4, 1, 0.2).dropout == 0.0  # no dropout after the top layer


# Parameter names and shapes of models built before the cells moved to mtkit.model.cells
# (decoder.rnn was a plain torch.nn.LSTM/GRU): checkpoints written then must still load.
OLD_LSTM_BAHDANAU = {
    "output_ids": (40,),
    "encoder.embed.weight": (40, 12),
    **{
        f"encoder.rnn.{name}_l{layer}{direction}": shape
        for layer, width in ((0, 12), (1, 16))
        for direction in ("", "_reverse")
        for name, shape in (
            ("weight_ih", (32, width)),
            ("weight_hh", (32, 8)),
            ("bias_ih", (32,)),
            ("bias_hh", (32,)),
        )
    },
    "decoder.embed.weight": (40, 12),
    "decoder.rnn.weight_ih_l0": (64, 28),
    "decoder.rnn.weight_hh_l0": (64, 16),
    "decoder.rnn.bias_ih_l0": (64,),
    "decoder.rnn.bias_hh_l0": (64,),
    "decoder.rnn.weight_ih_l1": (64, 16),
    "decoder.rnn.weight_hh_l1": (64, 16),
    "decoder.rnn.bias_ih_l1": (64,),
    "decoder.rnn.bias_hh_l1": (64,),
    **{
        f"decoder.bridge.{kind}.{layer}.{name}": (16, 16) if name == "weight" else (16,)
        for kind in ("to_hidden", "to_cell")
        for layer in (0, 1)
        for name in ("weight", "bias")
    },
    "decoder.attention.v": (16,),
    "decoder.attention.key_proj.weight": (16, 16),
    "decoder.attention.query_proj.weight": (16, 16),
    "decoder.attention.query_proj.bias": (16,),
    "decoder.feature_layer.weight": (16, 32),
    "decoder.feature_layer.bias": (16,),
    "output.weight": (40, 16),
    "output.bias": (40,),
}
OLD_GRU_LUONG = {
    "output_ids": (5,),
    "encoder.embed.weight": (40, 12),
    "encoder.rnn.weight_ih_l0": (48, 12),
    "encoder.rnn.weight_hh_l0": (48, 16),
    "encoder.rnn.bias_ih_l0": (48,),
    "encoder.rnn.bias_hh_l0": (48,),
    "decoder.embed.weight": (40, 12),
    "decoder.rnn.weight_ih_l0": (48, 28),
    "decoder.rnn.weight_hh_l0": (48, 16),
    "decoder.rnn.bias_ih_l0": (48,),
    "decoder.rnn.bias_hh_l0": (48,),
    "decoder.bridge.to_hidden.0.weight": (16, 16),
    "decoder.bridge.to_hidden.0.bias": (16,),
    "decoder.attention.key_proj.weight": (16, 16),
    "decoder.feature_layer.weight": (16, 32),
    "decoder.feature_layer.bias": (16,),
    "output.weight": (5, 16),
    "output.bias": (5,),
}


def old_models():
    lstm = ModelConfig(
        cell="lstm",
        attention="bahdanau",
        embed_dim=12,
        encoder_hidden=8,
        decoder_hidden=16,
        layers=2,
    )
    gru = ModelConfig(
        cell="gru",
        attention="luong_general",
        bidirectional=False,
        embed_dim=12,
        encoder_hidden=16,
        decoder_hidden=16,
    )
    observed = torch.tensor([10, 20, 30])
    return [
        (lambda: Seq2Seq(lstm, 40, 40), OLD_LSTM_BAHDANAU),
        (lambda: Seq2Seq(gru, 40, 40, output_ids=observed), OLD_GRU_LUONG),
    ]


@pytest.mark.parametrize(("build", "expected"), old_models())
def test_checkpoints_written_before_the_cells_module_still_load(build, expected):
    model = build()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    torch.manual_seed(3)
    old = {
        name: model.output_ids.clone() if name == "output_ids" else torch.randn(shape)
        for name, shape in expected.items()
    }
    fresh = build()
    fresh.load_state_dict(old)  # strict: no missing or unexpected key
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, old[name]), name
