"""The peephole LSTM: its equations by hand and gate by gate, the plain LSTM at zero
peepholes, the sequence loop against the step, packing, parameters and configuration."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mtkit.config import ModelConfig
from mtkit.errors import ConfigError
from mtkit.model.cells import LSTM
from mtkit.model.peephole import PeepholeLSTM, peephole_cell, peephole_cell_reference
from mtkit.model.rnn import make_rnn
from mtkit.model.seq2seq import Seq2Seq


def peephole_rnn(
    layers: int = 1, bidirectional: bool = False, seed: int = 0, hidden: int = 7
) -> PeepholeLSTM:
    torch.manual_seed(seed)
    rnn = make_rnn("lstm", 5, hidden, layers, 0.3, bidirectional, peepholes=True)
    assert isinstance(rnn, PeepholeLSTM)
    return rnn


def zero_peepholes(rnn: PeepholeLSTM) -> None:
    with torch.no_grad():
        for name, parameter in rnn.named_parameters():
            if name.startswith("weight_c"):
                parameter.zero_()


def plain_twin(rnn: PeepholeLSTM) -> LSTM:
    """A plain LSTM holding the peephole LSTM's other weights."""
    twin = make_rnn("lstm", rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.dropout or 0.3,
                    rnn.bidirectional)  # fmt: skip
    state = {k: v for k, v in rnn.state_dict().items() if not k.startswith("weight_c")}
    twin.load_state_dict(state)
    return twin


def test_one_unit_by_hand():
    """H = 1, every matrix and bias zero, c = 1: only the peepholes move the gates.

    i = σ(w_ci c), f = σ(w_cf c) = σ(2), g = tanh(0) = 0, so c' = f c = 0.880797;
    o = σ(w_co c') = σ(0.880797) = 0.706987; h' = o tanh(c') = 0.706987 x 0.706818 = 0.499712.
    """
    gates = torch.zeros(1, 4)
    c = torch.ones(1, 1)
    w_ci, w_cf, w_co = torch.tensor([3.0]), torch.tensor([2.0]), torch.tensor([1.0])
    h, new_c = peephole_cell(gates, c, w_ci, w_cf, w_co)
    assert new_c.item() == pytest.approx(0.880797, abs=1e-6)
    assert h.item() == pytest.approx(0.499712, abs=1e-6)


