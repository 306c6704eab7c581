"""Hostile requests and options against every kind of service worker: none stops it.

Each kind runs as the command line runs it: a model process (the default), two model
processes (``--workers 2``), a worker thread, the inline worker, and (as a subprocess)
``--worker inline --workers 2``. After each hostile request the service must still be
healthy, with the same worker processes, and answer a valid request as the Translator
does. Killing workers, stop signals and the fuzz are in tests/test_serve_faults.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from test_ensemble import trained_checkpoint
from test_serve import POST, SETTINGS, ServeCommand, ServerThread, call, listener_pids

from mtkit.search.translator import Translator
from mtkit.serve.__main__ import Bounded, build_parser, main
from mtkit.serve.app import create_app
from mtkit.serve.batcher import Batcher, Request
from mtkit.serve.child import _serve_pipe
from mtkit.serve.inline import InlineBatcher
from mtkit.serve.limits import body_limit
from mtkit.serve.schemas import TranslateBody
from mtkit.serve.setup import load_model

KINDS = ("process", "workers2", "thread", "inline", "inline-workers2")
LIMIT = body_limit(SETTINGS.max_chars)  # the body limit of the services here


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory, seed=1)


@pytest.fixture(scope="module")
def translator(checkpoint: Path) -> Translator:
    return Translator.from_checkpoint(checkpoint)


@dataclass
class Service:
    """A running service of one worker kind: its port, and the ids of the processes that
    decode (none for the kinds that decode in this test's process)."""

    kind: str
    port: int
    worker_pids: Callable[[], set[int]]


@pytest.fixture(scope="module", params=KINDS)
def service(
    request: pytest.FixtureRequest, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    kind = request.param
    if kind == "inline-workers2":
        stderr = tmp_path_factory.mktemp("serve") / "stderr.txt"
        argv = [str(checkpoint), "--threads", "1", "--worker", "inline", "--workers", "2"]
        argv += ["--max-beam", "8", "--max-lines", "20", "--max-chars", "2000"]
        with ServeCommand(stderr, *argv) as command:
            yield Service(kind, command.port, lambda: listener_pids(command.port))
        return
    settings = {
        "process": replace(SETTINGS, model_process=True),
        "workers2": replace(SETTINGS, model_process=True, workers=2),
        "thread": SETTINGS,
        "inline": replace(SETTINGS, inline=True),
    }[kind]
    app = create_app(load_model([checkpoint]), settings)
    worker = app.state.batcher

    def pids() -> set[int]:
        members = getattr(worker, "members", [worker])
        return {member.pid for member in members if getattr(member, "pid", None)}

    with ServerThread(app) as server:
        yield Service(kind, server.port, pids)


def assert_still_serving(service: Service, pids: set[int], translator: Translator) -> None:
    """Healthy, the same worker processes, and a valid request answered as alone."""
    status, _, health = call(service.port, "GET", "/healthz")
    assert (status, health["status"]) == (200, "ok"), health
    assert service.worker_pids() == pids
    status, _, answer = call(service.port, "POST", "/v1/translate", {"text": "red cat"})
    assert status == 200
    assert answer["translations"][0]["text"] == translator.translate(["red cat"])[0]


def _surrogate(field: str, index: int, code: int) -> str:
    where = f"{field}: character {index}"
    return f"{where} is a lone surrogate (U+{code:04X}); expected valid Unicode text"


MALFORMED_TEXT = [  # (raw body, status, detail)
    (rb'{"text": "\ud800"}', 422, _surrogate("text", 0, 0xD800)),
    (rb'{"text": "ab\udc00"}', 422, _surrogate("text", 2, 0xDC00)),
    (rb'{"text": "\ud800\ud800"}', 422, _surrogate("text", 0, 0xD800)),  # high + high
    (rb'{"text": "x\udc00\ud800"}', 422, _surrogate("text", 1, 0xDC00)),  # a pair reversed
    (rb'{"text": "\udbff"}', 422, _surrogate("text", 0, 0xDBFF)),
    (rb'{"text": ["red cat", "a \ud83d"]}', 422, _surrogate("text[1]", 2, 0xD83D)),
    (rb'{"text": "a", "target_prefix": "\udc00"}', 422, _surrogate("target_prefix", 0, 0xDC00)),
    (
        rb'{"text": ["a", "b"], "target_prefix": [null, "A\ud800"]}',
        422,
        _surrogate("target_prefix[1]", 1, 0xD800),
    ),
    (b'{"text": "a\xed\xa0\x80"}', 422, _surrogate("text", 1, 0xD800)),  # in UTF-8 bytes
    (b'{"text": "\xed\xa0\xbd\xed\xb8\x80"}', 422, _surrogate("text", 0, 0xD83D)),  # CESU-8
    (rb'{"text": "\ud8"}', 422, None),  # a truncated escape: invalid JSON
    (rb'{"text": "\uZZZZ"}', 422, None),
    (rb'{"text": "a", "\ud800": 1}', 422, None),  # in a field's name
    (b'{"text": "\xff\xfe"}', 400, None),  # not UTF-8 at all
]


def test_malformed_unicode_is_a_422_naming_the_field_and_position(
    service: Service, translator: Translator
):
    pids = service.worker_pids()
    for raw, expected, detail in MALFORMED_TEXT:
        status, _, answer = call(service.port, "POST", "/v1/translate", raw=raw)
        assert status == expected, (raw, answer)
        if detail is not None:
            assert answer == {"detail": detail}, raw
        else:
            assert answer["detail"], raw
        assert_still_serving(service, pids, translator)
    # a surrogate pair escaped as JSON does it is one valid character
    status, _, answer = call(
        service.port, "POST", "/v1/translate", raw=rb'{"text": "\ud83d\ude00 a"}'
    )
    assert status == 200 and len(answer["translations"]) == 1


def _fields() -> list[str]:
    return list(TranslateBody.model_json_schema()["properties"])


def _names(detail: Any, field: str) -> bool:
    """Whether an error detail names ``field``."""
    if isinstance(detail, str):
        return detail.startswith(f"{field}=") or detail.startswith(f"{field}:")
    return any(error["loc"][:2] == ["body", field] for error in detail)


BAD_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e308", b"1.5",
               b"1" + b"0" * 30, b"-1" + b"0" * 30, b"0", b"-1", b"true", b"null"]  # fmt: skip


def test_non_finite_huge_and_wrong_numbers_are_a_422_naming_the_field(
    service: Service, translator: Translator
):
    """Every field of the request schema (the numeric ones above all) gets every value."""
    pids = service.worker_pids()
    assert {"beam_size", "nbest"} <= set(_fields())
    valid = {("beam_size", b"null"), ("attention", b"true"), ("target_prefix", b"null")}
    for field in _fields():
        for value in BAD_NUMBERS:
            if (field, value) in valid:
                continue
            rest = b"" if field == "text" else b'"text": "red cat", '
            raw = b"{" + rest + b'"' + field.encode() + b'": ' + value + b"}"
            status, _, answer = call(service.port, "POST", "/v1/translate", raw=raw)
            assert status == 422 and _names(answer["detail"], field), (raw, answer)
            if value in (b"NaN", b"Infinity", b"-Infinity"):
                assert f"(got {value.decode()})" in json.dumps(answer["detail"]), answer
    assert_still_serving(service, pids, translator)


UNKNOWN = (
    "the target sentencepiece model does not know some of its characters; "
    "expected text the model can write"
)
BAD_PREFIXES = [  # (body, detail): refused before the request joins the stream or a group
    ({"text": "red cat", "target_prefix": "CAT 猫"}, f"target_prefix: {UNKNOWN}"),
    (
        {"text": ["red cat", "a tree"], "target_prefix": ["CAT", "猫"], "beam_size": 1},
        f"target_prefix[1]: {UNKNOWN}",
    ),
    (
        {"text": "red cat", "target_prefix": ["CAT"]},
        "target_prefix: expected a string or null, as text is a string; got a list",
    ),
    (
        {"text": ["red cat"], "target_prefix": "CAT"},
        "target_prefix: expected a list of 1 (one per text, null for none), as text is a list; "
        "got a string",
    ),
    (
        {"text": ["red cat", "a tree"], "target_prefix": ["CAT"]},
        "target_prefix: expected a list of 2 (one per text, null for none); got 1",
    ),
]


def test_target_prefixes_are_forced_and_a_bad_one_is_a_422_that_fails_no_other_request(
    service: Service, translator: Translator
):
    """Good and bad prefixed requests sent at once (greedy and beam, so that they share
    the stream or a group): each good one gets the Translator's answer, each bad one
    a 422 naming its field, and the service serves on."""
    pids = service.worker_pids()
    texts, prefixes = ["red cat sleeps", "", "a tree", "green dog"], ["HOUSE", "DOG", None, ""]
    good = [{"text": texts, "target_prefix": prefixes, "beam_size": b} for b in (1, 3)]
    good.append({"text": "red cat", "target_prefix": "DOG", "beam_size": 1})
    bodies = [*good, *(body for body, _ in BAD_PREFIXES)]
    answers: dict[int, Any] = {}

    def send(index: int) -> None:
        answers[index] = call(service.port, "POST", "/v1/translate", bodies[index])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    details = {json.dumps(b, sort_keys=True): d for b, d in BAD_PREFIXES}
    for index, body in enumerate(bodies):
        status, _, answer = answers[index]
        detail = details.get(json.dumps(body, sort_keys=True))
        if detail is not None:
            assert (status, answer) == (422, {"detail": detail}), body
            continue
        assert status == 200, (body, answer)
        given = body["text"] if isinstance(body["text"], list) else [body["text"]]
        prefix = body["target_prefix"]
        want = translator.translate_nbest(
            given,
            beam_size=body["beam_size"],
            prefix=prefix if isinstance(prefix, list) else [prefix],
        )
        got = answer["translations"]
        assert [t["text"] for t in got] == [hyps[0].text for hyps in want], body
        assert [t["score"] for t in got] == pytest.approx([h[0].score for h in want], abs=1e-5)
    assert_still_serving(service, pids, translator)


def _raw_request(port: int, head: bytes, body: bytes = b"", stop_after: float = 30) -> bytes:
    """Send ``head`` and ``body`` on a fresh connection (the body stops there, whatever
    the head declared) and read until the server closes or ``stop_after`` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=stop_after) as sock:
        sock.sendall(head + body)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and _complete(answer):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _status_and_json(answer: bytes) -> tuple[int, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body) if b"application/json" in head.lower() else body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_the_body_limit_counts_the_bytes_read_whatever_the_framing(
    service: Service, translator: Translator
):
    pids = service.worker_pids()
    text = b'{"text": "' + b"a" * (LIMIT + 1000) + b'"}'
    # chunked, no Content-Length: 413 once past the limit, though the body never ends
    chunks = b"".join(_chunk(text[i : i + 4096]) for i in range(0, LIMIT + 1000, 4096))
    answer = _raw_request(service.port, POST + b"Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert _status_and_json(answer) == (
        413,
        {"detail": f"request body over the limit of {LIMIT} bytes"},
    )
    assert b"connection: close" in answer.lower()
    # a declared length over the limit: 413 before a byte of the body (or a 100 Continue)
    head = POST + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1)
    answer = _raw_request(service.port, head)
    assert _status_and_json(answer) == (
        413,
        {"detail": f"request body of {LIMIT + 1} bytes; the limit is {LIMIT} bytes"},
    )
    head = POST + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n"  # absurd: no crash
    assert _status_and_json(_raw_request(service.port, head))[0] in (400, 413)
    # a length that lies low: the rest is read as the next request, which is not one
    answer = _raw_request(service.port, POST + b"Content-Length: 20\r\n\r\n", text[:100_000])
    assert 400 <= _status_and_json(answer)[0] < 500
    # neither length nor chunks: no body at all
    answer = _raw_request(service.port, POST + b"\r\n", text[:1000])
    assert 400 <= _status_and_json(answer)[0] < 500
    # within the limit, chunked: read whole and answered
    body = json.dumps({"text": ["red cat", "a tree"]}).encode()
    chunks = b"".join(_chunk(body[i : i + 3]) for i in range(0, len(body), 3))
    answer = _raw_request(
        service.port, POST + b"Transfer-Encoding: chunked\r\n\r\n", chunks + b"0\r\n\r\n"
    )
    status, parsed = _status_and_json(answer)
    assert status == 200
    assert [t["text"] for t in parsed["translations"]] == translator.translate(
        ["red cat", "a tree"]
    )
    assert_still_serving(service, pids, translator)


# -- the command line: every number option has a range -------------------------------------


def _bounded_options() -> list[tuple[str, Bounded]]:
    parser = build_parser()
    options = []
    for action in parser._actions:
        assert action.type not in (int, float), f"{action.option_strings}: a number without a range"
        if isinstance(action.type, Bounded):
            options.append((action.option_strings[0], action.type))
    return options


OPTIONS = _bounded_options()


@pytest.mark.parametrize(("option", "bounds"), OPTIONS, ids=[option for option, _ in OPTIONS])
def test_every_number_option_rejects_non_finite_and_absurd_values(
    option: str, bounds: Bounded, capsys: pytest.CaptureFixture[str]
):
    too_big = str(int(bounds.high) + 1) if bounds.integer else str(bounds.high * 10)
    values = ["nan", "inf", "-inf", "1e400", "1e9", str(bounds.low - 1), too_big, "ten", ""]
    for value in values:
        with pytest.raises(SystemExit) as stop:
            main(["x.pt", f"{option}={value}"])
        assert stop.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last == (
            f"mtkit-serve: error: argument {option}: {value!r} is not valid; "
            f"expected {bounds.range}"
        )
    for value in (bounds.low, bounds.high):  # the ends of the range are valid
        args = build_parser().parse_args(["x.pt", f"{option}={value}"])
        assert getattr(args, option[2:].replace("-", "_")) in (value, [value])


def test_timing_options_name_their_range(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["x.pt", "--batch-wait-ms", "inf"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "mtkit-serve: error: argument --batch-wait-ms: 'inf' is not valid; "
        "expected a number from 0 to 1000"
    )


def test_threads_and_workers_are_capped_by_the_usable_cores(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr("mtkit.serve.__main__.available_cores", lambda: 3)
    assert build_parser().parse_args(["x.pt", "--workers", "3", "--threads", "3"]).workers == 3
    for option in ("--workers", "--threads"):
        with pytest.raises(SystemExit):
            main(["x.pt", option, "4"])
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"mtkit-serve: error: argument {option}: '4' is not valid; "
            "expected an integer from 1 to 3"
        )
    assert "an integer from 1 to 3, the cores this process may use" in " ".join(
        build_parser().format_help().split()
    )


# -- what escapes a request's handling fails that request alone ----------------------------


def test_a_batcher_survives_a_failing_search_and_a_failing_answer(checkpoint: Path):
    translator = load_model([checkpoint]).translator
    reference = Translator.from_checkpoint(checkpoint)
    original_search = translator.translate_nbest
    original_decode = translator.codec.decode_target
    failures = {"search": 1, "decode": 1}

    def search(*args: Any, **kwargs: Any) -> Any:
        if failures["search"]:
            failures["search"] -= 1
            return None  # not a list: cutting it into answers fails
        return original_search(*args, **kwargs)

    def decode(*args: Any, **kwargs: Any) -> Any:
        if failures["decode"]:
            failures["decode"] -= 1
            raise RuntimeError("a bug while answering")
        return original_decode(*args, **kwargs)

    translator.translate_nbest = search  # type: ignore[method-assign]
    translator.codec.decode_target = decode  # type: ignore[method-assign]
    batcher = Batcher(translator, wait_ms=0)
    batcher.start()
    try:
        assert isinstance(batcher.submit(Request(("red cat",), 2)).exception(30), TypeError)
        error = batcher.submit(Request(("red cat",), 1)).exception(30)
        assert isinstance(error, RuntimeError) and str(error) == "a bug while answering"
        assert batcher.health == ("ok", None)
        for beam in (1, 2):
            got = batcher.submit(Request(("red cat", "a tree"), beam)).result(30)
            want = reference.translate(["red cat", "a tree"], beam_size=beam)
            assert [hyps[0].text for hyps in got] == want
    finally:
        batcher.close()
    assert batcher.health == ("stopped", "the service is shutting down")


def test_the_inline_worker_survives_a_failing_greedy_task(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
):
    reference = Translator.from_checkpoint(checkpoint)
    failures = [RuntimeError("a bug in the task")]
    original = InlineBatcher._take

    def take(self: InlineBatcher, greedy: Any) -> Any:
        if failures:
            raise failures.pop()
        return original(self, greedy)

    monkeypatch.setattr(InlineBatcher, "_take", take)

    async def scenario() -> tuple[BaseException | None, list[str], tuple[str, str | None]]:
        batcher = InlineBatcher(load_model([checkpoint]).translator)
        batcher.start()
        failed = batcher.submit(Request(("red cat",), 1))
        for _ in range(500):  # the task runs on this loop: let it
            if failed.done():
                break
            await asyncio.sleep(0.01)
        error = failed.exception(0)
        answer = await asyncio.wrap_future(batcher.submit(Request(("red cat", "a tree"), 1)))
        health = batcher.health
        batcher.close()
        await batcher.drain(5)
        return error, [hyps[0].text for hyps in answer], health

    error, texts, health = asyncio.run(scenario())
    assert isinstance(error, RuntimeError) and str(error) == "a bug in the task"
    assert texts == reference.translate(["red cat", "a tree"], beam_size=1)
    assert health == ("ok", None)


class _FakeBatcher:
    """A batcher whose first submit fails as a bug would; later ones succeed at once."""

    alive = True
    queued = 0
    stats = argparse.Namespace(requests=0, sentences=0, batches=0, steps=0)

    def __init__(self) -> None:
        self.submitted: list[Request] = []

    def submit(self, request: Request) -> Future[Any]:
        self.submitted.append(request)
        if len(self.submitted) == 1:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        future: Future[Any] = Future()
        future.set_result([[]])
        return future

    def answered(self) -> None:
        pass


def test_the_model_process_answers_a_failing_job_and_serves_the_next():
    parent, child = multiprocessing.Pipe(duplex=True)
    sent: list[tuple[Any, ...]] = []
    batcher = _FakeBatcher()
    request = Request(("red cat",), 1)
    for message in (("job", 0, request), ("job", 1, request), ("close",)):
        parent.send(message)
    worker = threading.Thread(target=_serve_pipe, args=(child, batcher, sent.append))
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and len(batcher.submitted) == 2
    assert sent[0][:3] == ("failed", 0, "UnicodeEncodeError")
    assert sent[1][:3] == ("done", 1, [[]])
