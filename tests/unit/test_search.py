"""Search on hand-written probability tables, where the right answers are computed by hand."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import pytest
import torch

from mtkit.corpus.tokenizer import EOS_ID
from mtkit.errors import ConfigError
from mtkit.search import SearchOptions, beam_search, forced_scores, greedy_search
from mtkit.search.hypothesis import RowState, unfinished

A, B, C = 4, 5, 6
VOCAB = 7
Table = dict[tuple[int, ...], dict[int, float]]

# P(next | prefix). Greedy takes "a" (0.6) and ends with "a a" (0.6 * 0.4 * 1.0 = 0.24);
# the best sequence is "b" (0.4 * 0.9 = 0.36), which a beam of 2 finds.
GARDEN_PATH: Table = {
    (): {A: 0.6, B: 0.4},
    (A,): {A: 0.4, B: 0.35, EOS_ID: 0.25},
    (B,): {EOS_ID: 0.9, A: 0.06, B: 0.04},
    (A, A): {EOS_ID: 1.0},
    (A, B): {EOS_ID: 1.0},
}
# Rarely wants to stop: EOS has a small, fixed probability at every step.
CHATTY: Table = {(): {A: 0.9, EOS_ID: 0.1}}
# Never stops by itself.
ENDLESS: Table = {(): {A: 0.7, B: 0.3}}


@dataclass
class Rows:
    """Encoder output of the scripted model: which table each row follows."""

    ids: torch.Tensor

    def select(self, index: torch.Tensor) -> Rows:
        return Rows(self.ids.index_select(0, index))


@dataclass
class History:
    tokens: torch.Tensor  # (R, t) tokens fed so far, BOS first

    def select(self, index: torch.Tensor) -> History:
        return History(self.tokens.index_select(0, index))


class ScriptedModel:
    """A step function reading probabilities from a table per sentence."""

    def __init__(
        self,
        tables: list[Table],
        default: dict[int, float] | None = None,
        output_ids: torch.Tensor | None = None,
    ) -> None:
        self.tables = tables
        self.default = default or {EOS_ID: 1.0}
        self.calls = 0
        # The token id of each output column: every id, in order, unless a test narrows it.
        self.output_ids = torch.arange(VOCAB) if output_ids is None else output_ids
        self.column = {int(token): column for column, token in enumerate(self.output_ids)}

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Rows:
        return Rows(src[:, 0].clone())

    def init_state(self, enc: Rows) -> History:
        return History(torch.empty(len(enc.ids), 0, dtype=torch.long))

    def step(self, prev: torch.Tensor, state: History, enc: Rows):
        self.calls += 1
        tokens = torch.cat([state.tokens, prev.unsqueeze(1)], dim=1)
        log_probs = torch.full((len(prev), len(self.output_ids)), float("-inf"))
        for row in range(len(prev)):
            table = self.tables[int(enc.ids[row])]
            prefix = tuple(tokens[row, 1:].tolist())
            if prefix not in table and (table is CHATTY or table is ENDLESS):
                prefix = ()
            for token, p in table.get(prefix, self.default).items():
                log_probs[row, self.column[token]] = math.log(p)
        return log_probs, History(tokens), None


def sources(*table_ids: int, length: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.tensor([[i] * length for i in table_ids])
    return src, torch.full((len(table_ids),), length)


PLAIN = SearchOptions(length_norm="none", max_len_a=0.0, max_len_b=10)


def test_greedy_takes_the_locally_best_token():
    model = ScriptedModel([GARDEN_PATH])
    [[hyp]] = greedy_search(model, *sources(0), options=PLAIN)
    assert hyp.tokens == [A, A]
    assert hyp.score == pytest.approx(math.log(0.6 * 0.4 * 1.0))


def test_beam_finds_the_best_sequence_and_its_exact_score():
    model = ScriptedModel([GARDEN_PATH])
    [hyps] = beam_search(model, *sources(0), options=replace(PLAIN, beam_size=2, nbest=2))
    assert [h.tokens for h in hyps] == [[B], [A, A]]
    assert hyps[0].score == pytest.approx(math.log(0.4 * 0.9))
    assert hyps[1].score == pytest.approx(math.log(0.6 * 0.4))


def test_a_beam_wider_than_half_the_output_columns_still_searches():
    """2K candidates per beam from a model of fewer columns (here 7 < 2 x 5): the missing
    ones are dead, and the search gives beam 2's answer with more of the n-best."""
    model = ScriptedModel([GARDEN_PATH])
    [hyps] = beam_search(model, *sources(0), options=replace(PLAIN, beam_size=5, nbest=5))
    assert [h.tokens for h in hyps][:2] == [[B], [A, A]]
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert all(math.isfinite(h.score) for h in hyps)


