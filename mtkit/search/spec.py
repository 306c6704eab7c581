"""What to load, as plain values, checked before anything heavy is imported.

A :class:`LoadSpec` is what a command builds from its options and what the decoding
pool sends to each helper process (:func:`mtkit.search.load.load_spec` loads it). This
module imports neither torch nor the model, so a command can start its helpers before
it loads torch itself, and both load at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mtkit.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "int8")


@dataclass(frozen=True)
class LoadSpec:
    """:func:`load`'s arguments as plain values: what a command or a Translator loads,
    sent as it is to each helper process, which loads the same model itself."""

    checkpoints: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    precision: str = "fp32"
    shortlist: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_model_options(self.checkpoints, self.weights, self.precision, self.shortlist)


def check_model_options(
    checkpoints: Sequence[object],
    weights: Sequence[float] | None,
    precision: str,
    shortlist: bool,
) -> None:
    """What can be checked before anything loads (a one-line ConfigError)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}; expected fp32, bf16 or int8")
    if shortlist and (len(checkpoints) != 1 or weights is not None):
        raise ConfigError("--shortlist works with one checkpoint, not an ensemble")