def test_the_cell_is_its_equations_forward_and_backward():
    """The fused-gate cell = the equations gate by gate, in values and in every gradient."""
    torch.manual_seed(0)
    batch, size, hidden = 3, 5, 4

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    x, h, c = leaf(batch, size), leaf(batch, hidden), leaf(batch, hidden)
    weights = [leaf(4 * hidden, size), leaf(4 * hidden, hidden), leaf(4 * hidden),
               leaf(4 * hidden), leaf(hidden), leaf(hidden), leaf(hidden)]  # fmt: skip
    inputs = [x, h, c, *weights]
    w_ih, w_hh, b_ih, b_hh, *peepholes = weights
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    fast = peephole_cell(gates, c, *peepholes)
    plain = peephole_cell_reference(x, h, c, weights)
    probe = [torch.randn_like(fast[0]), torch.randn_like(fast[1])]

    def probed(outputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return (outputs[0] * probe[0]).sum() + (outputs[1] * probe[1]).sum()

    fast_grads = torch.autograd.grad(probed(fast), inputs)
    plain_grads = torch.autograd.grad(probed(plain), inputs)
    for got, want in zip(fast, plain, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    for got, want in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("training", [False, True])
def test_step_equals_the_reference_step(layers, training):
    """``step`` (products as modules) = ``reference_step`` (the equations on the whole
    input), also with dropout between layers, and in the gradients of every parameter."""
    rnn = peephole_rnn(layers).train(training)
    x = torch.randn(4, 5)
    h0, c0 = torch.randn(layers, 4, 7), torch.randn(layers, 4, 7)
    torch.manual_seed(1)
    hidden, cell = rnn.step(rnn.input_product(0, 5)(x), h0, c0)
    assert cell is not None
    grads = torch.autograd.grad((hidden.sum() + cell.sum() * 0.5), list(rnn.parameters()),
                                allow_unused=True)  # fmt: skip
    torch.manual_seed(1)
    want_hidden, want_cell = rnn.reference_step(x, h0, c0)
    assert want_cell is not None
    want_grads = torch.autograd.grad((want_hidden.sum() + want_cell.sum() * 0.5),
                                     list(rnn.parameters()), allow_unused=True)  # fmt: skip
    torch.testing.assert_close(hidden, want_hidden, atol=1e-6, rtol=0)
    torch.testing.assert_close(cell, want_cell, atol=1e-6, rtol=0)
    for name, got, want in zip(dict(rnn.named_parameters()), grads, want_grads, strict=True):
        if want is None:  # the backward direction's weights of a unidirectional stack: none
            assert got is None, name
        else:
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=name)


def test_zero_peepholes_step_is_the_plain_lstm_step_exactly():
    """Bit for bit. (At a hidden size of 16, as in real models a multiple of the vector
    width: for an odd size torch's sigmoid rounds the tail of a strided gate view, which
    the plain cell passes it, unlike that of a contiguous one, in the last bit.)"""
    rnn = peephole_rnn(layers=2, hidden=16).eval()
    zero_peepholes(rnn)
    plain = plain_twin(rnn).eval()
    gates = rnn.input_product(0, 5)(torch.randn(3, 5))
    h0, c0 = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    with torch.no_grad():
        got, want = rnn.step(gates, h0, c0), plain.step(gates, h0, c0)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # type: ignore[arg-type]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_zero_peepholes_sequence_is_the_fused_plain_lstm(bidirectional):
    """Over packed, padded rows, both directions and two layers: the loop and the library's
    fused LSTM differ only in summation order."""
    rnn = peephole_rnn(layers=2, bidirectional=bidirectional).eval()
    zero_peepholes(rnn)
    plain = plain_twin(rnn).eval()
    x, lengths = torch.randn(3, 6, 5), torch.tensor([6, 2, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        (got, (h, c)), (want, (want_h, want_c)) = rnn(packed), plain(packed)
    got_out, _ = pad_packed_sequence(got, batch_first=True)
    want_out, _ = pad_packed_sequence(want, batch_first=True)
    for a, b in ((got_out, want_out), (h, want_h), (c, want_c)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_sequence_forward_is_the_loop_of_steps():
    """Teacher forcing's whole-target call = the decoder's step loop, peepholes included."""
    rnn = peephole_rnn(layers=2).eval()
    x, h0, c0 = torch.randn(3, 6, 5), torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    with torch.no_grad():
        outputs, (final_h, final_c) = rnn(x, (h0, c0))
        hidden, cell = h0, c0
        steps = []
        for t in range(6):
            hidden, cell = rnn.step(rnn.input_product(0, 5)(x[:, t]), hidden, cell)
            steps.append(hidden[-1])
    torch.testing.assert_close(outputs, torch.stack(steps, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(final_h, hidden, atol=1e-6, rtol=0)
    torch.testing.assert_close(final_c, cell, atol=1e-6, rtol=0)


def test_a_padded_row_encodes_as_it_does_alone():
    """Padding holds the state: the final states and outputs of a short row in a padded
    batch are those of the row alone, in both directions."""
    rnn = peephole_rnn(layers=2, bidirectional=True).eval()
    x, lengths = torch.randn(3, 7, 5), torch.tensor([7, 3, 5])
    with torch.no_grad():
        out, (h, c) = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        padded, _ = pad_packed_sequence(out, batch_first=True)
        for row, length in enumerate(lengths.tolist()):
            alone, (h1, c1) = rnn(x[row : row + 1, :length])
            torch.testing.assert_close(padded[row, :length], alone[0], atol=1e-6, rtol=0)
            assert torch.all(padded[row, length:] == 0)
            torch.testing.assert_close(h[:, row], h1[:, 0], atol=1e-6, rtol=0)
            torch.testing.assert_close(c[:, row], c1[:, 0], atol=1e-6, rtol=0)


def test_peepholes_change_the_output():
    """Non-zero peepholes are not the plain LSTM (the test above would pass for a cell
    that ignored them)."""
    rnn = peephole_rnn().eval()
    plain = plain_twin(rnn).eval()
    x = torch.randn(2, 4, 5)
    with torch.no_grad():
        assert not torch.allclose(rnn(x)[0], plain(x)[0], atol=1e-3)


def test_diagonal_weights_are_parameters_of_their_own():
    rnn = peephole_rnn(layers=2, bidirectional=True)
    names = {name for name, _ in rnn.named_parameters() if name.startswith("weight_c")}
    assert names == {
        f"weight_c{gate}_l{layer}{suffix}"
        for gate in "ifo"
        for layer in (0, 1)
        for suffix in ("", "_reverse")
    }
    plain_names = set(LSTM(5, 7, num_layers=2, bidirectional=True).state_dict())
    assert set(rnn.state_dict()) == plain_names | names
    bound = math.sqrt(3 / 7)  # Glorot-uniform on (H,)
    for name in names:
        weight = getattr(rnn, name)
        assert weight.shape == (7,) and weight.abs().max() <= bound and weight.std() > 0


def test_a_model_with_init_range_draws_the_peepholes_from_it_too():
    cfg = ModelConfig(cell="lstm", peepholes=True, embed_dim=8, encoder_hidden=8,
                      decoder_hidden=16, init_range=0.1)  # fmt: skip
    model = Seq2Seq(cfg, 30, 30)
    peepholes = [p for n, p in model.named_parameters() if ".weight_c" in n]
    assert len(peepholes) == 3 * 2 + 3  # bidirectional encoder layer, decoder layer
    assert all(p.abs().max() <= 0.1 for p in peepholes)


def test_peepholes_need_an_lstm():
    with pytest.raises(ConfigError, match=r"model\.peepholes=True .*model\.cell=gru"):
        ModelConfig(cell="gru", peepholes=True)
    with pytest.raises(ValueError, match="LSTM"):
        make_rnn("gru", 3, 4, 1, 0.0, peepholes=True)
    assert type(make_rnn("lstm", 3, 4, 1, 0.0)) is LSTM


def test_bf16_autocast_keeps_the_cell_in_fp32():
    rnn = peephole_rnn()
    x = torch.randn(2, 3, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (_, c) = rnn(x)
    assert c.dtype == torch.float32 and torch.isfinite(out).all()