def test_length_penalty_flips_the_preference():
    """Average normalisation: log(.36)/2 = -0.511 < log(.24)/3 = -0.476, so "a a" wins."""
    model = ScriptedModel([GARDEN_PATH])
    options = SearchOptions(
        beam_size=2, nbest=2, length_norm="average", length_penalty=1.0, max_len_a=0.0, max_len_b=10
    )
    [hyps] = beam_search(model, *sources(0), options=options)
    assert [h.tokens for h in hyps] == [[A, A], [B]]
    assert hyps[0].score == pytest.approx(math.log(0.24) / 3)
    assert hyps[1].score == pytest.approx(math.log(0.36) / 2)
    gnmt = SearchOptions(
        beam_size=2, nbest=2, length_norm="gnmt", length_penalty=1.0, max_len_a=0.0, max_len_b=10
    )
    [gnmt_hyps] = beam_search(model, *sources(0), options=gnmt)
    assert gnmt_hyps[0].score == pytest.approx(math.log(0.36) / ((5 + 2) / 6))


def test_max_length_forces_eos_in_greedy_search():
    model = ScriptedModel([CHATTY])
    options = SearchOptions(length_norm="none", max_len_a=0.0, max_len_b=4)
    [[hyp]] = greedy_search(model, *sources(0), options=options)
    assert hyp.tokens == [A, A, A, A]
    assert hyp.score == pytest.approx(4 * math.log(0.9) + math.log(0.1))


def test_max_length_forces_eos_in_beam_search():
    """The model never emits EOS; at the limit it is the only choice (probability 1)."""
    model = ScriptedModel([ENDLESS])
    options = SearchOptions(beam_size=3, nbest=3, length_norm="none", max_len_a=0.0, max_len_b=4)
    [hyps] = beam_search(model, *sources(0), options=options)
    assert [len(h.tokens) for h in hyps] == [4, 4, 4]
    assert hyps[0].tokens == [A, A, A, A]
    assert hyps[0].score == pytest.approx(4 * math.log(0.7))
    assert hyps[1].score == pytest.approx(3 * math.log(0.7) + math.log(0.3))


def test_max_length_follows_source_length():
    model = ScriptedModel([CHATTY, CHATTY])
    src = torch.tensor([[0, 0, 0], [1, 1, 1]])
    lengths = torch.tensor([2, 3])  # 1 and 2 words + EOS
    options = SearchOptions(length_norm="none", max_len_a=2.0, max_len_b=1)
    [short], [long] = greedy_search(model, src, lengths, options=options)
    assert len(short.tokens) == 3 and len(long.tokens) == 5


@pytest.mark.parametrize("search", [greedy_search, beam_search])
def test_max_length_cap_bounds_very_long_sources(search):
    model = ScriptedModel([ENDLESS, ENDLESS])
    src = torch.zeros(2, 400, dtype=torch.long)
    lengths = torch.tensor([3, 400])  # 2 and 399 words + EOS
    options = SearchOptions(beam_size=2, length_norm="none", max_len_b=1, max_len_cap=6)
    [short], [long] = [hyps[:1] for hyps in search(model, src, lengths, options=options)]
    assert len(short.tokens) == 4  # 1.5 * 2 + 1, under the cap
    assert len(long.tokens) == 6  # 1.5 * 399 + 1 = 599, capped


def test_nbest_is_sorted_and_starts_with_the_one_best():
    model = ScriptedModel([GARDEN_PATH])
    options = SearchOptions(beam_size=3, nbest=3, length_norm="none", max_len_a=0, max_len_b=10)
    [nbest] = beam_search(model, *sources(0), options=options)
    scores = [h.score for h in nbest]
    assert scores == sorted(scores, reverse=True) and len(nbest) == 3
    [[one]] = beam_search(
        model,
        *sources(0),
        options=SearchOptions(beam_size=3, nbest=1, length_norm="none", max_len_a=0, max_len_b=10),
    )
    assert one.tokens == nbest[0].tokens and one.score == nbest[0].score


