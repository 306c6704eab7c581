"""int8 decoding (``precision="int8"``): close to fp32, and the search invariants hold."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_beam_of_one_is_greedy
from test_translator import SENTENCES, checkpoint, translator  # noqa: F401 - shared model

from mtkit.errors import ConfigError
from mtkit.model.cells import ColumnProduct
from mtkit.model.decoder import WordGates
from mtkit.search import quantize
from mtkit.search.int8 import Int8Linear, int8_available, reference_linear
from mtkit.search.quantize import GateTable, check_int8, parameter_count
from mtkit.search.translator import Translator

pytestmark = pytest.mark.skipif(not int8_available(), reason="no int8 CPU backend in this torch")


@pytest.fixture(scope="module")
def int8(checkpoint: Path) -> Translator:  # noqa: F811
    return Translator.from_checkpoint(checkpoint, precision="int8")


def test_int8_linear_is_close_to_the_fp32_product():
    torch.manual_seed(0)
    weight, bias = torch.randn(40, 24) * 0.2, torch.randn(40)
    layer = Int8Linear(weight, bias, bound=1.0)
    x = torch.rand(3, 5, 24) * 2 - 1
    got, want = layer(x), reference_linear(x, weight, bias)
    assert got.shape == want.shape == (3, 5, 40)
    # Rounding x to 7 bits over [-1, 1] and W to 8 bits per row: a small error, not zero.
    error = (got - want).abs().max().item()
    assert 0 < error < 0.05 * want.abs().max().item()
    assert torch.allclose(layer.weight, weight, atol=weight.abs().max().item() / 127)


def test_a_row_gives_the_same_product_alone_or_in_any_batch():
    torch.manual_seed(1)
    layer = Int8Linear(torch.randn(16, 8), torch.randn(16), bound=1.0)
    row = torch.rand(1, 8) * 0.1  # a small-valued row beside rows with larger values
    others = torch.rand(6, 8) * 2 - 1
    alone = layer(row)
    in_batch = layer(torch.cat([others[:3], row, others[3:]]))[3:4]
    assert torch.equal(alone, in_batch)


@pytest.mark.parametrize("bound", [1.0, 3.7])
def test_the_fixed_range_product_is_the_dynamic_one_on_an_input_holding_both_bounds(bound: float):
    """Int8Linear gives the backend the scale and zero point of [-b, b]; PyTorch's dynamic
    quantization, given the rows plus one row holding -b and b, picks the same ones."""
    torch.manual_seed(2)
    layer = Int8Linear(torch.randn(30, 12), torch.randn(30), bound=bound)
    x = (torch.rand(9, 12) * 2 - 1) * bound
    anchor = torch.zeros(1, 12)
    anchor[0, 0], anchor[0, -1] = -bound, bound
    dynamic = torch.ops.quantized.linear_dynamic(torch.cat([x, anchor]), layer._packed, True)
    assert torch.equal(layer(x), dynamic[:-1])


def test_int8_translations_are_those_of_the_model(
    translator: Translator,  # noqa: F811
    int8: Translator,
):
    assert int8.translate(SENTENCES, beam_size=5) == translator.translate(SENTENCES, beam_size=5)
    assert int8.precision == "int8" and int8.loaded.dtype == torch.float32


def test_int8_beam_of_one_is_exactly_greedy(int8: Translator):
    assert_beam_of_one_is_greedy(int8, SENTENCES)


@pytest.mark.parametrize("beam_size", [1, 5])
def test_int8_batch_equals_each_sentence_alone(int8: Translator, beam_size: int):
    together = int8.translate_nbest(SENTENCES, beam_size=beam_size, nbest=beam_size)
    for sentence, hyps in zip(SENTENCES, together, strict=True):
        [alone] = int8.translate_nbest([sentence], beam_size=beam_size, nbest=beam_size)
        assert [h.text for h in alone] == [h.text for h in hyps]
        assert [h.score for h in alone] == pytest.approx([h.score for h in hyps], abs=1e-5)


def test_int8_score_equals_forced_decoding(int8: Translator):
    results = int8.translate_nbest(SENTENCES, beam_size=5, nbest=2)
    for sentence, hyps in zip(SENTENCES, results, strict=True):
        forced = int8.score([sentence] * len(hyps), hyps, beam_size=5)
        assert forced == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_the_callers_model_is_left_in_fp32(checkpoint: Path):  # noqa: F811
    plain = Translator.from_checkpoint(checkpoint)
    Translator(plain.model, plain.codec, plain.defaults, precision="int8")
    assert isinstance(plain.model.output, torch.nn.Linear)
    assert not any(isinstance(m, (Int8Linear, GateTable)) for m in plain.model.modules())
    assert isinstance(plain.model.decoder.word_gates, WordGates)


def test_every_product_of_the_int8_step_is_int8(int8: Translator):
    """The surgery leaves no fp32 product in the step: every product module of the
    decoder (and the output layer) was replaced; the bridge, run once, stays fp32."""
    model = int8.model
    assert isinstance(model.output, Int8Linear)
    decoder = model.decoder
    assert not any(isinstance(m, ColumnProduct) for m in decoder.modules())
    linears = [name for name, m in decoder.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(name.startswith("bridge.") for name in linears)
    products = [*decoder.rnn.hidden_products, *decoder.rnn.layer_inputs, decoder.fed_gates]
    assert all(isinstance(p, Int8Linear) for p in products if p is not None)


def test_bad_precisions_are_one_line_errors(checkpoint: Path):  # noqa: F811
    with pytest.raises(ConfigError, match="precision='int4'; expected fp32, bf16 or int8"):
        Translator.from_checkpoint(checkpoint, precision="int4")
    with pytest.raises(ConfigError, match="runs on the CPU only, not on cuda"):
        check_int8(torch.device("cuda"))


def test_an_int8_ensemble_of_a_model_with_itself_is_the_model(
    checkpoint: Path,  # noqa: F811
    int8: Translator,
):
    pair = Translator.from_checkpoints([checkpoint, checkpoint], precision="int8")
    got = pair.translate_nbest(SENTENCES, beam_size=3, nbest=3)
    want = int8.translate_nbest(SENTENCES, beam_size=3, nbest=3)
    for mine, theirs in zip(got, want, strict=True):
        assert [h.text for h in mine] == [h.text for h in theirs]
        assert [h.score for h in mine] == pytest.approx([h.score for h in theirs], abs=1e-4)


def test_int8_models_report_their_full_parameter_count(translator: Translator, int8: Translator):  # noqa: F811
    assert parameter_count(int8.model) == parameter_count(translator.model) > 0


def test_embedding_gates_are_a_table_or_an_int8_product_above_its_cap(
    checkpoint: Path,  # noqa: F811
    int8: Translator,
    monkeypatch: pytest.MonkeyPatch,
):
    assert isinstance(int8.model.decoder.word_gates, GateTable)
    monkeypatch.setattr(quantize, "GATE_TABLE_BYTES", 0)
    untabulated = Translator.from_checkpoint(checkpoint, precision="int8")
    word_gates = untabulated.model.decoder.word_gates
    assert isinstance(word_gates, WordGates) and isinstance(word_gates.product, Int8Linear)
    assert untabulated.translate(SENTENCES, beam_size=5) == int8.translate(SENTENCES, beam_size=5)
    assert_beam_of_one_is_greedy(untabulated, SENTENCES)
