"""The service's streaming greedy search equals greedy search of each sentence alone.

Sentences join the running batch at different steps and leave when they end; each must
get exactly what :func:`greedy_search` gives it alone: tokens, score and attention.
The models are small and randomly initialised (seeded), with the EOS bias raised so
that sentences end at different steps, some by themselves and some at their limit.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch

from mtkit.config import ModelConfig, SearchOptions
from mtkit.corpus.tokenizer import EOS_ID
from mtkit.model.decoder import DecoderState
from mtkit.model.encoder import EncoderOutput
from mtkit.model.seq2seq import Seq2Seq
from mtkit.search import greedy_search
from mtkit.search.ensemble import Ensemble
from mtkit.search.hypothesis import Hypothesis, StepModel
from mtkit.search.stream import GreedyStream

VOCAB = 40
OPTIONS = SearchOptions(length_norm="gnmt", length_penalty=0.6, max_len_a=1.0, max_len_b=3)
# Source ids (each ends in EOS) and the stream step before which each sentence joins.
SOURCES = [
    [5, 9, 12, EOS_ID],
    [7, 7, 20, 31, 8, 11, 6, 14, EOS_ID],
    [33, EOS_ID],
    [10, 11, 12, 13, 14, 15, EOS_ID],
    [21, 22, EOS_ID],
    [6, 30, 17, 9, 25, 12, 5, 5, 19, 28, 4, EOS_ID],
    [18, 4, 9, EOS_ID],
]
JOINS = [0, 0, 1, 3, 3, 4, 9]


CONFIGS = {
    "gru-bahdanau": ModelConfig(cell="gru", attention="bahdanau"),
    "lstm-luong-feed": ModelConfig(cell="lstm", attention="luong_general", input_feed=True),
    "gru-none-2layers": ModelConfig(cell="gru", attention="none", layers=2),
}


@functools.cache
def small_model(name: str, seed: int) -> Seq2Seq:
    """A seeded random model whose EOS bias is raised (in steps of 0.05) until greedy
    search ends SOURCES at different steps, some by themselves, some at their limit."""
    torch.manual_seed(seed)
    sizes = {"embed_dim": 12, "encoder_hidden": 10, "decoder_hidden": 16, "dropout": 0.0}
    model = Seq2Seq(replace(CONFIGS[name], **sizes, init_range=0.5), VOCAB, VOCAB).eval()
    eos = int(model.column_of[EOS_ID])
    for _ in range(40):
        if varied(alone(model, OPTIONS, False)):
            return model
        with torch.no_grad():
            model.output.bias[eos] += 0.05
    raise AssertionError(f"no EOS bias makes {name} (seed {seed}) end sentences at varied steps")


def varied(hyps: list[Hypothesis]) -> bool:
    """Sentences end at different steps, some by themselves, some at their length limit."""
    lengths = [len(h.tokens) for h in hyps]
    limits = [int(OPTIONS.max_len_a * (len(s) - 1) + OPTIONS.max_len_b) for s in SOURCES]
    ended = sum(n < limit for n, limit in zip(lengths, limits, strict=True))
    return len(set(lengths)) > 2 and 1 < ended < len(SOURCES) - 1


def stream_decode(
    model: StepModel,
    options: SearchOptions,
    attention: list[bool],
    compact: float = 0.0,
    prefixes: list[list[int]] | None = None,
) -> tuple[list[Hypothesis], int]:
    """Decode SOURCES through one stream, each joining before its step in JOINS (with its
    target prefix, if given)."""
    stream = GreedyStream(model, options, torch.device("cpu"), compact=compact)
    results: dict[int, Hypothesis] = {}
    ticket_of: dict[int, int] = {}
    step = 0
    active: set[int] = set()
    while len(results) < len(SOURCES):
        joining = [i for i, join in enumerate(JOINS) if join == step]
        given = None if prefixes is None else [prefixes[i] for i in joining]
        tickets = stream.add([SOURCES[i] for i in joining], [attention[i] for i in joining], given)
        ticket_of.update(zip(tickets, joining, strict=True))
        active |= set(joining)
        if not compact:  # ended rows have left at once
            # What a token budget counts, and the padded length every row's attention reads.
            assert stream.source_tokens == sum(len(SOURCES[i]) for i in active)
            assert stream.longest_source == max((len(SOURCES[i]) for i in active), default=0)
        ended = [(ticket_of[t], hyp) for t, hyp in stream.step()]
        results.update(ended)
        active -= {i for i, _ in ended}
        step += 1
    assert len(stream) == 0 and stream.longest_source == 0
    return [results[i] for i in range(len(SOURCES))], step


def alone(
    model: StepModel,
    options: SearchOptions,
    attention: bool,
    prefixes: list[list[int]] | None = None,
) -> list[Hypothesis]:
    found = []
    for i, source in enumerate(SOURCES):
        src, lengths = torch.tensor([source]), torch.tensor([len(source)])
        given = None if prefixes is None else [prefixes[i]]
        [[hyp]] = greedy_search(model, src, lengths, options, attention, prefixes=given)
        found.append(hyp)
    return found


def assert_same(got: list[Hypothesis], want: list[Hypothesis]) -> None:
    assert [h.tokens for h in got] == [h.tokens for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
    for g, w in zip(got, want, strict=True):
        assert (g.attention is None) == (w.attention is None)
        if g.attention is not None and w.attention is not None:
            assert g.attention.shape == w.attention.shape
            torch.testing.assert_close(g.attention, w.attention, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_streamed_sentences_equal_greedy_search_alone(name: str):
    model = small_model(name, seed=3)
    got, steps = stream_decode(model, OPTIONS, [False] * len(SOURCES))
    want = alone(model, OPTIONS, False)
    assert_same(got, want)
    assert varied(want)
    assert steps < sum(len(h.tokens) + 1 for h in want)  # decoded together


def test_attention_is_kept_only_where_asked_and_equals_greedy_search():
    model = small_model("gru-bahdanau", seed=4)
    asked = [i % 2 == 0 for i in range(len(SOURCES))]
    got, _ = stream_decode(model, OPTIONS, asked)
    want = alone(model, OPTIONS, True)
    assert [h.attention is not None for h in got] == asked
    assert_same(
        [g for g, a in zip(got, asked, strict=True) if a],
        [w for w, a in zip(want, asked, strict=True) if a],
    )
    assert_same(
        [replace(g, attention=None) for g in got], [replace(w, attention=None) for w in want]
    )


@pytest.mark.parametrize("compact", [0.3, 1.0])
def test_ended_rows_waiting_to_leave_change_no_result(compact: float):
    """With ``compact`` > 0 ended rows stay in the batch, feeding EOS, while others step
    and join (1.0: until every row has ended); each sentence's result is unchanged."""
    model = small_model("gru-bahdanau", seed=4)
    asked = [i % 3 != 1 for i in range(len(SOURCES))]
    got, _ = stream_decode(model, OPTIONS, asked, compact)
    want = alone(model, OPTIONS, True)
    assert [h.attention is not None for h in got] == asked
    assert_same(
        got, [w if a else replace(w, attention=None) for w, a in zip(want, asked, strict=True)]
    )


