"""The translation service end to end, over real HTTP on a free loopback port.

Every request goes through uvicorn, the FastAPI app and the batcher, in a model process
of its own (as the command line runs it) or in a worker thread; the expected answers come
from a separately loaded :class:`Translator`, so "the service answers what the library
answers" is what is checked. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_pairs
from helpers import ROOT
from test_ensemble import trained_checkpoint

pytest.importorskip(
    "fastapi", reason="the service needs the serve extra: pip install -e '.[serve]'"
)
uvicorn = pytest.importorskip(
    "uvicorn", reason="the service needs uvicorn: pip install -e '.[serve]'"
)

from mtkit.model.checkpoint import load_checkpoint, model_from_payload, save_checkpoint  # noqa: E402
from mtkit.search.int8 import int8_available  # noqa: E402
from mtkit.search.stream import GreedyStream  # noqa: E402
from mtkit.search.translator import Translator  # noqa: E402
from mtkit.serve.__main__ import bind, main  # noqa: E402
from mtkit.serve.app import STATIC_DIR, create_app  # noqa: E402
from mtkit.serve.batcher import (  # noqa: E402
    Batcher,
    BatcherClosed,
    QueueFull,
    Request,
    estimated_tokens,
)
from mtkit.serve.pool import ModelPool  # noqa: E402
from mtkit.serve.process import ModelProcess, WorkerSpec  # noqa: E402
from mtkit.serve.setup import ServeSettings, load_model  # noqa: E402

SENTENCES = ["red cat sleeps", "the big dog runs near the house", "a tree", "green dog"]
SETTINGS = ServeSettings(max_beam=8, max_lines=20, max_chars=2000, queue_size=64)
# The module's shared server decodes in a model process, as the command line does.
PROCESS_SETTINGS = replace(SETTINGS, model_process=True)


class ServerThread:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app: Any) -> None:
        self.sock = bind("127.0.0.1", 0)  # the command line's own listening socket
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


class ServeCommand:
    """``python -m mtkit.serve ARGS --port 0`` in a subprocess, its stderr in a file; the
    port comes from its banner. Killed on exit if it still runs."""

    def __init__(self, stderr: Path, *argv: str) -> None:
        self.argv = [sys.executable, "-m", "mtkit.serve", *argv, "--port", "0"]
        self.stderr = stderr
        self.port = 0

    def __enter__(self) -> ServeCommand:
        with self.stderr.open("wb") as err:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, stderr=err)
        deadline = time.monotonic() + 120
        while "http://" not in self.text():
            assert time.monotonic() < deadline and self.process.poll() is None, self.text()
            time.sleep(0.05)
        self.port = int(re.search(r"http://127.0.0.1:(\d+)/", self.text()).group(1))
        return self

    def text(self) -> str:
        return self.stderr.read_text(errors="replace")

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, http.client.HTTPResponse, Any]:
    """One request: (status, response, parsed JSON body or text)."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    if connection is None:
        conn.close()
    kind = response.getheader("content-type", "")
    parsed = json.loads(payload) if kind.startswith("application/json") else payload.decode()
    return response.status, response, parsed


def listener_pids(port: int) -> set[int]:
    """The processes of ``--worker inline --workers 2``: connections held at once
    alternate between them, and each names its process in /healthz."""
    kept = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(4)]
    try:
        return {call(port, "GET", "/healthz", connection=conn)[2]["pid"] for conn in kept}
    finally:
        for conn in kept:
            conn.close()


POST = b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory, seed=1)


@pytest.fixture(scope="module")
def translator(checkpoint: Path) -> Translator:
    return Translator.from_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def port(checkpoint: Path) -> Iterator[int]:
    with ServerThread(create_app(load_model([checkpoint]), PROCESS_SETTINGS)) as server:
        yield server.port


def translate(port: int, body: Any) -> tuple[int, Any]:
    status, _, parsed = call(port, "POST", "/v1/translate", body)
    return status, parsed


def _recording(translator: Translator) -> list[tuple[list[str], int]]:
    """Make ``translator`` record each search call's texts and beam size."""
    calls: list[tuple[list[str], int]] = []
    original = translator.translate_nbest

    def record(texts: list[str], **kwargs: Any) -> Any:
        calls.append((list(texts), kwargs["beam_size"]))
        return original(texts, **kwargs)

    translator.translate_nbest = record  # type: ignore[method-assign]
    return calls


