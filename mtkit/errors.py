"""User-facing errors.

Every mistake a user can make (a missing file, a bad option, a corrupt checkpoint)
raises a subclass of :class:`MtkitError`. The command-line entry points catch it and
print its message as one line, so users never see a traceback for their own mistakes,
while genuine bugs still surface with a full traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar


class MtkitError(Exception):
    """A problem with the user's input or configuration; the message says what and where."""


class ConfigError(MtkitError):
    """A configuration key is unknown, or its value is invalid."""


class DataError(MtkitError):
    """Input data is missing, unreadable, misaligned or empty."""


class TrainingError(MtkitError):
    """Training cannot go on (for example the loss stays NaN)."""


class CheckpointError(MtkitError):
    """A checkpoint is missing, corrupt, unsafe, or incompatible with the request."""


T = TypeVar("T")


def run_cli(main: Callable[[], T], prog: str) -> T:
    """Run ``main`` and turn an :class:`MtkitError` into ``prog: error: ...`` and exit code 2."""
    try:
        return main()
    except MtkitError as error:
        message = " ".join(str(error).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