def test_an_ensemble_of_two_streams_like_greedy_search():
    members = [small_model("gru-bahdanau", seed=s) for s in (5, 6)]
    ensemble = Ensemble(members, [0.3, 0.7]).eval()
    asked = [True] * len(SOURCES)
    got, _ = stream_decode(ensemble, OPTIONS, asked)
    assert_same(got, alone(ensemble, OPTIONS, True))


@pytest.mark.parametrize(
    "changes",
    [{"min_len": 3}, {"no_repeat_ngram": 2}, {"max_len_cap": 2}, {"length_norm": "none"}],
    ids=str,
)
def test_search_options_apply_to_each_sentence_at_its_own_step(changes: dict[str, object]):
    model = small_model("lstm-luong-feed", seed=7)
    options = replace(OPTIONS, **changes)
    got, _ = stream_decode(model, options, [False] * len(SOURCES))
    assert_same(got, alone(model, options, False))


def test_cat_pads_the_source_axis_and_drops_columns_padded_everywhere():
    def encoding(lengths: list[int], width: int) -> EncoderOutput:
        mask = torch.arange(width) < torch.tensor(lengths).unsqueeze(1)
        states = torch.rand(len(lengths), width, 3) * mask.unsqueeze(2)
        hidden = torch.rand(1, len(lengths), 3)
        return EncoderOutput(states, mask, hidden, None, keys=states * 2)

    short, long = encoding([2, 1], 2), encoding([4], 6)  # 2 trailing columns of padding
    joined = short.cat(long)
    assert joined.states.shape == (3, 4, 3) and joined.keys is not None
    assert joined.mask.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert torch.equal(joined.states[:2, :2], short.states)
    assert torch.equal(joined.states[2], long.states[0, :4])
    assert not joined.states[:2, 2:].any() and not joined.keys[:2, 2:].any()
    assert torch.equal(joined.final_hidden[:, 2], long.final_hidden[:, 0])
    assert torch.equal(joined.select(torch.tensor([2])).states, long.states[:, :4])

    state = DecoderState(torch.rand(2, 2, 5), torch.rand(2, 2, 5), torch.rand(2, 5))
    other = DecoderState(torch.rand(2, 1, 5), torch.rand(2, 1, 5), torch.rand(1, 5))
    both = state.cat(other)
    assert torch.equal(both.select(torch.tensor([2])).hidden, other.hidden)
    assert both.cell is not None and torch.equal(both.cell[:, :2], state.cell)
    assert both.feed is not None and torch.equal(both.feed[2:], other.feed)