def test_the_batcher_groups_by_beam_size_and_answers_each_request_alone(checkpoint: Path):
    translator = load_model([checkpoint]).translator
    reference = Translator.from_checkpoint(checkpoint)
    calls = _recording(translator)
    batcher = Batcher(translator, wait_ms=20)
    requests = [
        Request(("red cat sleeps", "a tree"), beam_size=3),
        Request(("green dog",), beam_size=1),
        Request(("the big dog runs", ""), beam_size=3, nbest=2, attention=True),
    ]
    futures = [batcher.submit(request) for request in requests]  # all waiting at start
    batcher.start()
    results = [future.result(30) for future in futures]
    batcher.close()
    # the greedy request goes through the stream, not translate_nbest
    assert calls == [(["red cat sleeps", "a tree", "the big dog runs", ""], 3)]
    for request, result in zip(requests, results, strict=True):
        alone = reference.translate_nbest(
            list(request.texts),
            beam_size=request.beam_size,
            nbest=request.nbest,
            return_attention=request.attention,
        )
        assert [[h.text for h in hyps] for hyps in result] == [[h.text for h in a] for a in alone]
        scores = [h.score for hyps in result for h in hyps]
        assert scores == pytest.approx([h.score for a in alone for h in a], abs=1e-4)
        with_attention = [h.attention is not None for hyps in result for h in hyps if h.tokens]
        assert with_attention == [request.attention] * len(with_attention)
    assert (batcher.stats.requests, batcher.stats.sentences, batcher.stats.batches) == (3, 5, 2)


def test_the_batcher_keeps_a_group_within_the_token_budget(checkpoint: Path):
    translator = load_model([checkpoint]).translator
    calls = _recording(translator)
    texts = ["red cat sleeps near the house", "a big dog", "green tree", "the cat", "blue dog"]
    tokens = [estimated_tokens(t) for t in texts]
    budget = tokens[0] + tokens[1]  # the first two fit together, not a third
    batcher = Batcher(translator, wait_ms=20, batch_tokens=2 * budget)  # beam 2 halves it
    futures = [batcher.submit(Request((text,), beam_size=2)) for text in texts]
    batcher.start()
    for future in futures:
        future.result(30)
    batcher.close()
    assert calls[0][0] == texts[:2]
    assert all(sum(estimated_tokens(t) for t in c[0]) <= budget for c in calls)
    assert sorted(t for c in calls for t in c[0]) == sorted(texts)


def test_a_group_gathers_while_answers_go_out_but_not_past_its_cap(checkpoint: Path):
    """Under load the next requests arrive while the last answers are being sent: the
    worker waits for them (quiet time and cap grow with the last search's duration)."""
    translator = load_model([checkpoint]).translator
    original = translator.translate_nbest
    started: list[tuple[list[str], float]] = []

    def slow_first(texts: list[str], **kwargs: Any) -> Any:
        started.append((list(texts), time.monotonic()))
        if len(started) == 1:
            time.sleep(1.0)  # the "previous batch": quiet time 50 ms, gathering 250 ms
        return original(texts, **kwargs)

    translator.translate_nbest = slow_first  # type: ignore[method-assign]
    batcher = Batcher(translator, wait_ms=10, max_wait_ms=1000)
    batcher.start()
    batcher.submit(Request(("green dog",), beam_size=2)).result(30)
    submitted = time.monotonic()
    first = batcher.submit(Request(("red cat",), beam_size=2))
    second = None
    for ping in range(60):  # answers going out every 10 ms for 600 ms, past the cap
        batcher.answered()
        if ping == 12:
            second = batcher.submit(Request(("a tree",), beam_size=2))
        time.sleep(0.01)
    assert second is not None
    first.result(30)
    second.result(30)
    batcher.close()
    assert [texts for texts, _ in started] == [["green dog"], ["red cat", "a tree"]]
    assert started[1][1] - submitted < 0.5  # the cap (250 ms), not the last answer


