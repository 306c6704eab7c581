"""The ``model`` and ``loss`` groups: the encoder-decoder's shape and its training loss."""

from __future__ import annotations

from dataclasses import dataclass

from mtkit.config.checks import check_choice, check_value

ATTENTION_TYPES = ("none", "bahdanau", "luong_dot", "luong_general", "luong_concat")


@dataclass
class ModelConfig:
    """The encoder-decoder: sizes, cell, attention, bridge and embeddings."""

    cell: str = "gru"
    peepholes: bool = False  # LSTM only: gates also read the cell state (mtkit.model.peephole)
    embed_dim: int = 256
    encoder_hidden: int = 256
    decoder_hidden: int = 512
    layers: int = 1
    decoder_layers: int | None = None
    bidirectional: bool = True
    dropout: float = 0.3
    attention: str = "bahdanau"
    input_feed: bool = True
    bridge: str = "learned"
    tie_embeddings: bool = False
    output_vocab: str = "observed"
    init_range: float = 0.1
    pretrained_src_embeddings: str | None = None
    pretrained_tgt_embeddings: str | None = None

    def __post_init__(self) -> None:
        s = "model"
        check_choice(s, "cell", self.cell, ("gru", "lstm"))
        if self.peepholes:
            expected = "false with model.cell=gru (peepholes look at an LSTM's cell state)"
            check_value(self.cell == "lstm", s, "peepholes", self.peepholes, expected)
        check_choice(s, "attention", self.attention, ATTENTION_TYPES)
        check_choice(s, "bridge", self.bridge, ("learned", "zero"))
        check_choice(s, "output_vocab", self.output_vocab, ("observed", "full"))
        for key in ("embed_dim", "encoder_hidden", "decoder_hidden", "layers"):
            value = getattr(self, key)
            check_value(value >= 1, s, key, value, "an integer >= 1")
        if self.decoder_layers is not None:
            ok = self.decoder_layers >= 1
            check_value(ok, s, "decoder_layers", self.decoder_layers, "an integer >= 1 or null")
        check_value(0.0 <= self.dropout < 1.0, s, "dropout", self.dropout, "a number in [0, 1)")
        check_value(self.init_range >= 0.0, s, "init_range", self.init_range, "a number >= 0")
        self._check_shapes_agree()

    def _check_shapes_agree(self) -> None:
        """Settings that tie two sizes together: tied embeddings, dot-product attention."""
        s = "model"
        if self.tie_embeddings:
            ok = self.embed_dim == self.decoder_hidden
            check_value(ok, s, "tie_embeddings", True, "model.embed_dim == model.decoder_hidden")
            ok = self.output_vocab == "full"
            expected = "model.output_vocab=full (one row per piece)"
            check_value(ok, s, "tie_embeddings", True, expected)
        if self.attention == "luong_dot":
            ok = self.decoder_hidden == self.encoder_output_dim
            expected = "model.decoder_hidden == encoder output size for luong_dot"
            check_value(ok, s, "attention", self.attention, expected)

    @property
    def num_decoder_layers(self) -> int:
        return self.layers if self.decoder_layers is None else self.decoder_layers

    @property
    def encoder_output_dim(self) -> int:
        """H of the encoder's states: twice the hidden size when it reads both ways."""
        return self.encoder_hidden * (2 if self.bidirectional else 1)


@dataclass
class LossConfig:
    """Full softmax cross-entropy (with label smoothing) or sampled softmax for training."""

    label_smoothing: float = 0.1
    sampled_softmax: bool = False
    num_samples: int = 512
    proposal: str = "log_uniform"

    def __post_init__(self) -> None:
        s = "loss"
        ok = 0.0 <= self.label_smoothing < 1.0
        check_value(ok, s, "label_smoothing", self.label_smoothing, "a number in [0, 1)")
        check_value(self.num_samples >= 1, s, "num_samples", self.num_samples, "an integer >= 1")
        check_choice(s, "proposal", self.proposal, ("log_uniform", "unigram", "uniform"))
