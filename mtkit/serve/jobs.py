"""What the service's batcher passes around: requests, jobs, counters and its errors."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import Any

from mtkit.search.hypothesis import Hypothesis


class QueueFull(Exception):
    """The waiting queue holds ``queue_size`` requests: the caller should retry later."""


class BatcherClosed(Exception):
    """The service is shutting down, or its worker has stopped."""


class WorkerDown(BatcherClosed):
    """The worker stopped and is being restarted: the caller may retry shortly."""


class BadPrefix(Exception):
    """A request's target prefix the model cannot write: the message names the field
    (``target_prefix`` or ``target_prefix[i]``) and why; the service answers a 422."""


def settle(future: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Give ``future`` its result or error unless it has one already: a stop that gave
    up on a search (or a caller that went away) settled it first, and the worker goes on."""
    with contextlib.suppress(InvalidStateError):
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def health_answer(alive: bool, closed: bool) -> tuple[str, str | None]:
    """A batcher's ``/healthz`` answer: ``("ok", None)`` while alive, else ``("stopped", why)``."""
    if alive:
        return "ok", None
    return "stopped", "the service is shutting down" if closed else "the worker stopped"


def estimated_tokens(text: str) -> int:
    """Source pieces of a text (with EOS), estimated from its UTF-8 length.

    About 4 bytes a piece in European languages and 3 (one character) in Chinese or
    Japanese: close enough to fill a search batch, without running the tokenizer in the
    HTTP handler (the Translator tokenizes the whole batch once, exactly). Never raises:
    a lone surrogate (which the app refuses) counts as its three bytes.
    """
    return len(text.strip().encode("utf-8", "surrogatepass")) // 4 + 2


@dataclass(frozen=True)
class Request:
    """One request: texts and the search settings they are translated with.

    ``prefixes``: one target prefix per text (None or "": none) that its translation
    must begin with, unchecked (the worker checks them per request before searching);
    None: no text has one. ``single``: the body's text was one string, so errors name
    the field ``target_prefix`` rather than ``target_prefix[0]``.
    """

    texts: tuple[str, ...]
    beam_size: int
    nbest: int = 1
    attention: bool = False
    prefixes: tuple[str | None, ...] | None = None
    single: bool = False


@dataclass
class Job:
    """A submitted request, its future, and (greedy) its answers as they finish."""

    request: Request
    tokens: int  # estimated source tokens (with EOS) of all texts, for the batch budget
    arrived: float = field(default_factory=time.monotonic)
    future: Future[list[list[Hypothesis]]] = field(default_factory=Future)
    step: int = 0  # the greedy stream's step count when it arrived
    results: list[list[Hypothesis]] = field(default_factory=list)  # streamed: filled in
    pending: int = 0  # streamed sentences not finished yet


@dataclass
class BatcherStats:
    """Counters since start: requests answered, sentences translated, search batches
    (beam groups, and groups of requests that joined the greedy stream), greedy steps."""

    requests: int = 0
    sentences: int = 0
    batches: int = 0
    steps: int = 0


def split_answers(
    results: list[list[Hypothesis]], requests: list[Request]
) -> list[list[list[Hypothesis]]]:
    """A group's n-best lists cut into each request's answer, with what it asked for."""
    answers, start = [], 0
    for request in requests:
        mine = results[start : start + len(request.texts)]
        start += len(request.texts)
        answers.append([trim(hyps, request) for hyps in mine])
    return answers


def trim(hyps: list[Hypothesis], request: Request) -> list[Hypothesis]:
    """What the request asked for from a group's n-best list."""
    kept = hyps[: request.nbest]
    return kept if request.attention else [replace(h, attention=None) for h in kept]