def test_beam_of_one_equals_greedy():
    tables = [GARDEN_PATH, CHATTY, {(): {B: 0.5, C: 0.3, EOS_ID: 0.2}, (B,): {C: 0.7, EOS_ID: 0.3}}]
    model = ScriptedModel(tables)
    options = SearchOptions(beam_size=1, length_norm="gnmt", max_len_a=0.0, max_len_b=6)
    greedy = greedy_search(model, *sources(0, 1, 2), options=options)
    beam = beam_search(model, *sources(0, 1, 2), options=options)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    assert [g[0].score for g in greedy] == pytest.approx([b[0].score for b in beam])


def test_a_batch_searches_like_one_sentence_at_a_time():
    tables = [GARDEN_PATH, CHATTY, {(): {C: 0.5, B: 0.5}, (C,): {EOS_ID: 1.0}}]
    model = ScriptedModel(tables)
    options = SearchOptions(beam_size=3, nbest=3, length_norm="none", max_len_a=0, max_len_b=5)
    together = beam_search(model, *sources(0, 1, 2), options=options)
    for i in range(3):
        [alone] = beam_search(model, *sources(i), options=options)
        assert [h.tokens for h in alone] == [h.tokens for h in together[i]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in together[i]])


def test_finished_hypotheses_are_kept_while_others_continue():
    """The early EOS ("b") is finished at step 2 yet still returned after the beam goes on."""
    model = ScriptedModel([GARDEN_PATH])
    options = SearchOptions(
        beam_size=2, nbest=2, length_norm="average", length_penalty=1.0, max_len_a=0.0, max_len_b=10
    )
    [hyps] = beam_search(model, *sources(0), options=options)
    assert [B] in [h.tokens for h in hyps]


def test_min_length_blocks_early_eos():
    model = ScriptedModel([GARDEN_PATH], default={A: 0.5, EOS_ID: 0.5})
    options = SearchOptions(length_norm="none", max_len_a=0.0, max_len_b=10, min_len=3)
    [[hyp]] = greedy_search(model, *sources(0), options=options)
    assert len(hyp.tokens) >= 3


def test_no_repeat_ngram_blocks_repeated_bigrams():
    model = ScriptedModel([{(): {A: 0.9, EOS_ID: 0.1}}], default={A: 0.6, B: 0.3, EOS_ID: 0.1})
    options = SearchOptions(length_norm="none", max_len_a=0.0, max_len_b=6, no_repeat_ngram=2)
    [[hyp]] = greedy_search(model, *sources(0), options=options)
    bigrams = list(zip(hyp.tokens, hyp.tokens[1:], strict=False))
    assert len(bigrams) == len(set(bigrams))
    assert hyp.tokens[:3] == [A, A, B]  # "a a" may not repeat, so "b" comes next


def test_forced_scores_equal_search_scores():
    model = ScriptedModel([GARDEN_PATH])
    options = SearchOptions(
        beam_size=2, nbest=2, length_norm="gnmt", length_penalty=0.6, max_len_a=0.0, max_len_b=10
    )
    [hyps] = beam_search(model, *sources(0), options=options)
    src, lengths = sources(0, 0)
    forced = forced_scores(model, src, lengths, [h.tokens for h in hyps], options)
    assert forced == pytest.approx([h.score for h in hyps])


def test_both_searches_return_a_list_of_hypotheses_per_sentence():
    model = ScriptedModel([GARDEN_PATH, CHATTY])
    greedy = greedy_search(model, *sources(0, 1), options=PLAIN)
    beam = beam_search(model, *sources(0, 1), options=replace(PLAIN, beam_size=2, nbest=2))
    assert [len(hyps) for hyps in greedy] == [1, 1]
    assert [len(hyps) for hyps in beam] == [2, 2]
    assert greedy[0][0].tokens == [A, A] and beam[0][0].tokens == [B]


