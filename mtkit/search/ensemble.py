"""Ensembles: several models decoded as one, through the same step API as a single model.

:class:`Ensemble` satisfies :class:`mtkit.search.StepModel`, so greedy and beam search,
forced scoring and the :class:`~mtkit.search.translator.Translator` use it unchanged
(:func:`mtkit.search.load.load` builds one from several checkpoints). Each step
returns the weighted mean of the members' log-probabilities (OpenNMT-py and Marian
combine members the same way), ``sum_i w_i log p_i`` with the weights summing to 1: the
log of a weighted geometric mean. It is not renormalised, so a hypothesis's score is the
weighted mean of its members' scores, which is what forced decoding reports too.

The members' encoder outputs and decoder states travel together in
:class:`EnsembleEncoding` and :class:`EnsembleState`, whose ``select`` reorders every
member's part: search never learns that there are several models. Members must read the
same source ids and write the same target columns, so :func:`load_ensemble` checks the
sentencepiece models, ``reverse_source`` and the output vocabulary before anything runs.
Shapes: B rows (sentences x beams), S source length, M output columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mtkit.config import DecodeConfig
from mtkit.corpus.tokenizer import TextCodec
from mtkit.errors import CheckpointError, ConfigError
from mtkit.model.checkpoint import decode_config_from_payload, load_checkpoint, model_from_payload
from mtkit.model.seq2seq import Seq2Seq
from mtkit.search.hypothesis import StepModel


@dataclass
class EnsembleEncoding:
    """One encoder output per member, reordered together."""

    members: tuple[Any, ...]

    def select(self, index: torch.Tensor) -> EnsembleEncoding:
        return EnsembleEncoding(tuple(enc.select(index) for enc in self.members))

    def cat(self, other: EnsembleEncoding) -> EnsembleEncoding:
        """These rows, then ``other``'s, member by member (see ``EncoderOutput.cat``)."""
        pairs = zip(self.members, other.members, strict=True)
        return EnsembleEncoding(tuple(mine.cat(theirs) for mine, theirs in pairs))


@dataclass
class EnsembleState:
    """One decoder state per member, reordered together (beams keep members in step)."""

    members: tuple[Any, ...]

    def select(self, index: torch.Tensor) -> EnsembleState:
        return EnsembleState(tuple(state.select(index) for state in self.members))

    def cat(self, other: EnsembleState) -> EnsembleState:
        """These rows, then ``other``'s, member by member."""
        pairs = zip(self.members, other.members, strict=True)
        return EnsembleState(tuple(mine.cat(theirs) for mine, theirs in pairs))


def normalized_weights(weights: Sequence[float] | None, count: int) -> tuple[float, ...]:
    """Weights that sum to 1 (equal when ``weights`` is None); a bad list is a ConfigError."""
    if weights is None:
        return tuple(1.0 / count for _ in range(count))
    if len(weights) != count:
        raise ConfigError(
            f"--weights: expected {count} numbers (one per checkpoint), got {len(weights)}"
        )
    if any(not math.isfinite(w) or w < 0 for w in weights) or not 0 < sum(weights) < math.inf:
        raise ConfigError(
            f"--weights {' '.join(str(w) for w in weights)}: expected numbers >= 0 "
            "with a positive sum below 1.8e308"
        )
    total = float(sum(weights))
    return tuple(float(w) / total for w in weights)


