"""Progress of the long stages of corpus preparation: done/total, rate and time left.

A log line every few seconds (what a batch job's log and ``train.log`` keep), or a tqdm
bar when stderr is a terminal. A stage with no measurable progress (sentencepiece
training itself) runs under :func:`run_with_heartbeat` instead: a line every few
seconds says it is still at work, so a long preparation never looks hung, and Ctrl-C
still stops it at once.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

log = logging.getLogger("mtkit.corpus")

LOG_EVERY_S = 5.0
T = TypeVar("T")


def _interactive() -> bool:
    return sys.stderr.isatty() and log.isEnabledFor(logging.INFO)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class StageProgress:
    """Counts ``total`` units of one stage (bytes read, pairs encoded) and reports as it goes."""

    def __init__(self, stage: str, total: float, unit: str) -> None:
        self.stage, self.total, self.unit = stage, max(float(total), 1.0), unit
        self.done = 0.0
        self.start = self._last = time.monotonic()
        self._bar: Any = None
        if _interactive():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=stage, unit=unit, unit_scale=True, leave=False)

    def advance(self, amount: float) -> None:
        self.done += amount
        if self._bar is not None:
            self._bar.update(amount)
            return
        now = time.monotonic()
        if now - self._last >= LOG_EVERY_S:
            self._last = now
            log.info("%s: %s", self.stage, self.describe(now))

    def describe(self, now: float) -> str:
        """``'34% (3.4M of 10M pairs), 120k pairs/s, 52s left'``."""
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        fraction = min(self.done / self.total, 1.0)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = _duration(left) if left != float("inf") else "?"
        return (
            f"{100 * fraction:.0f}% ({_count(self.done)} of {_count(self.total)} {self.unit}), "
            f"{_count(rate)} {self.unit}/s, {eta} left"
        )

    def close(self) -> float:
        """End the stage; returns its duration in seconds."""
        if self._bar is not None:
            self._bar.close()
        return time.monotonic() - self.start


def _count(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def run_with_heartbeat(stage: str, status: Callable[[], str], work: Callable[[], T]) -> T:
    """``work()``, run in a daemon thread while this one logs ``'<stage>: <status()> (N s)'``
    every few seconds and stays interruptible.

    For a long call that reports nothing itself and does not return to Python until done
    (sentencepiece training): Ctrl-C still stops the caller within a fraction of a second;
    the abandoned thread ends with the process.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the caller, which raises it
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"mtkit {stage}", daemon=True)
    start = last = time.monotonic()
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
        now = time.monotonic()
        if thread.is_alive() and now - last >= 2 * LOG_EVERY_S:
            last = now
            log.info("%s: %s (%s)", stage, status(), _duration(now - start))
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])