def test_greedy_requests_stream_and_each_gets_what_it_would_alone(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
):
    """Greedy requests join one running search at different steps (some while others are
    half decoded) and leave when done; answers equal the Translator's, one request at a time."""
    widths: list[int] = []
    original_step = GreedyStream.step

    def recording_step(stream: GreedyStream) -> Any:
        widths.append(len(stream))
        return original_step(stream)

    monkeypatch.setattr(GreedyStream, "step", recording_step)
    translator = load_model([checkpoint]).translator
    reference = Translator.from_checkpoint(checkpoint)
    calls = _recording(translator)
    batcher = Batcher(translator, max_rows=4)
    pool = tiny_pairs(12, seed=5)[0]
    requests = [
        Request((pool[0], "", pool[1]), beam_size=1, attention=True),
        Request(("",), beam_size=1),
        *[Request((text,), beam_size=1, attention=i % 3 == 0) for i, text in enumerate(pool[2:])],
    ]
    futures = [batcher.submit(request) for request in requests[:3]]
    batcher.start()
    for request in requests[3:]:  # joining a stream that is already running
        futures.append(batcher.submit(request))
        time.sleep(0.002)
    results = [future.result(30) for future in futures]
    batcher.close()
    assert calls == []
    for request, result in zip(requests, results, strict=True):
        alone = reference.translate_nbest(
            list(request.texts), beam_size=1, return_attention=request.attention
        )
        assert [[h.text for h in hyps] for hyps in result] == [[h.text for h in a] for a in alone]
        assert [h.tokens for hyps in result for h in hyps] == [h.tokens for a in alone for h in a]
        scores = [h.score for hyps in result for h in hyps]
        assert scores == pytest.approx([h.score for a in alone for h in a], abs=1e-5)
        for got, want in zip(result, alone, strict=True):
            assert (got[0].attention is None) == (want[0].attention is None)
            if want[0].attention is not None:
                torch.testing.assert_close(got[0].attention, want[0].attention, atol=1e-5, rtol=0)
    stats = batcher.stats
    assert (stats.requests, stats.sentences) == (len(requests), len(pool) + 2)
    output_steps = sum(len(h.tokens) + 1 for result in results for hyps in result for h in hyps)
    assert stats.steps < output_steps / 2  # the sentences were decoded together
    assert max(widths) == 4  # never more than max_rows


def test_a_failing_stream_fails_its_requests_and_the_next_ones_succeed(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
):
    original = GreedyStream.step
    failures = iter([True])

    def fail_once(stream: GreedyStream) -> Any:
        if next(failures, False):
            raise RuntimeError("a bug")
        return original(stream)

    monkeypatch.setattr(GreedyStream, "step", fail_once)
    batcher = Batcher(load_model([checkpoint]).translator)
    failing = batcher.submit(Request(("red cat", "a tree"), beam_size=1))
    batcher.start()
    with pytest.raises(RuntimeError, match="a bug"):
        failing.result(30)
    [[hyp]] = batcher.submit(Request(("red cat",), beam_size=1)).result(30)
    batcher.close()
    assert hyp.text == Translator.from_checkpoint(checkpoint).translate(["red cat"], beam_size=1)[0]
    assert batcher.stats.requests == 1


def test_closing_fails_waiting_requests_and_refuses_new_ones(checkpoint: Path):
    batcher = Batcher(load_model([checkpoint]).translator)
    waiting = batcher.submit(Request(("red cat",), beam_size=1))
    batcher.close()  # never started: the request is still waiting
    with pytest.raises(BatcherClosed):
        waiting.result(5)
    with pytest.raises(BatcherClosed):
        batcher.submit(Request(("red cat",), beam_size=1))


def test_the_listening_socket_lets_asyncio_disable_nagle():
    # asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP; without it
    # every response waits ~40 ms for the client's delayed ACK.
    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP


def test_translations_equal_the_translator(port: int, translator: Translator):
    status, single = translate(port, {"text": SENTENCES[0]})
    assert status == 200
    default_beam = translator.defaults.beam_size
    assert single["beam_size"] == default_beam and single["nbest"] == 1
    assert [t["text"] for t in single["translations"]] == translator.translate(SENTENCES[:1])

    lines = [*SENTENCES, ""]
    status, many = translate(port, {"text": lines, "beam_size": 1})
    assert status == 200
    assert [t["text"] for t in many["translations"]] == translator.translate(lines, beam_size=1)
    assert many["translations"][-1] == {
        "text": "",
        "score": 0.0,
        "nbest": [{"text": "", "score": 0.0}],
    }


