"""int8 decoding: a copy of a trained model whose decoder step runs its products in int8.

What is quantized, and why those products: the output layer, the attention's and the
feature layer's products and the recurrent cell's input and hidden products take most of
a decoding step's arithmetic, and each takes inputs in a known range (states, contexts and
features lie in [-1, 1]), so a fixed input range (:class:`~mtkit.search.int8.Int8Linear`)
needs no calibration and gives the same answer for a sentence alone or in a batch. The
embedding's part of the first layer's input product is tabulated in fp32 instead (one row
per vocabulary piece) when the table is small. The trained model is never changed: the
surgery works on a deep copy.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from mtkit.errors import ConfigError
from mtkit.model.seq2seq import Seq2Seq
from mtkit.search.int8 import Int8Linear, int8_available

# The largest table of embedding gates (Decoder.tabulate_embedding_gates) an int8 copy
# keeps: vocabulary x gates x 4 bytes, 49 MB for 8k pieces and a GRU of 512.
GATE_TABLE_BYTES = 64 * 1024 * 1024


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
            _quantize_seq2seq(module)
    return model


def parameter_count(model: nn.Module) -> int:
    """Parameters of a model, counting the weights its int8 layers replaced."""
    count = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, Int8Linear):
            count += module.weight.numel() + (0 if module.bias is None else module.bias.numel())
    return count


def _quantize_seq2seq(model: Any) -> None:
    decoder = model.decoder
    model.output = _int8(model.output)
    if decoder.feature_layer is not None:
        decoder.feature_layer = _int8(decoder.feature_layer)
    if decoder.attention is not None:
        for name, child in list(decoder.attention.named_children()):
            if isinstance(child, nn.Linear):
                setattr(decoder.attention, name, _int8(child))
    extra = decoder.rnn.input_size - decoder.embed_dim
    splits = []
    table_bytes = decoder.embed.num_embeddings * decoder.rnn.weight_ih_l0.size(0) * 4
    if table_bytes <= GATE_TABLE_BYTES:
        decoder.tabulate_embedding_gates()  # in fp32: no int8 product for the embedding
    else:
        embedded = float(decoder.embed.weight.detach().abs().max())
        splits.append((0, decoder.embed_dim, True, embedded))
    if extra:  # the attention context (Bahdanau) or the fed attentional vector (Luong)
        splits.append((decoder.embed_dim, extra, False, 1.0))
    decoder.rnn.quantize_(splits)


def _int8(layer: nn.Module) -> Int8Linear:
    """An int8 copy of a layer whose inputs lie in [-1, 1] (states, contexts, features)."""
    assert isinstance(layer, nn.Linear)
    return Int8Linear(layer.weight, layer.bias, bound=1.0)
