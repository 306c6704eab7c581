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
    sampling: bool = False  # draw each piece from the model's distribution (beam_size 1)
    temperature: float = 1.0  # sampling: log-probs divided by this (< 1 sharper, > 1 flatter)
    top_k: int = 0  # sampling: from the k most likely pieces only (0: from all)
    seed: int = 0  # sampling: the same seed and source sentence give the same sample

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
        self._check_sampling()

    def _check_sampling(self) -> None:
        """Sampling's own values, and a search it can run in: one draw per sentence, which
        beam search (beam_size > 1) and the coverage penalty (which only ranks beams) lack."""
        s = "decode"
        check_value(isinstance(self.sampling, bool), s, "sampling", self.sampling, "true or false")
        ok = is_finite(self.temperature) and self.temperature > 0
        check_value(ok, s, "temperature", self.temperature, "a finite number > 0")
        ok = is_int(self.top_k) and self.top_k >= 0
        check_value(ok, s, "top_k", self.top_k, "an integer >= 0 (0 = every piece)")
        ok = is_int(self.seed) and 0 <= self.seed < 2**63
        check_value(ok, s, "seed", self.seed, "an integer in [0, 2^63)")
        if self.sampling:
            needs = "1 with sampling=true (one draw per sentence)"
            check_value(self.beam_size == 1, s, "beam_size", self.beam_size, needs)
            needs = "0 with sampling=true (it only ranks beams)"
            ok = self.coverage_penalty == 0.0
            check_value(ok, s, "coverage_penalty", self.coverage_penalty, needs)


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