def test_nbest_scores_and_attention(port: int, translator: Translator):
    body = {"text": [*SENTENCES, ""], "beam_size": 4, "nbest": 3, "attention": True}
    status, answer = translate(port, body)
    assert status == 200 and answer["nbest"] == 3
    expected = translator.translate_nbest(body["text"], beam_size=4, nbest=3, return_attention=True)
    for source, got, hyps in zip(body["text"], answer["translations"], expected, strict=True):
        assert [c["text"] for c in got["nbest"]] == [h.text for h in hyps]
        assert [c["score"] for c in got["nbest"]] == pytest.approx(
            [h.score for h in hyps], abs=1e-4
        )
        assert got["text"] == hyps[0].text and got["score"] == got["nbest"][0]["score"]
        if not source:
            assert got["attention"] is None
            continue
        attention = got["attention"]
        pieces, _ = translator.source_axis(source, hyps[0].attention)
        assert attention["source"] == pieces  # reading order, then </s>
        target = [translator.codec.tgt.id_to_piece(t) for t in hyps[0].tokens] + ["</s>"]
        assert attention["target"] == target
        assert len(attention["weights"]) == len(target)
        assert all(len(row) == len(pieces) for row in attention["weights"])
        assert [sum(row) for row in attention["weights"]] == pytest.approx(
            [1.0] * len(target), abs=2e-3
        )

    status, plain = translate(port, {"text": SENTENCES[:1], "beam_size": 4, "nbest": 2})
    assert status == 200 and "attention" not in plain["translations"][0]
    assert len(plain["translations"][0]["nbest"]) == 2


def test_model_health_page_and_schema(port: int, translator: Translator, checkpoint: Path):
    status, _, info = call(port, "GET", "/v1/model")
    assert status == 200
    assert (info["source_language"], info["target_language"]) == ("xx", "yy")
    assert info["checkpoints"] == [checkpoint.name] and info["ensemble_weights"] is None
    assert info["parameters"] == sum(p.numel() for p in translator.model.parameters())
    assert info["models"][0]["decoder_hidden"] == translator.model.cfg.decoder_hidden
    assert info["vocabulary"]["reverse_source"] is True
    assert (
        info["server"]["max_beam"] == 8
        and info["server"]["beam_size"] == translator.defaults.beam_size
    )
    assert info["training_data"][0]["src_lang"] == "xx"

    assert info["server"]["model_process"] is True and info["server"]["threads"] == 1
    assert (info["device"], info["precision"]) == ("cpu", "fp32")

    status, _, health = call(port, "GET", "/healthz")
    assert status == 200 and health["status"] == "ok"

    status, response, page = call(port, "GET", "/")
    assert status == 200 and response.getheader("content-type").startswith("text/html")
    assert 'id="translate"' in page and "/static/app.js" in page
    for name in ("app.js", "style.css"):
        assert call(port, "GET", f"/static/{name}")[0] == 200

    status, _, schema = call(port, "GET", "/openapi.json")
    assert status == 200 and "/v1/translate" in schema["paths"]


def test_the_page_loads_nothing_from_other_hosts():
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        # The SVG namespace is a name, not a request; anything else absolute would be one.
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"'`)]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (path.name, urls)


BAD_BODIES = [
    (b"{not json", 422),
    (b"[1, 2]", 422),
    (b"{}", 422),
    (json.dumps({"text": 5}).encode(), 422),
    (json.dumps({"text": ["a", 3]}).encode(), 422),
    (json.dumps({"text": "a", "beam_size": "3"}).encode(), 422),
    (json.dumps({"text": "a", "attention": "yes"}).encode(), 422),
    (json.dumps({"text": "a", "beam": 3}).encode(), 422),
    (json.dumps({"text": "a", "beam_size": 0}).encode(), 422),
    (json.dumps({"text": "a", "beam_size": 9}).encode(), 422),
    (json.dumps({"text": "a", "beam_size": 3, "nbest": 4}).encode(), 422),
    (json.dumps({"text": "a", "nbest": 0}).encode(), 422),
    (json.dumps({"text": ["a"] * 21}).encode(), 413),
    (json.dumps({"text": ["a" * 1000, "b" * 1001]}).encode(), 413),
    (b'{"text": "' + b"a" * 100_000 + b'"}', 413),
]


