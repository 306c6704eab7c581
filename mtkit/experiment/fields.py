"""Parsers of single keys of an experiment file, each with a one-line error naming the key.

:mod:`mtkit.experiment.load` reads a file and puts the parts together; the rules for each
key's shape (a budget, a comparison, a plot, the length split) live here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NoReturn

from mtkit.errors import ConfigError
from mtkit.experiment.budget import DEFAULT_PATIENCE, Budget
from mtkit.experiment.spec import (
    COMPARE_KEYS,
    CORPORA,
    EXPECT_SIGNS,
    LENGTH_SPLIT_KEYS,
    NAME_PATTERN,
    PLOT_KEYS,
    PLOT_KINDS,
    BaseFrom,
    Comparison,
    LengthSplit,
    PlotSpec,
)


class Checker:
    """Type checks that fail with ``FILE: KEY: message``."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, message: str) -> NoReturn:
        raise ConfigError(f"{self.where}: {key}: {message}")

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "expected a non-empty string")
        return " ".join(str(value).split())

    def number(self, value: Any, key: str, minimum: float, integer: bool = False) -> float:
        """A finite number >= ``minimum`` (YAML's ``.nan`` and ``.inf`` are floats too)."""
        kinds = (int,) if integer else (int, float)
        ok = isinstance(value, kinds) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < minimum:
            what = "an integer" if integer else "a finite number"
            self.fail(key, f"expected {what} >= {minimum:g}, got {value!r}")
        return value

    def overrides(self, value: Any, key: str) -> list[str]:
        """A list of ``key=value`` strings."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, "expected a list of key=value overrides")
        for i, item in enumerate(value):
            if not isinstance(item, str) or "=" not in item:
                self.fail(f"{key}[{i}]", f"expected a 'key=value' string, got {item!r}")
        return list(value)


def items(raw: dict[str, Any], key: str, check: Checker) -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        check.fail(key, "expected a list")
    return value


def flag(value: Any, key: str, check: Checker) -> bool:
    if not isinstance(value, bool):
        check.fail(key, f"expected true or false, got {value!r}")
    return bool(value)


def plot(item: Any, index: int, check: Checker) -> PlotSpec:
    key = f"plots[{index}]"
    if not isinstance(item, dict):
        check.fail(key, "expected a mapping with name, kind, x, y")
    for name in item:
        if name not in PLOT_KEYS:
            check.fail(f"{key}.{name}", f"unknown key; valid keys: {', '.join(PLOT_KEYS)}")
    for name in ("name", "kind", "x", "y"):
        if name not in item:
            check.fail(f"{key}.{name}", "missing (required)")
    if item["kind"] not in PLOT_KINDS:
        check.fail(f"{key}.kind", f"{item['kind']!r} is not one of: {', '.join(PLOT_KINDS)}")
    name = check.text(item["name"], f"{key}.name")
    taken = name == "curves" or name.startswith("bleu_by_length")  # the runner's own figures
    if not NAME_PATTERN.fullmatch(name) or taken:
        check.fail(f"{key}.name", f"{name!r} is not a free file name")
    y = item["y"] if isinstance(item["y"], list) else [item["y"]]
    series = item.get("series")
    return PlotSpec(
        name=name,
        kind=item["kind"],
        x=check.text(item["x"], f"{key}.x"),
        y=[check.text(v, f"{key}.y") for v in y],
        series=None if series is None else check.text(series, f"{key}.series"),
        log_x=flag(item.get("log_x", False), f"{key}.log_x", check),
    )


def base_from(value: Any, check: Checker) -> BaseFrom | None:
    """``{experiment: NAME, condition: NAME}``: another experiment's runs as base models."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"experiment", "condition"}:
        check.fail("base_from", "expected a mapping {experiment: NAME, condition: NAME}")
    experiment = check.text(value["experiment"], "base_from.experiment")
    condition = check.text(value["condition"], "base_from.condition")
    if not NAME_PATTERN.fullmatch(condition):
        check.fail("base_from.condition", f"expected a condition name, got {condition!r}")
    return BaseFrom(experiment, condition)


def buckets(value: Any, check: Checker) -> list[int]:
    if value is None:
        return [5, 10, 15, 20, 30]
    ok = isinstance(value, list) and value and all(isinstance(v, int) and v >= 1 for v in value)
    if not ok or value != sorted(set(value)):
        check.fail("length_buckets", "expected increasing upper bounds in words, e.g. [5, 10, 20]")
    return list(value)


