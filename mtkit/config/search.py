"""The ``decode`` group: how search ranks and limits hypotheses (:class:`SearchOptions`)."""

from __future__ import annotations

from dataclasses import dataclass

from mtkit.config.checks import check_choice, check_value, is_finite, is_int


@dataclass
class SearchOptions:
    """How search ranks and limits hypotheses (docs/model.md, "Search").

    The one options type of :mod:`mtkit.search`; the ``decode`` group extends it. Values
    are checked on construction, also when they come from Python rather than Hydra.
    """

    beam_size: int = 5  # 1 = greedy
    nbest: int = 1  # hypotheses returned per input, at most beam_size
    length_norm: str = "gnmt"  # none | average | gnmt (Wu et al. 2016)
    length_penalty: float = 0.6  # alpha of the length normaliser
    max_len_a: float = 1.5  # maximum output length = a * source length + b
    max_len_b: int = 10
    max_len_cap: int | None = None  # an absolute ceiling on that length (null: none)
    min_len: int = 0  # no EOS before this many pieces
    coverage_penalty: float = 0.0  # GNMT beta (0: off)
    no_repeat_ngram: int = 0  # block repeated n-grams of pieces (0: off)

    def __post_init__(self) -> None:
        s = "decode"
        for key, least in (("beam_size", 1), ("max_len_b", 1), ("min_len", 0)):
            value = getattr(self, key)
            check_value(is_int(value) and value >= least, s, key, value, f"an integer >= {least}")
        ok = is_int(self.nbest) and 1 <= self.nbest <= self.beam_size
        check_value(ok, s, "nbest", self.nbest, f"an integer in [1, beam_size={self.beam_size}]")
        check_choice(s, "length_norm", self.length_norm, ("none", "average", "gnmt"))
        ok = is_finite(self.length_penalty)
        check_value(ok, s, "length_penalty", self.length_penalty, "a finite number")
        for key in ("max_len_a", "coverage_penalty"):
            value = getattr(self, key)
            check_value(is_finite(value) and value >= 0, s, key, value, "a finite number >= 0")
        value = self.no_repeat_ngram
        ok = is_int(value) and value >= 0
        check_value(ok, s, "no_repeat_ngram", value, "an integer >= 0 (0 = off)")
        cap = self.max_len_cap
        ok = cap is None or (is_int(cap) and cap >= 1)
        check_value(ok, s, "max_len_cap", cap, "an integer >= 1 or null")


@dataclass
class DecodeConfig(SearchOptions):
    """The ``decode`` group: search options plus the batch size of translation.

    Stored in checkpoints as the translation defaults. A DecodeConfig is a SearchOptions,
    so it goes to the search functions as it is.
    """

    batch_tokens: int = 12000  # source tokens x beams per search batch

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = is_int(self.batch_tokens) and self.batch_tokens >= 1
        check_value(ok, "decode", "batch_tokens", self.batch_tokens, "an integer >= 1")