@pytest.mark.parametrize(("raw", "expected"), BAD_BODIES, ids=lambda v: str(v)[:30])
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    port: int, translator: Translator, raw: bytes, expected: int
):
    status, _, answer = call(port, "POST", "/v1/translate", raw=raw)
    assert status == expected
    assert answer["detail"]
    if isinstance(answer["detail"], str):
        assert len(answer["detail"].splitlines()) == 1
    status, good = translate(port, {"text": "red cat", "beam_size": 2})
    assert (
        status == 200
        and good["translations"][0]["text"] == translator.translate(["red cat"], beam_size=2)[0]
    )


def test_error_messages_name_the_limit(port: int):
    assert translate(port, {"text": "a", "beam_size": 9})[1]["detail"] == (
        "beam_size=9 is out of range; expected 1..8"
    )
    assert (
        translate(port, {"text": ["a"] * 21})[1]["detail"]
        == "21 texts; the limit is 20 (--max-lines)"
    )
    assert translate(port, {"text": []}) == (200, {"translations": [], "beam_size": 3, "nbest": 1})


def test_a_full_queue_answers_503_with_retry_after(checkpoint: Path, translator: Translator):
    served = load_model([checkpoint])
    entered, release = threading.Event(), threading.Event()
    original = served.translator.translate_nbest

    def gated(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return original(*args, **kwargs)

    served.translator.translate_nbest = gated  # type: ignore[method-assign]
    app = create_app(served, ServeSettings(queue_size=1, batch_wait_ms=0))
    with ServerThread(app) as server:
        answers: dict[str, tuple[int, Any]] = {}

        def send(text: str) -> None:
            answers[text] = translate(server.port, {"text": text})

        first = threading.Thread(target=send, args=("red cat",))
        first.start()
        assert entered.wait(30)  # the worker holds "red cat"
        second = threading.Thread(target=send, args=("a tree",))
        second.start()
        deadline = time.monotonic() + 30
        while call(server.port, "GET", "/healthz")[2]["queued"] < 1:  # "a tree" waits
            assert time.monotonic() < deadline
            time.sleep(0.01)
        status, response, answer = call(server.port, "POST", "/v1/translate", {"text": "green dog"})
        assert status == 503 and response.getheader("retry-after") == "1"
        assert answer["detail"] == "the server is busy; retry shortly"
        release.set()
        first.join(30)
        second.join(30)
        for text in ("red cat", "a tree"):
            status, answer = answers[text]
            assert (
                status == 200
                and answer["translations"][0]["text"] == translator.translate([text])[0]
            )
        assert translate(server.port, {"text": "green dog"})[0] == 200


def test_a_failing_translation_is_a_json_500_and_the_server_goes_on(checkpoint: Path):
    served = load_model([checkpoint])
    original = served.translator.translate_nbest
    failures = iter([True])

    def fail_once(*args: Any, **kwargs: Any) -> Any:
        if next(failures, False):
            raise RuntimeError("a bug")
        return original(*args, **kwargs)

    served.translator.translate_nbest = fail_once  # type: ignore[method-assign]
    with ServerThread(create_app(served)) as server:
        status, answer = translate(server.port, {"text": "red cat"})
        assert (status, answer) == (500, {"detail": "internal error (RuntimeError)"})
        assert translate(server.port, {"text": "red cat"})[0] == 200
        assert call(server.port, "GET", "/healthz")[2]["status"] == "ok"


def _model_process(checkpoint: Path, **changes: Any) -> ModelProcess:
    spec = WorkerSpec((str(checkpoint),), None, "cpu", "fp32", False, 1, 3.0, 64)
    return ModelProcess(replace(spec, **changes))


def _same_hypotheses(got: list[Any], want: list[Any]) -> bool:
    for mine, theirs in zip(got, want, strict=True):
        if (mine.text, mine.tokens) != (theirs.text, theirs.tokens):
            return False
        if abs(mine.score - theirs.score) > 1e-5:
            return False
        if (mine.attention is None) != (theirs.attention is None):
            return False
        if mine.attention is not None and not torch.allclose(
            mine.attention, theirs.attention, atol=1e-5
        ):
            return False
    return True


def test_the_model_process_answers_like_the_translator_and_refuses_past_its_queue(
    checkpoint: Path, translator: Translator
):
    worker = _model_process(checkpoint, wait_ms=0.0, queue_size=1)
    worker.start()
    texts = tiny_pairs(20, seed=3)[0]
    request = Request(tuple(texts), beam_size=4, nbest=2, attention=True)
    try:
        # Sent at once: one group decodes, one request may wait, the others are refused.
        futures = [worker.submit(request) for _ in range(30)]
        outcomes = [future.exception(120) for future in futures]
        refused = sum(isinstance(error, QueueFull) for error in outcomes)
        assert 0 < refused < 30
        assert all(error is None or isinstance(error, QueueFull) for error in outcomes)
        expected = translator.translate_nbest(texts, beam_size=4, nbest=2, return_attention=True)
        for future, error in zip(futures, outcomes, strict=True):
            if error is None:
                got = future.result()
                assert all(map(_same_hypotheses, got, expected))
        assert worker.stats.requests == 30 - refused and worker.queued == 0
        assert worker.facts == {"device": "cpu", "precision": "fp32", "threads": 1}
    finally:
        worker.close()
    assert not worker.alive
    with pytest.raises(BatcherClosed, match="shutting down"):
        worker.submit(request)


def test_a_pool_of_int8_model_processes_answers_like_the_translator(checkpoint: Path):
    """Two model processes, each with its own stream, at the precision a CPU user picks."""
    precision = "int8" if int8_available() else "fp32"
    translator = Translator.from_checkpoint(checkpoint, precision=precision)
    spec = WorkerSpec((str(checkpoint),), None, "cpu", precision, False, 1, 3.0, 64)
    pool = ModelPool(spec, workers=2)
    pool.start()
    texts = tiny_pairs(24, seed=5)[0]
    try:
        futures = [pool.submit(Request((text,), 1, 1, False)) for text in texts]
        futures.append(pool.submit(Request(tuple(texts[:5]), 3, 2, True)))
        got = [future.result(120) for future in futures]
        for text, answer in zip(texts, got[:-1], strict=True):
            assert _same_hypotheses(answer[0], translator.translate_nbest([text], beam_size=1)[0])
        expected = translator.translate_nbest(
            texts[:5], beam_size=3, nbest=2, return_attention=True
        )
        assert all(map(_same_hypotheses, got[-1], expected))
        # Both processes took part, and the counters add up over them.
        assert all(member.stats.requests > 0 for member in pool.members)
        assert pool.stats.requests == len(futures) and pool.stats.sentences == len(texts) + 5
        assert pool.facts["workers"] == 2 and pool.facts["threads"] == 2 and pool.alive
    finally:
        pool.close()
    assert not pool.alive


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")
def test_a_model_process_that_cannot_start_is_a_one_line_error(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
):
    status, err = _in_process(capsys, str(checkpoint), "--device", "cuda", "--port", "0")
    assert (status, err) == (
        2,
        "mtkit-serve: error: device 'cuda' requested but no CUDA device is available",
    )


def test_the_service_decodes_through_a_shortlist(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    payload = load_checkpoint(checkpoint)
    model, _ = model_from_payload(payload, str(checkpoint))
    sources, targets = model.encoder.embed.num_embeddings, model.decoder.embed.num_embeddings
    generator = torch.Generator().manual_seed(0)
    table = {  # an arbitrary table: what matters is that the service uses it as the library does
        "candidates": torch.randint(4, targets, (sources, 3), generator=generator).int(),
        "frequent": torch.arange(4, 10, dtype=torch.int32),
        "pairs": 0,
    }
    listed = tmp_path / "listed.pt"
    save_checkpoint({**payload, "shortlist": table}, listed)
    reference = Translator.from_checkpoint(listed, shortlist=True)
    app = create_app(load_model([listed], shortlist=True), PROCESS_SETTINGS)
    with ServerThread(app) as server:
        for beam in (1, 2):
            status, answer = translate(server.port, {"text": SENTENCES, "beam_size": beam})
            assert status == 200
            texts = [t["text"] for t in answer["translations"]]
            assert texts == reference.translate(SENTENCES, beam_size=beam)
        assert call(server.port, "GET", "/v1/model")[2]["vocabulary"]["shortlist"] is True
    status, err = _in_process(capsys, str(checkpoint), str(checkpoint), "--shortlist")
    assert (status, err) == (
        2,
        "mtkit-serve: error: --shortlist works with one checkpoint, not an ensemble",
    )


def test_the_inline_worker_answers_like_the_translator(
    checkpoint: Path, translator: Translator, monkeypatch: pytest.MonkeyPatch
):
    """Greedy requests decoded on the event loop's thread, beam ones on the worker thread:
    concurrent clients get what translating each request alone gives."""
    served = load_model([checkpoint])
    calls = _recording(served.translator)
    monkeypatch.setattr("mtkit.serve.inline.YIELDS", 1)  # any number of yields answers alike
    app = create_app(served, replace(SETTINGS, inline=True))
    pool = tiny_pairs(24, seed=11)[0]
    expected = {beam: translator.translate(pool, beam_size=beam) for beam in (1, 2)}
    answers: dict[tuple[int, int], Any] = {}
    with ServerThread(app) as server:

        def client(first: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            for index in range(first, len(pool), 6):
                beam = 2 if index % 5 == 0 else 1
                body = {"text": pool[index], "beam_size": beam}
                answers[index, beam] = call(server.port, "POST", "/v1/translate", body, None, conn)
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        health = call(server.port, "GET", "/healthz")[2]
    assert len(answers) == len(pool)
    for (index, beam), (status, _, answer) in answers.items():
        assert status == 200 and answer["translations"][0]["text"] == expected[beam][index]
    beams = sum(1 for _, beam in answers if beam == 2)
    assert all(beam == 2 for _, beam in calls) and sum(len(t) for t, _ in calls) == beams
    assert health["requests"] == len(pool) and health["steps"] > 0 and health["pid"] == os.getpid()


def test_closing_the_inline_worker_fails_waiting_requests(checkpoint: Path):
    from mtkit.serve.inline import InlineBatcher

    async def scenario() -> tuple[list[Any], Any]:
        batcher = InlineBatcher(load_model([checkpoint]).translator)
        batcher.start()
        futures = [batcher.submit(Request((text,), beam_size=1)) for text in SENTENCES]
        batcher.close()  # before the greedy task has run: every request is still waiting
        await batcher.drain()
        outcomes = [future.exception(5) for future in futures]
        try:
            batcher.submit(Request(("red cat",), beam_size=1))
        except BatcherClosed as error:
            return outcomes, error
        return outcomes, None

    outcomes, refused = asyncio.run(scenario())
    assert all(isinstance(error, BatcherClosed) for error in outcomes)
    assert isinstance(refused, BatcherClosed)


def test_load_1000_requests_from_32_clients(port: int, translator: Translator):
    """Bounded load on loopback: no failure, every answer equal to the batch translation."""
    pool = tiny_pairs(50, seed=7)[0]
    expected = {beam: translator.translate(pool, beam_size=beam) for beam in (1, 3)}
    jobs = [(i % len(pool), 1 if i % 2 else 3) for i in range(1000)]
    problems: list[str] = []
    before = call(port, "GET", "/healthz")[2]

    def client(first: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for j in range(first, len(jobs), 32):
                index, beam = jobs[j]
                status, _, answer = call(
                    port,
                    "POST",
                    "/v1/translate",
                    {"text": pool[index], "beam_size": beam},
                    connection=conn,
                )
                if status != 200:
                    problems.append(f"request {j}: HTTP {status} {answer}")
                elif answer["translations"][0]["text"] != expected[beam][index]:
                    problems.append(f"request {j}: {answer['translations'][0]['text']!r}")
        except Exception as error:  # a failed request is a finding, not a crash of the test
            problems.append(f"client {first}: {error!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert problems == []
    after = call(port, "GET", "/healthz")[2]
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == 1000
    # batches: beam groups, and groups of greedy requests that joined the running search
    assert batches < requests / 4, f"{batches} batches for {requests} requests: no dynamic batching"
    lengths = [len(hyps[0].tokens) + 1 for hyps in translator.translate_nbest(pool, beam_size=1)]
    greedy_tokens = sum(lengths[index] for index, beam in jobs if beam == 1)
    steps = after["steps"] - before["steps"]
    assert steps < greedy_tokens / 4, f"{steps} steps for {greedy_tokens} greedy tokens"


def _in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    return int(stop.value.code or 0), capsys.readouterr().err.strip()


def test_command_line_errors_are_one_line(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):
    status, err = _in_process(capsys, str(tmp_path / "missing.pt"))
    assert (
        status == 2
        and err == f"mtkit-serve: error: {tmp_path / 'missing.pt'}: no such checkpoint file"
    )
    status, err = _in_process(capsys, str(checkpoint), str(checkpoint), "--weights", "1")
    assert (
        status == 2
        and err == "mtkit-serve: error: --weights: expected 2 numbers (one per checkpoint), got 1"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        status, err = _in_process(capsys, str(checkpoint), "--port", str(port))
    assert status == 2 and err.startswith(
        f"mtkit-serve: error: --host 127.0.0.1 --port {port}: cannot listen"
    )
    status, err = _in_process(capsys, str(checkpoint), "--beam-size", "9", "--max-beam", "8")
    assert status == 2 and "--beam-size must not exceed --max-beam" in err
    monkeypatch.setattr("mtkit.serve.__main__.available_cores", lambda: 4)
    status, err = _in_process(capsys, str(checkpoint), "--workers", "2", "--worker", "thread")
    assert status == 2 and "--workers needs --worker process" in err
    status, err = _in_process(capsys, str(checkpoint), "--workers", "0")
    assert status == 2 and err.endswith(
        "mtkit-serve: error: argument --workers: '0' is not valid; expected an integer from 1 to 4"
    )


def test_python_m_mtkit_serve_runs_and_stops_cleanly(checkpoint: Path, translator: Translator):
    command = [sys.executable, "-m", "mtkit.serve", str(checkpoint), str(checkpoint)]
    command += ["--port", "0", "--threads", "1"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []

        def read_stderr() -> None:
            for line in process.stderr:
                lines.append(line)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while not any("http://" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            time.sleep(0.05)
        banner = next(line for line in lines if "http://" in line)
        assert banner.startswith("mtkit-serve: xx -> yy (best.pt, best.pt) on http://127.0.0.1:")
        port = int(re.search(r":(\d+)/", banner).group(1))
        status, answer = translate(port, {"text": SENTENCES, "beam_size": 2})
        assert status == 200
        # an ensemble of a model with itself translates like the model
        assert [t["text"] for t in answer["translations"]] == translator.translate(
            SENTENCES, beam_size=2
        )
        assert call(port, "GET", "/v1/model")[2]["ensemble_weights"] == [0.5, 0.5]
        process.terminate()  # uvicorn shuts down gracefully, then exits by the signal
        assert process.wait(30) in (0, -signal.SIGTERM)
        reader.join(10)
        assert not any("Traceback" in line for line in lines), "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_inline_service_processes_share_one_port_and_stop_cleanly(
    checkpoint: Path, translator: Translator, capsys: pytest.CaptureFixture[str]
):
    """``--worker inline --workers 2``: two processes, each serving HTTP and decoding, on
    one socket; SIGTERM stops both, and a model that cannot load is a one-line error."""
    command = [sys.executable, "-m", "mtkit.serve", str(checkpoint), "--port", "0"]
    command += ["--threads", "1", "--worker", "inline", "--workers", "2", "--beam-size", "1"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    pids: set[int] = set()
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        assert banner.startswith("mtkit-serve: xx -> yy (best.pt) on http://127.0.0.1:"), banner
        port = int(re.search(r":(\d+)/", banner).group(1))
        kept = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(8)]
        owners = [call(port, "GET", "/healthz", connection=conn)[2]["pid"] for conn in kept]
        assert sorted(Counter(owners).values()) == [4, 4]  # connections alternate
        for conn in kept:
            conn.close()
        for _ in range(8):  # fresh connections: the processes take them as they come
            status, answer = translate(port, {"text": SENTENCES})
            assert status == 200
            assert [t["text"] for t in answer["translations"]] == translator.translate(
                SENTENCES, beam_size=1
            )
            pids.add(call(port, "GET", "/healthz")[2]["pid"])
        assert process.pid not in pids
        process.send_signal(signal.SIGINT)  # as Ctrl-C: the processes finish and stop
        assert process.wait(30) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    for pid in pids:  # no service process outlives the command
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    if not torch.cuda.is_available():
        status, err = _in_process(
            capsys,
            str(checkpoint),
            "--device",
            "cuda",
            "--port",
            "0",
            "--worker",
            "inline",
            "--workers",
            "2",
        )
        assert (status, err) == (
            2,
            "mtkit-serve: error: device 'cuda' requested but no CUDA device is available",
        )