# Target prefixes of SOURCES: some longer than their sentence's length limit (4 and 4 + 1 ...).
PREFIXES = [[9, 9], [], [30, 31, 32, 33, 34, 35], [12], [], [7, 8, 9, 10, 11, 12, 13], [5]]


@pytest.mark.parametrize("name", ["gru-bahdanau", "lstm-luong-feed"])
def test_prefixes_stream_like_greedy_search_alone(name: str):
    """Rows with and without a prefix join at different steps; each is forced at its own
    step, keeps its own limit (raised by a long prefix) and gets greedy search's result."""
    model = small_model(name, seed=3)
    asked = [i % 2 == 0 for i in range(len(SOURCES))]
    got, _ = stream_decode(model, OPTIONS, asked, prefixes=PREFIXES)
    want = alone(model, OPTIONS, True, PREFIXES)
    assert all(h.tokens[: len(p)] == p for h, p in zip(got, PREFIXES, strict=True))
    assert got[2].tokens == PREFIXES[2]  # longer than its limit (1 + 3): the whole output
    assert_same(
        [replace(g, attention=None) for g in got], [replace(w, attention=None) for w in want]
    )
    assert_same(
        [g for g in got if g.attention is not None],
        [w for w, a in zip(want, asked, strict=True) if a],
    )


def test_an_ensemble_streams_prefixes_and_samples_like_greedy_search_alone():
    members = [small_model("gru-bahdanau", seed=s) for s in (5, 6)]
    ensemble = Ensemble(members, [0.3, 0.7]).eval()
    got, _ = stream_decode(ensemble, OPTIONS, [False] * len(SOURCES), prefixes=PREFIXES)
    assert_same(got, alone(ensemble, OPTIONS, False, PREFIXES))
    sampled = replace(OPTIONS, beam_size=1, sampling=True, seed=11, temperature=1.5)
    got, _ = stream_decode(ensemble, sampled, [False] * len(SOURCES), compact=0.3)
    want = alone(ensemble, sampled, False)
    assert_same(got, want)
    assert [h.tokens for h in want] != [h.tokens for h in alone(ensemble, OPTIONS, False)]


@pytest.mark.parametrize("changes", [{}, {"top_k": 3, "no_repeat_ngram": 2}], ids=str)
def test_samples_stream_like_greedy_search_alone(changes: dict[str, object]):
    """A row's draws depend on its source and its own step, not on when it joined."""
    model = small_model("lstm-luong-feed", seed=7)
    options = replace(OPTIONS, beam_size=1, sampling=True, seed=2, **changes)
    got, _ = stream_decode(model, options, [False] * len(SOURCES), prefixes=PREFIXES)
    assert_same(got, alone(model, options, False, PREFIXES))
