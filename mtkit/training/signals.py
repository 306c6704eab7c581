"""Ctrl-C and SIGTERM during training: finish the step, save ``last.pt``, exit; twice: abort.

The first SIGINT/SIGTERM only sets a flag, which the loop checks after every step. Inside
:meth:`StopSignals.interruptible` (validation and the final test: passes that change no
training state) it also raises :class:`Interrupted` at once, so a run stops within a
second wherever it is. A second signal aborts at once without saving (:class:`Aborted`).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A stop signal arrived during a long decoding pass; the caller saves and stops."""


class Aborted(BaseException):
    """A second stop signal: leave now, without saving (the command exits 128 + signal).

    A BaseException, so that no ``except Exception`` on the way up swallows it.
    """

    def __init__(self, number: int) -> None:
        super().__init__(f"aborted by {signal.Signals(number).name}")
        self.number = number


class StopSignals:
    """Installs the two-stage SIGINT/SIGTERM handler for the duration of a ``with`` block."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.number: int | None = None
        self._previous: dict[int, Any] = {}
        self._raise_now = False

    @property
    def received(self) -> bool:
        return self.number is not None

    def raise_if_received(self, _done: int = 0) -> None:
        """A progress callback: raise :class:`Interrupted` once a signal has arrived."""
        if self.number is not None:
            raise Interrupted

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block that a signal may cut short anywhere (it raises :class:`Interrupted`)."""
        self.raise_if_received()
        self._raise_now = True
        try:
            yield
        finally:
            self._raise_now = False

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        if self.number is not None:
            raise Aborted(number)
        self.number = number
        if self.announce:
            print(
                f"\nmtkit: {signal.Signals(number).name} received; saving last.pt and stopping "
                "(send again to abort without saving)",
                file=sys.stderr,
            )
        if self._raise_now:
            self._raise_now = False
            raise Interrupted

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