def length_split(value: Any, check: Checker, corpora: str) -> LengthSplit | None:
    """``{from: DIR, max_words: 20, concat: 5}`` (``${corpora}`` substituted in ``from``)."""
    if value is None:
        return None
    if not isinstance(value, dict) or "from" not in value:
        check.fail("length_split", "expected a mapping {from: DIR, max_words: 20, concat: 5}")
    for name in value:
        if name not in LENGTH_SPLIT_KEYS:
            valid = ", ".join(LENGTH_SPLIT_KEYS)
            check.fail(f"length_split.{name}", f"unknown key; valid keys: {valid}")
    source = check.text(value["from"], "length_split.from").replace(CORPORA, corpora)
    number = {
        name: int(check.number(value.get(name, default), f"length_split.{name}", 1, True))
        for name, default in (("max_words", 20), ("concat", 5))
    }
    return LengthSplit(Path(source), number["max_words"], number["concat"])


def extra_tests(value: Any, check: Checker) -> list[str]:
    """Split names of the data folder, each also decoded with beam 5 for the figures."""
    if value is None:
        return []
    if not isinstance(value, list):
        check.fail("extra_tests", "expected a list of split names, such as [concat]")
    names = value
    for i, name in enumerate(names):
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            check.fail(f"extra_tests[{i}]", f"expected a split name (such as concat), got {name!r}")
    if len(set(names)) != len(names):
        check.fail("extra_tests", "a split is named twice")
    return list(names)


def budget(raw: dict[str, Any], check: Checker) -> Budget:
    """``budget_steps`` (updates; the cap with ``converge: true``) or ``budget_minutes``."""
    steps, minutes = raw.get("budget_steps"), raw.get("budget_minutes")
    if raw.get("base_from") is not None and (steps, minutes) != (None, None):
        check.fail("base_from", "its models keep the budget of the experiment that trains them")
    decoded = raw.get("checkpoint") is not None or raw.get("base_from") is not None
    if steps is None and minutes is None and decoded:
        return Budget(steps=1)  # nothing is trained here: a checkpoint or others' models
    if (steps is None) == (minutes is None):
        check.fail("budget_steps", "give budget_steps (updates) or budget_minutes, one of them")
    converge = flag(raw.get("converge", False), "converge", check)
    if "patience" in raw and not converge:
        check.fail("patience", "belongs to converge: true")
    patience = int(check.number(raw.get("patience", DEFAULT_PATIENCE), "patience", 1, True))
    if minutes is not None:
        if converge:
            check.fail("converge", "needs budget_steps as its update cap, not budget_minutes")
        return Budget(minutes=float(check.number(minutes, "budget_minutes", 0.01)))
    count = int(check.number(steps, "budget_steps", 1, integer=True))
    return Budget(steps=count, converge=converge, patience=patience)


def pairs(value: Any, check: Checker) -> list[Comparison]:
    """``[condition, baseline]`` or ``{condition, baseline, expect, metric}`` entries."""
    if value is None:
        return []
    pairs: list[Comparison] = []
    for i, pair in enumerate(value if isinstance(value, list) else [value]):
        key = f"compare[{i}]"
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
            pairs.append(Comparison(pair[0], pair[1]))
            continue
        if not isinstance(pair, dict) or not {"condition", "baseline"} <= set(pair):
            check.fail(key, "expected [condition, baseline] or {condition, baseline, expect}")
        for name in pair:
            if name not in COMPARE_KEYS:
                check.fail(f"{key}.{name}", f"unknown key; valid keys: {', '.join(COMPARE_KEYS)}")
        expect = pair.get("expect", "either")
        if expect not in EXPECT_SIGNS:
            check.fail(f"{key}.expect", f"{expect!r} is not one of: {', '.join(EXPECT_SIGNS)}")
        metric = pair.get("metric")
        pairs.append(
            Comparison(
                check.text(pair["condition"], f"{key}.condition"),
                check.text(pair["baseline"], f"{key}.baseline"),
                EXPECT_SIGNS[expect],
                None if metric is None else check.text(metric, f"{key}.metric"),
            )
        )
    return pairs
