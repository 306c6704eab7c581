"""The service's fault suite: killed workers, stop signals under load, a huge body, a fuzz.

- A model process killed with SIGKILL is restarted by its parent: meanwhile ``/healthz``
  answers 503 ``restarting`` with the reason, then requests succeed again, answered as
  the Translator answers them (``--workers 1`` and 2, and ``--worker inline --workers 2``,
  whose supervisor replaces a dead service process).
- SIGTERM with requests in flight stops every worker kind within :data:`STOP_SECONDS`,
  with no traceback and no process left; every client gets an answer (200 or 503) or a
  closed connection, none waits.
- A 400 MB chunked body gets a 413 and costs the service no memory; it goes on serving.
- A fuzz of the JSON API (Hypothesis, derandomized): bodies from the schema and mutations
  of them (wrong types, huge numbers, NaN, nested junk, bad UTF-8 and UTF-16 escapes).
  Every answer is 200 or a 4xx with a JSON error, 200 exactly for the valid bodies and
  then equal to the Translator's, and the worker survives.

Run with ``python -m pytest -m faults tests/test_serve_faults.py``.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import select
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import WORDS
from test_ensemble import trained_checkpoint
from test_serve import POST, SENTENCES, SETTINGS, ServeCommand, ServerThread, call, listener_pids

from mtkit.search.prefix import PrefixError, encode_prefixes
from mtkit.search.translator import Translator
from mtkit.serve.app import create_app
from mtkit.serve.setup import load_model

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.faults

STOP_SECONDS = 2.0  # from SIGTERM to the end of the service, whatever it is doing
RESTART_SECONDS = 120.0  # a generous bound on loading the model again


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory, seed=1)


@pytest.fixture(scope="module")
def translator(checkpoint: Path) -> Translator:
    return Translator.from_checkpoint(checkpoint)


def _wait_for_health(port: int, wanted: str) -> tuple[int, dict[str, Any]]:
    """Poll /healthz (fresh connections) until its status is ``wanted``."""
    deadline = time.monotonic() + RESTART_SECONDS
    while True:
        status, _, health = call(port, "GET", "/healthz")
        if health["status"] == wanted:
            return status, health
        assert time.monotonic() < deadline, f"no {wanted!r} in /healthz: {health}"
        time.sleep(0.02)


def _assert_translates(port: int, translator: Translator) -> None:
    for beam in (1, 2):
        status, _, answer = call(
            port, "POST", "/v1/translate", {"text": SENTENCES, "beam_size": beam}
        )
        assert status == 200, answer
        texts = [t["text"] for t in answer["translations"]]
        assert texts == translator.translate(SENTENCES, beam_size=beam)


# -- a killed worker process is restarted ----------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_model_process_is_restarted_and_serves_again(
    checkpoint: Path, translator: Translator, workers: int
):
    app = create_app(
        load_model([checkpoint]), replace(SETTINGS, model_process=True, workers=workers)
    )
    worker = app.state.batcher
    members = getattr(worker, "members", [worker])
    with ServerThread(app) as server:
        _assert_translates(server.port, translator)
        before = call(server.port, "GET", "/healthz")[2]["requests"]
        victim = members[0]
        old_pid = victim.pid
        in_flight: list[tuple[int, Any]] = []

        def client() -> None:
            body = {"text": SENTENCES * 4, "beam_size": 4}
            status, response, _ = call(server.port, "POST", "/v1/translate", body)
            in_flight.append((status, response.getheader("retry-after")))

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        os.kill(old_pid, signal.SIGKILL)
        status, health = _wait_for_health(server.port, "restarting")
        reason = "the model process stopped (exit -9); it is restarting"
        expected = reason if workers == 1 else f"model process 1 of 2: {reason}"
        assert (status, health["detail"]) == (503, expected)
        status, response, answer = call(server.port, "POST", "/v1/translate", {"text": "red cat"})
        if workers == 1:  # nothing serves: a 503 to retry
            assert (status, answer) == (503, {"detail": reason})
            assert response.getheader("retry-after") == "1"
        else:  # the other process serves meanwhile
            assert status == 200, answer
        for thread in clients:
            thread.join(60)
        # in flight when it died: answered, or a 503 to retry
        assert all(status == 200 or (status, retry) == (503, "1") for status, retry in in_flight)
        assert len(in_flight) == len(clients)
        assert _wait_for_health(server.port, "ok")[0] == 200
        assert victim.restarts == 1 and victim.pid != old_pid
        assert sum(member.restarts for member in members) == 1
        _assert_translates(server.port, translator)
        assert call(server.port, "GET", "/healthz")[2]["requests"] > before


def test_a_killed_inline_service_process_is_replaced(
    checkpoint: Path, translator: Translator, tmp_path: Path
):
    argv = [str(checkpoint), "--threads", "1", "--worker", "inline", "--workers", "2"]
    with ServeCommand(tmp_path / "stderr.txt", *argv) as command:
        port = command.port
        pids = listener_pids(port)
        assert len(pids) == 2
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        status, health = _wait_for_health(port, "restarting")
        assert status == 503 and health["pid"] in pids - {victim}
        assert re.fullmatch(
            r"service process [12] of 2 stopped; it is restarting", health["detail"]
        )
        assert _wait_for_health(port, "ok")[0] == 200
        _assert_translates(port, translator)
        now = listener_pids(port)
        assert len(now) == 2 and victim not in now and pids - {victim} <= now
        assert re.search(
            r"service process [12] of 2 stopped \(exit -9\); starting a new one", command.text()
        )
        elapsed = _stop(command)
        assert elapsed < STOP_SECONDS and command.process.returncode == 0
        assert "Traceback" not in command.text()
    for pid in now:
        _assert_gone(pid)


# -- SIGTERM under load -----------------------------------------------------------------------


def _stop(command: ServeCommand) -> float:
    start = time.monotonic()
    command.process.send_signal(signal.SIGTERM)
    command.process.wait(60)
    return time.monotonic() - start


def _children(pid: int) -> set[int]:
    """The processes ``pid`` started (Linux: /proc/PID/task/*/children)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def _assert_gone(pid: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        status = Path(f"/proc/{pid}/status").read_text(errors="replace")
        if "State:\tZ" in status:  # a zombie: ended, not reaped yet
            return
        assert time.monotonic() < deadline, f"process {pid} outlived the service"
        time.sleep(0.05)


KIND_ARGS = {
    "process": [],
    "workers2": ["--workers", "2"],
    "thread": ["--worker", "thread"],
    "inline": ["--worker", "inline"],
    "inline-workers2": ["--worker", "inline", "--workers", "2"],
}


@pytest.mark.parametrize("kind", list(KIND_ARGS))
def test_sigterm_under_load_stops_the_service_within_two_seconds(
    checkpoint: Path, tmp_path: Path, kind: str
):
    argv = [str(checkpoint), "--threads", "1", *KIND_ARGS[kind]]
    assert_stops_under_load(argv, SENTENCES, tmp_path / "stderr.txt", kind)


def assert_stops_under_load(
    argv: list[str], texts: list[str], stderr: Path, kind: str, banner: str = " on http://"
) -> None:
    """``mtkit-serve argv``, under the load of 8 clients that keep posting ``texts``,
    stops within STOP_SECONDS of a SIGTERM: every client gets an answer or a refused
    connection (never a hang), no traceback, and no child process stays behind."""
    outcomes: list[Any] = []
    stop = threading.Event()

    def client(index: int) -> None:
        body = {"text": texts * 3, "beam_size": 1 + index % 3}
        while not stop.is_set():
            try:
                outcomes.append(call(command.port, "POST", "/v1/translate", body)[0])
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                outcomes.append(type(error).__name__)
                time.sleep(0.01)

    with ServeCommand(stderr, *argv) as command:
        assert banner in command.text(), command.text()
        children = _children(command.process.pid)
        clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while outcomes.count(200) < 16:  # under load
            assert time.monotonic() < deadline, Counter(map(str, outcomes))
            time.sleep(0.01)
        elapsed = _stop(command)
        stop.set()
        for thread in clients:
            thread.join(60)  # a client waiting for an answer that never comes fails here
        assert not any(thread.is_alive() for thread in clients)
        assert elapsed < STOP_SECONDS, f"{kind}: stopped in {elapsed:.2f} s"
        assert command.process.returncode in (0, -signal.SIGTERM)
        assert "Traceback" not in command.text(), command.text()
    counts = Counter(map(str, outcomes))
    assert "TimeoutError" not in counts and set(counts) <= {
        "200", "503", "ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected",
        "BrokenPipeError",
    }, counts  # fmt: skip
    for pid in children:
        _assert_gone(pid)


# -- a huge body ------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _send_until_answered(port: int, head: bytes, chunk: bytes, total: int) -> tuple[int, bytes]:
    """Send ``head`` then ``chunk`` repeatedly (``total`` bytes at most) until the server
    answers; (bytes sent, the answer)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while piece := sock.recv(65536):
                answer += piece
        except ConnectionResetError:
            pass
    return sent, answer


def test_a_400_mb_body_gets_a_413_and_costs_no_memory(
    checkpoint: Path, translator: Translator, tmp_path: Path
):
    argv = [str(checkpoint), "--threads", "1", "--worker", "thread"]
    total = 400 * 1024 * 1024
    piece = b"a" * 65536
    with ServeCommand(tmp_path / "stderr.txt", *argv) as command:
        _assert_translates(command.port, translator)
        before = _rss_kib(command.process.pid)
        framings = {
            b"Transfer-Encoding: chunked\r\n\r\n": b"%x\r\n%s\r\n" % (len(piece), piece),
            b"Content-Length: %d\r\n\r\n" % total: piece,
        }
        for framing, chunk in framings.items():
            sent, answer = _send_until_answered(command.port, POST + framing, chunk, total)
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
            assert sent < total // 4  # answered long before the end
            _assert_translates(command.port, translator)
        growth_mib = (_rss_kib(command.process.pid) - before) / 1024
        assert growth_mib < 50, f"RSS grew by {growth_mib:.0f} MiB for a 400 MiB body"


# -- the fuzz ---------------------------------------------------------------------------------

MAX_BEAM, MAX_LINES, MAX_CHARS = 4, 6, 300
FUZZ_SETTINGS = replace(
    SETTINGS, max_beam=MAX_BEAM, max_lines=MAX_LINES, max_chars=MAX_CHARS, model_process=True
)
FIELDS = ("text", "beam_size", "nbest", "attention", "target_prefix")
SENTENCE = st.one_of(
    st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join), st.text(max_size=12)
)
TEXT = st.one_of(SENTENCE, st.lists(SENTENCE, max_size=MAX_LINES + 1))
PREFIX = st.one_of(  # target words the model writes, or any text (it may know none of it)
    st.lists(st.sampled_from([w.upper() for w in WORDS]), max_size=3).map(" ".join),
    st.text(max_size=6),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 10),
    st.integers(min_value=2**63 - 2, max_value=10**40),
    st.integers(min_value=-(10**40), max_value=-(2**63)),
    st.text(max_size=8),
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
ESCAPES = [  # malformed UTF-16 in JSON escapes, and two valid ones
    r"\ud800", r"\udfff", r"\ud800\ud800", r"\udc00\ud800", r"\ud83d", r"\ud8", r"\u",
    r"\x41", r"\U0001F600", r"\ud83d\ude00",
]  # fmt: skip


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A body as a client that reads the schema would send (beam and lines within the
    limits, mostly; the text may still be too long)."""
    body: dict[str, Any] = {"text": draw(TEXT)}
    beam = draw(st.none() | st.integers(1, MAX_BEAM))
    if beam is not None or draw(st.booleans()):
        body["beam_size"] = beam
    if draw(st.booleans()):
        body["nbest"] = draw(st.integers(1, beam or 1))
    if draw(st.booleans()):
        body["attention"] = draw(st.booleans())
    if draw(st.booleans()):
        body["target_prefix"] = draw(_prefixes(body["text"]))
    return body


def _prefixes(text: str | list[str]) -> st.SearchStrategy[Any]:
    """A ``target_prefix`` shaped like ``text`` (mostly: another length now and then)."""
    if isinstance(text, str):
        return st.none() | PREFIX
    lengths = st.just(len(text)) | st.integers(0, MAX_LINES)
    return lengths.flatmap(lambda n: st.lists(st.none() | PREFIX, min_size=n, max_size=n))


@st.composite
def request_bodies(draw: st.DrawFn) -> bytes:
    """A valid body, or one mutated: a field's value or the whole body replaced by junk,
    an extra field, no text, an escape inserted into the text, bytes inserted, or cut."""
    body = draw(valid_bodies())
    how = draw(st.sampled_from(["none", "field", "extra", "drop", "top", "escape", "bytes", "cut"]))
    if how == "field":
        body[draw(st.sampled_from(FIELDS))] = draw(JUNK)
    elif how == "extra":
        body[draw(st.text(max_size=8))] = draw(JUNK)
    elif how == "drop":
        del body["text"]
    elif how == "top":
        body = draw(JUNK)
    raw = json.dumps(body, allow_nan=True).encode()
    if how == "escape" and isinstance(body.get("text"), str):
        at = len(b'{"text": "')
        raw = raw[:at] + draw(st.sampled_from(ESCAPES)).encode() + raw[at:]
    elif how == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    elif how == "cut":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    return raw


def _valid(raw: bytes, default_beam: int) -> dict[str, Any] | None:
    """The request ``raw`` stands for when the service must answer it (200), else None:
    the schema and the limits, read independently of the service's code."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or "text" not in body or set(body) - set(FIELDS):
        return None
    texts = [body["text"]] if isinstance(body["text"], str) else body["text"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return None
    prefixes = _valid_prefixes(body.get("target_prefix"), body["text"])
    if prefixes is False:
        return None
    strings = texts + [p for p in prefixes or [] if p is not None]
    if any(0xD800 <= ord(c) <= 0xDFFF for t in strings for c in t):
        return None
    if len(texts) > MAX_LINES or sum(map(len, strings)) > MAX_CHARS:
        return None
    beam = body.get("beam_size")
    beam = default_beam if beam is None else beam
    nbest, attention = body.get("nbest", 1), body.get("attention", False)
    for number in (beam, nbest):
        if type(number) is not int:
            return None
    if not (1 <= beam <= MAX_BEAM and 1 <= nbest <= beam) or type(attention) is not bool:
        return None
    return {
        "texts": texts,
        "beam": beam,
        "nbest": nbest,
        "attention": attention,
        "prefixes": prefixes or [None] * len(texts),
    }


def _valid_prefixes(given: Any, text: str | list[str]) -> list[str | None] | bool | None:
    """``target_prefix`` as one prefix (or None) per text, None when absent, False when
    not shaped like ``text`` (a string for a string, a list as long for a list)."""
    if given is None:
        return None
    if isinstance(text, str):
        return [given] if isinstance(given, str) else False
    if not isinstance(given, list) or len(given) != len(text):
        return False
    return given if all(p is None or isinstance(p, str) for p in given) else False


def _writable(translator: Translator, request: dict[str, Any]) -> bool:
    """Whether the model can write every prefix of ``request`` (the Translator's check)."""
    texts, prefixes = request["texts"], request["prefixes"]
    try:
        encode_prefixes(translator.codec, prefixes, len(texts), translator.stepper)
    except PrefixError:
        return False
    return True


@pytest.fixture(scope="module")
def fuzz_server(checkpoint: Path) -> Iterator[tuple[int, Any]]:
    app = create_app(load_model([checkpoint]), FUZZ_SETTINGS)
    with ServerThread(app) as server:
        yield server.port, app.state.batcher


def test_fuzzed_bodies_get_200_or_a_json_4xx_and_valid_ones_the_translators_answer(
    fuzz_server: tuple[int, Any], translator: Translator
):
    port, worker = fuzz_server
    default_beam = call(port, "GET", "/v1/model")[2]["server"]["beam_size"]
    pid = worker.pid
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    seen: Counter[int | str] = Counter()

    @cache
    def alone(text: str, beam: int, nbest: int, prefix: str | None) -> list[tuple[str, float]]:
        hyps = translator.translate_nbest([text], beam_size=beam, nbest=nbest, prefix=[prefix])[0]
        return [(h.text, h.score) for h in hyps]

    @settings(
        max_examples=500,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(raw=request_bodies())
    def check(raw: bytes) -> None:
        nonlocal conn
        try:
            status, _, answer = call(port, "POST", "/v1/translate", raw=raw, connection=conn)
        except (http.client.HTTPException, OSError):  # the server closed a bad connection
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            status, _, answer = call(port, "POST", "/v1/translate", raw=raw, connection=conn)
        seen[status] += 1
        request = _valid(raw, default_beam)
        if request is not None and not _writable(translator, request):
            request = None  # a prefix the model cannot write: a 422 naming it
        if request is None:
            assert 400 <= status < 500 and isinstance(answer, dict) and answer["detail"], (
                raw,
                status,
                answer,
            )
            return
        assert status == 200, (raw, answer)
        seen["prefixed"] += any(p and p.strip() for p in request["prefixes"])
        assert (answer["beam_size"], answer["nbest"]) == (request["beam"], request["nbest"])
        pairs = zip(request["texts"], request["prefixes"], answer["translations"], strict=True)
        for text, prefix, got in pairs:
            want = alone(text, request["beam"], request["nbest"], prefix)
            assert [c["text"] for c in got["nbest"]] == [t for t, _ in want], (raw, text)
            assert all(
                math.isclose(c["score"], s, abs_tol=1e-4)
                for c, (_, s) in zip(got["nbest"], want, strict=True)
            )
            assert ("attention" in got) == request["attention"]

    check()
    conn.close()
    assert seen[200] >= 50 and sum(n for s, n in seen.items() if s not in (200, "prefixed")) >= 100
    assert seen["prefixed"] >= 5, seen  # answers with a forced prefix were checked too
    # the worker survived every body: the same process, healthy, and answering
    status, _, health = call(port, "GET", "/healthz")
    assert (status, health["status"]) == (200, "ok") and worker.pid == pid and worker.restarts == 0
    _assert_translates(port, translator)
