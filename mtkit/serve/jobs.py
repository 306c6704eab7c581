"""What the service's batcher passes around: requests, jobs, counters and its errors."""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from mtkit.search.hypothesis import Hypothesis


class QueueFull(Exception):
    """The waiting queue holds ``queue_size`` requests: the caller should retry later."""


class BatcherClosed(Exception):
    """The service is shutting down."""


def estimated_tokens(text: str) -> int:
    """Source pieces of a text (with EOS), estimated from its UTF-8 length.

    About 4 bytes a piece in European languages and 3 (one character) in Chinese or
    Japanese: close enough to fill a search batch, without running the tokenizer in the
    HTTP handler (the Translator tokenizes the whole batch once, exactly).
    """
    return len(text.strip().encode("utf-8")) // 4 + 2


@dataclass(frozen=True)
class Request:
    """One request: texts and the search settings they are translated with."""

    texts: tuple[str, ...]
    beam_size: int
    nbest: int = 1
    attention: bool = False


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