def test_search_works_in_output_columns_and_returns_token_ids():
    """A model with four output columns (EOS, a, b, c) searches like one with every id."""
    narrow = ScriptedModel([GARDEN_PATH], output_ids=torch.tensor([EOS_ID, A, B, C]))
    full = ScriptedModel([GARDEN_PATH])
    options = replace(PLAIN, beam_size=2, nbest=2)
    for search in (greedy_search, beam_search):
        [got] = search(narrow, *sources(0), options=options)
        [want] = search(full, *sources(0), options=options)
        assert [h.tokens for h in got] == [h.tokens for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want])
    [[best, _]] = beam_search(narrow, *sources(0), options=options)
    assert best.tokens == [B]  # the id of b, not its column (2)
    outside = 1  # an id the model cannot write
    forced = forced_scores(narrow, *sources(0, 0), [[B], [outside]], options)
    assert forced[0] == pytest.approx(math.log(0.4 * 0.9)) and forced[1] == float("-inf")


def test_output_ids_without_eos_are_refused():
    model = ScriptedModel([GARDEN_PATH], output_ids=torch.tensor([A, B]))
    with pytest.raises(ValueError, match="must include EOS"):
        greedy_search(model, *sources(0), options=PLAIN)


def test_search_options_are_the_decode_config_without_its_batch_size():
    from dataclasses import fields

    from mtkit.config import DecodeConfig

    names = [f.name for f in fields(DecodeConfig)]
    assert names == [f.name for f in fields(SearchOptions)] + ["batch_tokens"]
    # a DecodeConfig goes to search as it is
    decode = DecodeConfig(beam_size=2, nbest=2, length_norm="none", max_len_a=0.0)
    [hyps] = beam_search(ScriptedModel([GARDEN_PATH]), *sources(0), options=decode)
    assert [h.tokens for h in hyps] == [[B], [A, A]]


@dataclass
class Ledger(RowState):
    """Bookkeeping of three rows, one field of every kind compaction handles."""

    ids: torch.Tensor
    names: list[str]
    nothing: torch.Tensor | None
    rows: Rows  # a model part that reorders itself


def test_compaction_keeps_the_same_rows_of_every_field():
    ledger = Ledger(
        torch.tensor([[1, 2], [3, 4], [5, 6]]), ["a", "b", "c"], None, Rows(torch.arange(3))
    )
    kept = ledger.keep(torch.tensor([2, 0]))
    assert kept.ids.tolist() == [[5, 6], [1, 2]] and kept.names == ["c", "a"]
    assert kept.nothing is None and kept.rows.ids.tolist() == [2, 0]
    assert ledger.names == ["a", "b", "c"] and ledger.ids.size(0) == 3  # a new ledger


def test_finished_rows_leave_once_they_are_the_given_share():
    done = torch.tensor([True, False, False, False])
    assert unfinished(done, 0.5) is None  # 1 of 4: they wait
    assert unfinished(done, 0.25).tolist() == [1, 2, 3]
    assert unfinished(done, 0.0).tolist() == [1, 2, 3]  # at once
    assert unfinished(torch.zeros(4, dtype=torch.bool), 0.1) is None


# -- prefix-forced decoding (mtkit.search.prefix) ---------------------------------------------

# Every piece stays possible (SPREAD where the table is silent): any prefix can be forced.
OPEN: Table = {
    (): {A: 0.6, B: 0.3, C: 0.1},
    (A,): {A: 0.4, B: 0.3, C: 0.05, EOS_ID: 0.25},
    (B,): {EOS_ID: 0.9, A: 0.06, B: 0.03, C: 0.01},
}
SPREAD = {A: 0.35, B: 0.25, C: 0.22, EOS_ID: 0.18}


