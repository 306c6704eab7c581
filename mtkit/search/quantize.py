"""int8 decoding: a copy of a trained model whose decoder step runs its products in int8.

The model computes each product of a decoder step through a module of its own (the
output layer, the attention's and the feature layer's ``nn.Linear``, the RNN's
:class:`~mtkit.model.cells.ColumnProduct` and the decoder's
:class:`~mtkit.model.decoder.WordGates`); the surgery here puts int8 forms with the same
call in their place, in a deep copy: the trained model is never changed.

Why those products, and why a fixed input range: they take most of a decoding step's
arithmetic, and each reads inputs in a known range (hidden states, attention contexts and
features lie in [-1, 1], embeddings within their table's largest value), so
:class:`~mtkit.search.int8.Int8Linear` quantizes them with a fixed scale: no calibration,
and a sentence gets the same products alone or in any batch. The word's part of the first
layer's input gates depends only on the previous token, so it becomes a table of fp32
gates (:class:`GateTable`, one row per vocabulary piece) while the table is small: looking
up a step's rows costs less than a product over a few rows, which is mostly fixed cost.
The encoder (the library's fused RNN), the embeddings, the bridge and the attention scores
stay fp32.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mtkit.errors import ConfigError
from mtkit.model.cells import ColumnProduct
from mtkit.model.decoder import Decoder, WordGates
from mtkit.model.seq2seq import Seq2Seq
from mtkit.search.int8 import Int8Linear, int8_available

# The largest table of word gates an int8 copy keeps: vocabulary x gates x 4 bytes, 49 MB
# for 8k pieces and a GRU of 512. Above it, the word's product is an int8 one as well.
GATE_TABLE_BYTES = 64 * 1024 * 1024


class GateTable(nn.Module):
    """:class:`~mtkit.model.decoder.WordGates` as a lookup: ids (B, [T]) -> (B, [T], G).

    Row ``y`` of the (V, G) table holds ``W_ih[:, :E] E y + b_ih`` in fp32, the word gates
    of an inference step (no dropout). The table is no parameter and is never saved.
    """

    def __init__(self, word_gates: WordGates, embedding: torch.Tensor) -> None:
        super().__init__()
        with torch.no_grad():
            table = word_gates.product(embedding.detach().float())  # (V, G)
        self.table: torch.Tensor
        self.register_buffer("table", table.contiguous(), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.table)


class Int8Product(Int8Linear):
    """The int8 form of a :class:`~mtkit.model.cells.ColumnProduct`: unlike an ``nn.Linear``
    it replaces, the fp32 weight it was made from stays a parameter of its owner."""


def check_int8(device: torch.device) -> None:
    """A one-line ConfigError where int8 decoding cannot run (not a CPU, no backend)."""
    if device.type != "cpu":
        raise ConfigError(f"--precision int8 runs on the CPU only, not on {device.type}")
    if not int8_available():
        raise ConfigError("--precision int8: this PyTorch build has no int8 CPU backend")


def quantize_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Seq2Seq decoders (one, or an ensemble's members, also
    under a shortlist) run their step's products in int8. The copy is for inference only:
    the quantized layers hold no trainable parameters."""
    model = copy.deepcopy(model).float()
    for module in list(model.modules()):
        if isinstance(module, Seq2Seq):
            _swap(module, "output")
            _quantize_decoder(module.decoder)
    return model


def parameter_count(model: nn.Module) -> int:
    """Parameters of a model, counting the weights its int8 layers replaced."""
    count = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, Int8Linear) and not isinstance(module, Int8Product):
            count += module.weight.numel() + (0 if module.bias is None else module.bias.numel())
    return count


def _quantize_decoder(decoder: Decoder) -> None:
    """Put int8 (or tabulated) forms in place of every product of the decoder's step."""
    if decoder.feature_layer is not None:
        _swap(decoder, "feature_layer")
    if decoder.attention is not None:
        for name, child in list(decoder.attention.named_children()):
            if isinstance(child, nn.Linear):
                _swap(decoder.attention, name)
    for products in (decoder.rnn.hidden_products, decoder.rnn.layer_inputs):
        for index, product in enumerate(products):
            products[index] = _int8(product)
    if decoder.fed_gates is not None:  # the attention context, or the fed attentional vector
        _swap(decoder, "fed_gates")
    word_gates = decoder.word_gates
    assert isinstance(word_gates, WordGates)
    embedding = decoder.embed.weight  # (V, E)
    gates = (4 if decoder.lstm else 3) * decoder.hidden_size  # G
    if embedding.size(0) * gates * 4 <= GATE_TABLE_BYTES:
        decoder.word_gates = GateTable(word_gates, embedding)
    else:
        _swap(word_gates, "product", bound=float(embedding.detach().abs().max()))


def _swap(owner: nn.Module, name: str, bound: float = 1.0) -> None:
    """Put an int8 form of the product ``owner.<name>`` in its place."""
    setattr(owner, name, _int8(getattr(owner, name), bound))


def _int8(layer: nn.Module, bound: float = 1.0) -> Int8Linear:
    """An int8 copy of a product whose inputs lie in [-bound, bound]; states, contexts and
    features lie in [-1, 1]."""
    if isinstance(layer, ColumnProduct):
        return Int8Product(*layer.weight_and_bias(), bound=bound)
    assert isinstance(layer, nn.Linear), type(layer)
    return Int8Linear(layer.weight, layer.bias, bound=bound)
