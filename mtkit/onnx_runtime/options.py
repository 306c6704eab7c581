"""Search options, scores and length limits of the ONNX runtime, as docs/model.md defines them.

The rules are :mod:`mtkit.search.hypothesis`'s, over numpy: a hypothesis scores
``log P(Y | X) / lp(|Y|)`` with ``|Y|`` counting its EOS; a sentence of ``n`` source
pieces may emit at most ``floor(a * n + b)`` pieces before EOS (at least 1), capped by
``max_len_cap`` or, without one, by the cap of the longest training sentence; no EOS
before ``min_len`` pieces. Log-probabilities are fp32 and are summed in fp32, as search
does in PyTorch, so that scores agree to the last bits the graphs allow. Shapes: R rows,
M output columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from mtkit.errors import ConfigError

NORMS = ("none", "average", "gnmt")


@dataclass(frozen=True)
class RuntimeOptions:
    """The search options the runtime implements (the ``decode`` group's, less coverage
    and n-gram blocking), checked on construction with a one-line ConfigError."""

    beam_size: int = 5
    nbest: int = 1
    length_norm: str = "gnmt"
    length_penalty: float = 0.6
    max_len_a: float = 1.5
    max_len_b: int = 10
    max_len_cap: int | None = None
    min_len: int = 0
    batch_tokens: int = 12000

    def __post_init__(self) -> None:
        for key, least in (("beam_size", 1), ("max_len_b", 1), ("min_len", 0), ("batch_tokens", 1)):
            _check(_is_int(getattr(self, key)) and getattr(self, key) >= least, key,
                   getattr(self, key), f"an integer >= {least}")  # fmt: skip
        ok = _is_int(self.nbest) and 1 <= self.nbest <= self.beam_size
        _check(ok, "nbest", self.nbest, f"an integer in [1, beam_size={self.beam_size}]")
        _check(self.length_norm in NORMS, "length_norm", self.length_norm, " | ".join(NORMS))
        _check(_finite(self.length_penalty), "length_penalty", self.length_penalty, "a number")
        ok = _finite(self.max_len_a) and self.max_len_a >= 0
        _check(ok, "max_len_a", self.max_len_a, "a finite number >= 0")
        cap = self.max_len_cap
        ok = cap is None or (_is_int(cap) and cap >= 1)
        _check(ok, "max_len_cap", cap, "an integer >= 1 or null")

    @classmethod
    def from_defaults(cls, decode: dict[str, Any], train_max_len: int | None) -> RuntimeOptions:
        """The export's ``decode`` defaults (``model.json``), with the output cap of its
        longest training sentence when it sets none (as the Translator does)."""
        names = {f.name for f in fields(cls)}
        options = cls(**{k: v for k, v in decode.items() if k in names and k != "nbest"})
        return replace(options, nbest=min(int(decode.get("nbest", 1)), options.beam_size))

    def with_changes(self, train_max_len: int | None, **changes: Any) -> RuntimeOptions:
        """These options with ``changes`` (None: keep), the n-best capped at the beam
        unless given, and the training cap applied when no ``max_len_cap`` is set."""
        given = {name: value for name, value in changes.items() if value is not None}
        options = replace(self, **{**given, "nbest": 1})
        nbest = given.get("nbest", min(self.nbest, options.beam_size))
        cap = options.max_len_cap
        if cap is None and train_max_len is not None:
            cap = int(options.max_len_a * train_max_len) + options.max_len_b
        return replace(options, nbest=nbest, max_len_cap=cap)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"decode.{key}={value!r}; expected {expected}")


def length_normalizer(length: int, options: RuntimeOptions) -> float:
    """Divisor of a hypothesis's log-probability; ``length`` counts its EOS."""
    if options.length_norm == "gnmt":  # Wu et al. (2016)
        return ((5.0 + length) / 6.0) ** options.length_penalty
    if options.length_norm == "average":
        return float(length) ** options.length_penalty
    return 1.0


def final_score(log_prob: float, length: int, options: RuntimeOptions) -> float:
    """S(Y) = log P(Y | X) / lp(|Y|)."""
    return log_prob / length_normalizer(length, options)


def max_lengths(src_lengths: np.ndarray, options: RuntimeOptions) -> np.ndarray:
    """Most target pieces before EOS for source lengths (R,) that include EOS."""
    words = np.maximum(src_lengths - 1, 0).astype(np.float32)
    limits = np.floor(np.float32(options.max_len_a) * words + np.float32(options.max_len_b))
    limits = np.maximum(limits.astype(np.int64), 1)
    return limits if options.max_len_cap is None else np.minimum(limits, options.max_len_cap)


def limit_length(
    log_probs: np.ndarray, step: int, at_limit: np.ndarray, min_len: int, eos: int
) -> None:
    """In place on (R, M): no EOS before ``min_len``; rows ``at_limit`` (R,) may emit only
    EOS, at its log-prob (0 where ``min_len`` blocked it: the limit wins)."""
    if step < min_len:
        log_probs[:, eos] = -np.inf
    if at_limit.any():
        eos_scores = log_probs[at_limit, eos].copy()
        log_probs[at_limit] = -np.inf
        log_probs[at_limit, eos] = np.where(np.isneginf(eos_scores), 0.0, eos_scores)