@pytest.mark.parametrize("search", [greedy_search, beam_search])
def test_a_prefix_is_continued_and_scored_as_forced_decoding(search):
    """Forced to start with "b", both end there (0.3 * 0.9); the other prefixes go on."""
    model = ScriptedModel([OPEN], default=SPREAD)
    options = replace(PLAIN, beam_size=2, nbest=1, length_norm="gnmt", max_len_b=4)
    prefixes = [[B], [A, B], [C, C, C], [], None]
    found = search(model, *sources(0, 0, 0, 0, 0), options=options, prefixes=prefixes)
    best = [hyps[0] for hyps in found]
    assert best[0].tokens == [B] and best[0].score == pytest.approx(math.log(0.27) / (7 / 6) ** 0.6)
    for hyp, prefix in zip(best, prefixes, strict=True):
        assert hyp.tokens[: len(prefix or [])] == (prefix or [])
    assert best[3].tokens == best[4].tokens  # an empty prefix is none
    forced = forced_scores(model, *sources(0, 0, 0, 0, 0), [h.tokens for h in best], options)
    assert forced == pytest.approx([h.score for h in best])


def test_with_prefixes_beam_of_one_is_greedy_and_a_batch_is_each_sentence_alone():
    tables = [OPEN, CHATTY, {(): {B: 0.5, C: 0.3, EOS_ID: 0.2}, (B,): {C: 0.7, EOS_ID: 0.3}}]
    model = ScriptedModel(tables, default=SPREAD)
    options = SearchOptions(beam_size=1, length_norm="gnmt", max_len_a=0.0, max_len_b=6)
    prefixes = [[A, A, C], [], [B, C, A]]
    greedy = greedy_search(model, *sources(0, 1, 2), options=options, prefixes=prefixes)
    beam = beam_search(model, *sources(0, 1, 2), options=options, prefixes=prefixes)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    assert [g[0].score for g in greedy] == pytest.approx([b[0].score for b in beam])
    wide = replace(options, beam_size=3, nbest=3)
    together = beam_search(model, *sources(0, 1, 2), options=wide, prefixes=prefixes)
    for i in range(3):
        [alone] = beam_search(model, *sources(i), options=wide, prefixes=[prefixes[i]])
        assert [h.tokens for h in alone] == [h.tokens for h in together[i]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in together[i]])
        assert all(h.tokens[: len(prefixes[i])] == prefixes[i] for h in alone)


@pytest.mark.parametrize("search", [greedy_search, beam_search])
def test_a_prefix_beyond_the_length_limit_is_the_whole_output(search):
    model = ScriptedModel([ENDLESS], default=SPREAD)
    options = SearchOptions(beam_size=2, length_norm="none", max_len_a=0.0, max_len_b=2)
    [[hyp, *_]] = search(model, *sources(0), options=options, prefixes=[[B, A, B, A]])
    assert hyp.tokens == [B, A, B, A]  # the limit (2) rose to the prefix; then only EOS
    assert hyp.score == pytest.approx(2 * math.log(0.7 * 0.3))  # EOS at the limit: log 1


@pytest.mark.parametrize("search", [greedy_search, beam_search])
def test_min_len_and_ngram_blocking_never_block_a_forced_piece(search):
    model = ScriptedModel([{(): {A: 0.9, EOS_ID: 0.1}}], default={A: 0.6, B: 0.3, EOS_ID: 0.1})
    options = SearchOptions(
        beam_size=2, length_norm="none", max_len_a=0.0, max_len_b=8, no_repeat_ngram=2, min_len=5
    )
    [[hyp, *_]] = search(model, *sources(0), options=options, prefixes=[[A, A, A]])
    assert hyp.tokens[:3] == [A, A, A] and len(hyp.tokens) >= 5
    after = list(zip(hyp.tokens[2:], hyp.tokens[3:], strict=False))  # bigrams past the prefix
    assert (A, A) not in after[1:] and len(after) == len(set(after))


@pytest.mark.parametrize("search", [greedy_search, beam_search])
def test_prefixes_search_cannot_force_are_value_errors_naming_the_sentence(search):
    narrow = ScriptedModel([OPEN], default=SPREAD, output_ids=torch.tensor([EOS_ID, A, B, C]))
    options = replace(PLAIN, beam_size=2)
    src = sources(0, 0)
    cases = [
        ([[A], [B, 1]], "sentence 1: piece id 1 has no output column"),
        ([[A, EOS_ID], None], f"sentence 0: piece id {EOS_ID} holds EOS"),
        ([[A]], "1 prefixes for 2 sentences"),
    ]
    for prefixes, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            search(narrow, *src, options=options, prefixes=prefixes)
    zero = ScriptedModel([GARDEN_PATH, GARDEN_PATH])  # P(a | a a) = 0: "a a a" cannot be
    with pytest.raises(ValueError, match="prefix of sentence 1 forces a piece of probability 0"):
        search(zero, *sources(0, 1), options=options, prefixes=[[B], [A, A, A]])
    # Dead beams (-inf) follow any piece, where the forced one may have probability 0 too.
    [[hyp, *_]] = search(zero, *sources(0), options=options, prefixes=[[A, B]])
    assert hyp.tokens == [A, B] and hyp.score == pytest.approx(math.log(0.6 * 0.35))


