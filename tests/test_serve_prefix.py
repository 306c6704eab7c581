"""The service's ``target_prefix``: the worker's two paths (the greedy stream, beam groups)
force each request's prefixes exactly as the Translator does, a prefix the model cannot
write fails its own request before it joins the others, and an ONNX export refuses it.
The HTTP side, on every worker kind, is in tests/test_serve_hostile.py."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import torch
from test_ensemble import trained_checkpoint
from test_serve import SETTINGS, ServerThread, _recording, call

from mtkit.config import ModelConfig
from mtkit.export.writer import export_loaded
from mtkit.model.checkpoint import load_checkpoint, model_from_payload, save_checkpoint
from mtkit.model.seq2seq import Seq2Seq
from mtkit.search.hypothesis import Hypothesis
from mtkit.search.load import load
from mtkit.search.translator import Translator
from mtkit.serve.app import create_app
from mtkit.serve.batcher import Batcher
from mtkit.serve.export import NO_PREFIX
from mtkit.serve.greedy import GreedyJobs
from mtkit.serve.jobs import BadPrefix, BatcherStats, Job, Request
from mtkit.serve.onnx import ExportTranslator
from mtkit.serve.prefix import PrefixCheck, prefixes_of
from mtkit.serve.setup import load_export, load_model

# The task reverses and upper-cases: "red cat sleeps" -> "SLEEPS CAT RED".
SENTENCES = ["red cat sleeps", "the big dog runs near the house", "", "a tree", "green dog"]
PREFIXES = ("HOUSE", "DOG TREE", "RED", None, "")  # mostly not what the model would write
UNKNOWN = "the target sentencepiece model does not know some of its characters"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory, seed=1)


@pytest.fixture(scope="module")
def translator(checkpoint: Path) -> Translator:
    return Translator.from_checkpoint(checkpoint)


def assert_translator_answers(
    translator: Translator, request: Request, got: list[list[Hypothesis]]
) -> None:
    """``got`` is ``translate_nbest(..., prefix=...)``'s answer to ``request``, and each
    score is the forced-decoding score of its hypothesis."""
    texts = list(request.texts)
    want = translator.translate_nbest(
        texts, beam_size=request.beam_size, nbest=request.nbest, prefix=request.prefixes
    )
    assert [[h.text for h in hyps] for hyps in got] == [[h.text for h in hyps] for hyps in want]
    assert [[h.tokens for h in hyps] for hyps in got] == [[h.tokens for h in hyps] for hyps in want]
    for text, hyps, wanted in zip(texts, got, want, strict=True):
        assert [h.score for h in hyps] == pytest.approx([h.score for h in wanted], abs=1e-5)
        if text:
            forced = translator.score([text] * len(hyps), hyps, beam_size=request.beam_size)
            assert forced == pytest.approx([h.score for h in hyps], abs=1e-4)
    for text, hyps, prefix in zip(texts, got, prefixes_of(request), strict=True):
        assert all(h.text.startswith(prefix or "") for h in hyps if text)


def _failure(future: Future[Any]) -> str:
    error = future.exception(30)
    assert isinstance(error, BadPrefix), error
    return str(error)


def test_a_prefixed_request_joins_a_running_greedy_stream_and_a_bad_one_fails_alone(
    checkpoint: Path, translator: Translator
):
    served = load_model([checkpoint]).translator
    greedy = GreedyJobs(served, BatcherStats())
    running = Job(Request(("the big dog runs near the house", "red cat sleeps"), 1), 16)
    greedy.advance([running])
    greedy.advance([])
    assert len(greedy) == 2  # two steps in: both sentences still decode
    joining = Job(Request(tuple(SENTENCES), 1, prefixes=PREFIXES), 24)
    bad = Job(Request(("red cat", "a tree"), 1, prefixes=(None, "TREE 猫")), 8)
    after = Job(Request(("green dog",), 1, prefixes=("DOG",), single=True), 4)
    greedy.advance([joining, bad, after])  # one group joins: the bad one fails, alone
    assert _failure(bad.future) == f"target_prefix[1]: {UNKNOWN}; expected text the model can write"
    while len(greedy):
        greedy.advance([])
    assert_translator_answers(translator, running.request, running.future.result(0))
    assert_translator_answers(translator, joining.request, joining.future.result(0))
    assert_translator_answers(translator, after.request, after.future.result(0))


def test_beam_groups_force_each_requests_prefixes_and_leave_a_bad_one_out(
    checkpoint: Path, translator: Translator
):
    served = load_model([checkpoint]).translator
    calls = _recording(served)
    batcher = Batcher(served, wait_ms=50)
    requests = [
        Request(tuple(SENTENCES[:3]), 3, nbest=2, prefixes=PREFIXES[:3]),
        Request(("red cat",), 3, prefixes=("猫",), single=True),
        Request(tuple(SENTENCES[3:]), 3, nbest=3),  # no prefix, in the same group
        Request(("a tree", "green dog"), 1, prefixes=("TREE", "DOG")),  # the stream
        Request(("a tree",), 1, prefixes=("猫",), single=True),
    ]
    futures = [batcher.submit(request) for request in requests]  # queued before the worker
    batcher.start()
    try:
        assert (
            _failure(futures[1]) == f"target_prefix: {UNKNOWN}; expected text the model can write"
        )
        assert _failure(futures[4]).startswith("target_prefix: ")
        for index in (0, 2, 3):
            assert_translator_answers(translator, requests[index], futures[index].result(30))
    finally:
        batcher.close()
    assert calls == [(SENTENCES, 3)]  # one group, without the bad request's text


def test_prefixes_outside_the_output_vocabulary_or_a_shortlist_are_refused(
    checkpoint: Path, translator: Translator, tmp_path: Path
):
    codec = translator.codec
    writes = torch.tensor(sorted({0, 1, 2, 3, *codec.encode_target(["RED CAT"])[0]}))
    torch.manual_seed(0)
    config = ModelConfig(embed_dim=8, encoder_hidden=8, decoder_hidden=8)
    narrow = Translator(Seq2Seq(config, codec.src.vocab_size, codec.tgt.vocab_size, writes), codec)
    check = PrefixCheck(narrow)
    assert check.ids(Request(("red cat",), 1, prefixes=("RED CAT",))) == codec.encode_target(
        ["RED CAT"]
    )
    assert check.ids(Request(("red cat", "a"), 1, prefixes=(None, " "))) is None
    with pytest.raises(BadPrefix, match=r"^target_prefix\[1\]: the model never writes its piece"):
        check.ids(Request(("red cat", ""), 1, prefixes=("RED", "TREE")))  # an empty text too

    payload = load_checkpoint(checkpoint)
    model, _ = model_from_payload(payload, str(checkpoint))
    frequent = codec.encode_target(["RED CAT"])[0]  # every sentence may write these, no more
    table = {
        "candidates": torch.full((model.encoder.embed.num_embeddings, 1), frequent[0]).int(),
        "frequent": torch.tensor(frequent, dtype=torch.int32),
        "pairs": 0,
    }
    listed = tmp_path / "listed.pt"
    save_checkpoint({**payload, "shortlist": table}, listed)
    reference = Translator.from_checkpoint(listed, shortlist=True)
    batcher = Batcher(load_model([listed], shortlist=True).translator, wait_ms=50)
    requests = [
        Request(("red cat", "a tree"), beam, prefixes=("RED", "CAT RED")) for beam in (1, 2)
    ]
    requests += [Request(("red cat", "a tree"), beam, prefixes=("RED", "TREE")) for beam in (1, 2)]
    futures = [batcher.submit(request) for request in requests]
    batcher.start()
    try:
        for request, future in zip(requests[:2], futures, strict=False):
            assert_translator_answers(reference, request, future.result(30))
        for future in futures[2:]:
            assert _failure(future) == (
                "target_prefix[1]: a piece is outside the sentence's lexical shortlist (the "
                "service decodes with --shortlist), so the model cannot write it"
            )
    finally:
        batcher.close()


def test_an_onnx_export_answers_a_prefix_with_a_422(
    checkpoint: Path, tmp_path: Path, translator: Translator
):
    folder = tmp_path / "model"
    export_loaded(load(checkpoint), folder)
    exported = ExportTranslator.open(folder)
    batcher = Batcher(exported)  # its own check, for callers other than the app
    future = batcher.submit(Request(("red cat",), 1, prefixes=("RED",), single=True))
    plain = batcher.submit(Request(("red cat",), 1, prefixes=("",), single=True))
    batcher.start()
    try:
        assert _failure(future) == NO_PREFIX
        assert plain.result(30)[0][0].text == exported.translate_nbest(["red cat"], 1)[0][0].text
    finally:
        batcher.close()
    with ServerThread(create_app(load_export(folder), SETTINGS)) as server:
        for body in (
            {"text": "red cat", "target_prefix": "RED"},
            {"text": ["a", "red cat"], "target_prefix": [None, "RED"], "beam_size": 2},
        ):
            assert call(server.port, "POST", "/v1/translate", body)[::2] == (
                422,
                {"detail": NO_PREFIX},
            )
        status, _, answer = call(
            server.port, "POST", "/v1/translate", {"text": ["red cat"], "target_prefix": [None]}
        )
        assert status == 200 and answer["translations"][0]["text"]
    assert NO_PREFIX.startswith("target_prefix: ")