class Ensemble(nn.Module):
    """Member models that decode as one (a :class:`~mtkit.search.StepModel`).

    The attention it reports is the weighted mean of the members' attentions (over the
    members that attend): a distribution over the same source positions, so attention
    plots, the web page's heatmap and the coverage penalty see what the ensemble as a
    whole looked at rather than one member's view. A single member is returned exactly.
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None):
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)
        # Plain floats, not a buffer: a bf16 copy of the ensemble must keep exact weights.
        self.weights = normalized_weights(weights, len(members))
        first = cast(torch.Tensor, members[0].output_ids)
        for number, member in enumerate(members[1:], start=2):
            if not torch.equal(cast(torch.Tensor, member.output_ids), first):
                raise ConfigError(f"ensemble member {number} has a different output vocabulary")
        self.output_ids: torch.Tensor
        self.register_buffer("output_ids", first.clone())

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EnsembleEncoding:
        """Every member encodes the same (B, S) source ids."""
        return EnsembleEncoding(tuple(m.encode(src, src_lengths) for m in self._steppers()))

    def init_state(self, enc: EnsembleEncoding) -> EnsembleState:
        return EnsembleState(
            tuple(m.init_state(e) for m, e in zip(self._steppers(), enc.members, strict=True))
        )

    def _steppers(self) -> list[StepModel]:
        return [cast(StepModel, member) for member in self.members]

    def step(
        self, prev_ids: torch.Tensor, state: EnsembleState, enc: EnsembleEncoding
    ) -> tuple[torch.Tensor, EnsembleState, torch.Tensor | None]:
        """Previous ids (B,) -> (weighted mean log-probs (B, M) fp32, state, attention (B, S))."""
        log_probs: torch.Tensor | None = None
        attention: torch.Tensor | None = None
        attending = 0.0  # total weight of the members that returned attention
        states = []
        parts = zip(self._steppers(), self.weights, state.members, enc.members, strict=True)
        for member, weight, member_state, member_enc in parts:
            if weight == 0.0:  # contributes nothing (and 0 * -inf would be NaN)
                states.append(member_state)
                continue
            lp, new_state, att = member.step(prev_ids, member_state, member_enc)
            states.append(new_state)
            lp = lp.float() * weight
            log_probs = lp if log_probs is None else log_probs.add_(lp)
            if att is not None:
                att = att.float() * weight
                attention = att if attention is None else attention.add_(att)
                attending += weight
        if attention is not None and attending != 1.0:
            attention = attention / attending
        return cast(torch.Tensor, log_probs), EnsembleState(tuple(states)), attention


@dataclass
class EnsembleCheckpoints:
    """An ensemble with what decoding needs from its checkpoints.

    Search defaults come from the first checkpoint; ``train_max_len`` (only used to warn
    about long inputs) is the largest of the members' training limits.
    """

    model: Ensemble
    codec: TextCodec
    defaults: DecodeConfig
    train_max_len: int | None
    data: list[dict[str, Any]]  # each checkpoint's ``data`` section, in order


def _codec_difference(first: dict[str, Any], other: dict[str, Any]) -> str | None:
    """What makes two checkpoints' source/target processing differ, or None."""
    first_codec, other_codec = first["codec"], other["codec"]
    if first_codec.get("src_model") != other_codec.get("src_model"):
        return "a different source sentencepiece model"
    first_tgt = first_codec.get("tgt_model") or first_codec.get("src_model")
    other_tgt = other_codec.get("tgt_model") or other_codec.get("src_model")
    if first_tgt != other_tgt:
        return "a different target sentencepiece model"
    if bool(first_codec.get("reverse_source")) != bool(other_codec.get("reverse_source")):
        return (
            f"data.reverse_source={bool(other_codec.get('reverse_source'))} "
            f"(the first has {bool(first_codec.get('reverse_source'))})"
        )
    first_ids, other_ids = first["weights"].get("output_ids"), other["weights"].get("output_ids")
    same_ids = (first_ids is None and other_ids is None) or (
        first_ids is not None and other_ids is not None and torch.equal(first_ids, other_ids)
    )
    if not same_ids:
        return "a different output vocabulary (model.output_vocab / training targets)"
    return None


def load_ensemble(
    paths: Sequence[str | Path], weights: Sequence[float] | None = None
) -> EnsembleCheckpoints:
    """Load checkpoints as an ensemble, checking that they read and write the same ids.

    A member that differs from the first checkpoint in its sentencepiece models,
    ``reverse_source`` or output vocabulary is a one-line CheckpointError naming it.
    """
    if not paths:
        raise ConfigError("an ensemble needs at least one checkpoint")
    member_weights = normalized_weights(weights, len(paths))
    models: list[Seq2Seq] = []
    data: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    codec: TextCodec | None = None
    defaults = DecodeConfig()
    for index, path in enumerate(paths):
        payload = load_checkpoint(path)
        if index == 0:  # what later members are checked against, without its weights
            first = {
                "codec": payload["codec"],
                "weights": {"output_ids": payload["weights"].get("output_ids")},
            }
            defaults = decode_config_from_payload(payload)
        else:
            difference = _codec_difference(first, payload)
            if difference is not None:
                raise CheckpointError(
                    f"{path}: cannot join an ensemble with {paths[0]}: it has {difference}"
                )
        model, member_codec = model_from_payload(payload, str(path))
        codec = codec or member_codec
        models.append(model)
        data.append(dict(payload["data"]))
        del payload  # one checkpoint's raw weights in memory at a time
    limits = [d.get("max_len") for d in data]
    known = [int(limit) for limit in limits if limit is not None]
    return EnsembleCheckpoints(
        model=Ensemble(models, member_weights).eval(),
        codec=cast(TextCodec, codec),
        defaults=defaults,
        train_max_len=max(known) if known else None,
        data=data,
    )