# -- sampling (mtkit.search.sampling) ---------------------------------------------------------

ONE_STEP: Table = {(): {A: 0.5, B: 0.3, C: 0.2}}  # then EOS (the default)


def distinct_sources(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` sources for table 0 that differ in their other ids (so in their keys)."""
    src = torch.tensor([[0, 10 + i % 50, 10 + i // 50, EOS_ID] for i in range(count)])
    return src, torch.full((count,), 4)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, {A: 0.5, B: 0.3, C: 0.2}),
        ({"temperature": 0.5}, {A: 0.25 / 0.38, B: 0.09 / 0.38, C: 0.04 / 0.38}),  # p^2
        ({"top_k": 2}, {A: 0.5 / 0.8, B: 0.3 / 0.8, C: 0.0}),
    ],
    ids=str,
)
def test_samples_follow_the_model_distribution(changes, expected):
    """2000 sentences, one draw each: the shares are within 0.035 of the probabilities
    (4 standard deviations at most; the draws are a fixed function of seed and source)."""
    model = ScriptedModel([ONE_STEP])
    options = SearchOptions(beam_size=1, sampling=True, seed=7, length_norm="none", **changes)
    found = greedy_search(model, *distinct_sources(2000), options=options)
    first = [hyps[0].tokens[0] for hyps in found]
    for token, p in expected.items():
        assert first.count(token) / len(first) == pytest.approx(p, abs=0.035)


def test_samples_are_reproducible_batch_invariant_and_scored_as_forced_decoding():
    model = ScriptedModel([ONE_STEP, CHATTY, OPEN], default=SPREAD)
    options = SearchOptions(beam_size=1, sampling=True, seed=3, length_norm="gnmt", max_len_b=6)
    src = torch.tensor([[t, 20 + i, EOS_ID] for i in range(12) for t in (0, 1, 2)])
    lengths = torch.full((len(src),), 3)
    together = [hyps[0] for hyps in greedy_search(model, src, lengths, options=options)]
    again = [hyps[0] for hyps in greedy_search(model, src, lengths, options=options)]
    assert [h.tokens for h in again] == [h.tokens for h in together]
    for i in (0, 4, 35):
        [[alone]] = greedy_search(model, src[i : i + 1], lengths[:1], options=options)
        assert alone.tokens == together[i].tokens and alone.score == together[i].score
    other = greedy_search(model, src, lengths, options=replace(options, seed=4))
    assert [h[0].tokens for h in other] != [h.tokens for h in together]
    forced = forced_scores(model, src, lengths, [h.tokens for h in together], options)
    assert forced == pytest.approx([h.score for h in together])
    rows = torch.tensor([0, 2, 5])  # tables 0, 2 and 2 (CHATTY cannot write c)
    prefixed = greedy_search(
        model, src[rows], lengths[rows], options=options, prefixes=[[C, C]] * 3
    )
    assert all(hyps[0].tokens[:2] == [C, C] for hyps in prefixed)


def test_sampling_is_greedy_search_only():
    with pytest.raises(ConfigError, match=r"decode.beam_size=2 is not valid; expected 1 with"):
        SearchOptions(beam_size=2, sampling=True)
    with pytest.raises(ValueError, match="beam_search does not sample"):
        beam_search(
            ScriptedModel([ONE_STEP]),
            *sources(0),
            options=SearchOptions(beam_size=1, sampling=True),
        )
    top_one = SearchOptions(beam_size=1, sampling=True, top_k=1, length_norm="none")
    model = ScriptedModel([GARDEN_PATH])
    [[hyp]] = greedy_search(model, *distinct_sources(1), options=top_one)
    assert hyp.tokens == [A, A]  # the one most likely piece: greedy's
