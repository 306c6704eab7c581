"""The small value checks every config section uses, each failing with one line.

A value that is still ``???`` (OmegaConf's MISSING) passes: composing reports a
mandatory key that was never set, with its own message.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from omegaconf import MISSING

from mtkit.errors import ConfigError


def check_choice(section: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    """``section.key`` must be one of ``choices``."""
    if value == MISSING:
        return
    if value not in choices:
        raise ConfigError(
            f"{section}.{key}={value!r} is not valid; expected one of: {', '.join(choices)}"
        )


def check_value(condition: bool, section: str, key: str, value: Any, expected: str) -> None:
    """Raise ``section.key=value is not valid; expected ...`` unless ``condition`` holds."""
    if not condition and value != MISSING:
        raise ConfigError(f"{section}.{key}={value!r} is not valid; expected {expected}")


def is_int(value: Any) -> bool:
    """An integer, and not a bool (which Python counts as one)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A real number, neither NaN nor infinite (a bool is no number here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
