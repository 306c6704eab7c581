"""Reading and checking experiment files.

Every mistake in a file is a :class:`~mtkit.errors.ConfigError` whose one-line message
names the file and the key (``conf/experiment/x.yaml: conditions.a: ...``), raised
before anything is trained. Overrides are only checked for their shape here; their
keys and values are composed by :func:`mtkit.experiment.overrides.check_stages`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NoReturn

import yaml

from mtkit.errors import ConfigError
from mtkit.experiment.budget import DEFAULT_PATIENCE, Budget
from mtkit.experiment.overrides import override_key
from mtkit.experiment.spec import (
    COMPARE_KEYS,
    CORPORA,
    EXPECT_SIGNS,
    LENGTH_SPLIT,
    LENGTH_SPLIT_KEYS,
    NAME_PATTERN,
    PAPER_KEYS,
    PLOT_KEYS,
    PLOT_KINDS,
    REQUIRED_KEYS,
    RESERVED_KEYS,
    TEST_SET_KEYS,
    TOP_KEYS,
    Comparison,
    ExperimentSpec,
    LengthSplit,
    PlotSpec,
    corpora_dir,
    display,
    experiment_path,
)

RUNNER_HINTS = {
    "train.max_minutes": " (use budget_minutes)",
    "train.max_steps": " (use budget_steps)",
    "train.seed": " (use seed and seeds)",
    "train.resume": " (interrupted runs resume by themselves)",
}


def load_spec(name: str, corpora: str | None = None) -> ExperimentSpec:
    """Read and check ``conf/experiment/NAME.yaml`` (or a YAML path)."""
    path = experiment_path(name)
    where = display(path)
    raw = _read_yaml(path, where)
    check = _Checker(where)
    for key in raw:
        if key not in TOP_KEYS:
            check.fail(str(key), f"unknown key; valid keys: {', '.join(TOP_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in raw:
            check.fail(key, "missing (required)")
    corpora_path = corpora_dir(corpora)
    uses_corpora = CORPORA in yaml.safe_dump(raw)
    if uses_corpora and not corpora_path.is_dir():
        check.fail(
            "data",
            f"the shared corpora folder {corpora_path} does not exist "
            "(use --corpora DIR or set MTKIT_SHARED_CORPORA)",
        )
    spec = _build(path, raw, check, str(corpora_path))
    _check_consistency(spec, check)
    _check_length_split(spec, check)
    return spec


def _read_yaml(path: Path, where: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}:{line} invalid YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: cannot read the file: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys (description, paper, ...)")
    return raw


class _Checker:
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


def _substitute(items: list[str], corpora: str) -> list[str]:
    return [item.replace(CORPORA, corpora) for item in items]


def _build(path: Path, raw: dict[str, Any], check: _Checker, corpora: str) -> ExperimentSpec:
    paper = raw["paper"]
    if not isinstance(paper, dict) or not {"citation", "claim"} <= set(paper) <= set(PAPER_KEYS):
        check.fail("paper", "expected a mapping with citation, claim and optionally effect")
    data = check.overrides(raw["data"], "data")
    conditions = raw["conditions"]
    if not isinstance(conditions, dict) or not conditions:
        check.fail("conditions", "expected a mapping of condition name -> list of overrides")
    parsed: dict[str, list[str]] = {}
    for name, overrides in conditions.items():
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            check.fail(f"conditions.{name}", "a name of letters, digits, '_', '.', '+', '-'")
        parsed[name] = _substitute(check.overrides(overrides, f"conditions.{name}"), corpora)
    checkpoint = raw.get("checkpoint")
    if checkpoint is not None:
        checkpoint = Path(check.text(checkpoint, "checkpoint").replace(CORPORA, corpora))
    return ExperimentSpec(
        name=path.stem,
        path=path,
        description=check.text(raw["description"], "description"),
        citation=check.text(paper["citation"], "paper.citation"),
        claim=check.text(paper["claim"], "paper.claim"),
        effect=check.text(paper["effect"], "paper.effect") if "effect" in paper else "",
        data=_substitute(data, corpora),
        data_display=data,
        conditions=parsed,
        budget=_budget(raw, check),
        seeds=int(check.number(raw.get("seeds", 3), "seeds", 2, integer=True)),
        seed=int(check.number(raw.get("seed", 1234), "seed", 0, integer=True)),
        common=_substitute(check.overrides(raw.get("common"), "common"), corpora),
        plots=[_plot(item, i, check) for i, item in enumerate(_items(raw, "plots", check))],
        decode_only=_flag(raw.get("decode_only", False), "decode_only", check),
        base=_substitute(check.overrides(raw.get("base"), "base"), corpora),
        checkpoint=checkpoint,
        length_buckets=_buckets(raw.get("length_buckets"), check),
        compare=_pairs(raw.get("compare"), check),
        corpora=corpora,
        length_split=_length_split(raw.get("length_split"), check, corpora),
        extra_tests=_extra_tests(raw.get("extra_tests"), check),
    )


def _items(raw: dict[str, Any], key: str, check: _Checker) -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        check.fail(key, "expected a list")
    return value


def _flag(value: Any, key: str, check: _Checker) -> bool:
    if not isinstance(value, bool):
        check.fail(key, f"expected true or false, got {value!r}")
    return bool(value)


def _plot(item: Any, index: int, check: _Checker) -> PlotSpec:
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
    if not NAME_PATTERN.fullmatch(name) or name in ("bleu_by_length", "curves"):
        check.fail(f"{key}.name", f"{name!r} is not a free file name")
    y = item["y"] if isinstance(item["y"], list) else [item["y"]]
    series = item.get("series")
    return PlotSpec(
        name=name,
        kind=item["kind"],
        x=check.text(item["x"], f"{key}.x"),
        y=[check.text(v, f"{key}.y") for v in y],
        series=None if series is None else check.text(series, f"{key}.series"),
        log_x=_flag(item.get("log_x", False), f"{key}.log_x", check),
    )


def _buckets(value: Any, check: _Checker) -> list[int]:
    if value is None:
        return [5, 10, 15, 20, 30]
    ok = isinstance(value, list) and value and all(isinstance(v, int) and v >= 1 for v in value)
    if not ok or value != sorted(set(value)):
        check.fail("length_buckets", "expected increasing upper bounds in words, e.g. [5, 10, 20]")
    return list(value)


def _length_split(value: Any, check: _Checker, corpora: str) -> LengthSplit | None:
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


def _extra_tests(value: Any, check: _Checker) -> list[str]:
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


def _check_length_split(spec: ExperimentSpec, check: _Checker) -> None:
    """``${length_split}`` only in ``data``, and only with a ``length_split`` entry."""
    if spec.length_split is None and any(LENGTH_SPLIT in o for o in spec.data):
        check.fail("data", f"{LENGTH_SPLIT} needs a length_split entry ({{from: DIR}})")
    lists = {"common": spec.common, "base": spec.base}
    lists.update({f"conditions.{n}": o for n, o in spec.conditions.items()})
    for where, overrides in lists.items():
        if any(LENGTH_SPLIT in o for o in overrides):
            check.fail(where, f"{LENGTH_SPLIT} belongs in data")
    if spec.extra_tests and spec.decode_only:
        check.fail("extra_tests", "belongs to training experiments, not decode_only ones")


def _budget(raw: dict[str, Any], check: _Checker) -> Budget:
    """``budget_steps`` (updates; the cap with ``converge: true``) or ``budget_minutes``."""
    steps, minutes = raw.get("budget_steps"), raw.get("budget_minutes")
    if steps is None and minutes is None and raw.get("checkpoint") is not None:
        return Budget(steps=1)  # nothing is trained: the file's checkpoint is decoded
    if (steps is None) == (minutes is None):
        check.fail("budget_steps", "give budget_steps (updates) or budget_minutes, one of them")
    converge = _flag(raw.get("converge", False), "converge", check)
    if "patience" in raw and not converge:
        check.fail("patience", "belongs to converge: true")
    patience = int(check.number(raw.get("patience", DEFAULT_PATIENCE), "patience", 1, True))
    if minutes is not None:
        if converge:
            check.fail("converge", "needs budget_steps as its update cap, not budget_minutes")
        return Budget(minutes=float(check.number(minutes, "budget_minutes", 0.01)))
    count = int(check.number(steps, "budget_steps", 1, integer=True))
    return Budget(steps=count, converge=converge, patience=patience)


def _pairs(value: Any, check: _Checker) -> list[Comparison]:
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


def _check_consistency(spec: ExperimentSpec, check: _Checker) -> None:
    """Cross-field rules: decode-only shape, reserved and per-condition keys, plot names."""
    has_model = bool(spec.base) or spec.checkpoint is not None
    if spec.decode_only and not has_model:
        check.fail("base", "a decode_only experiment needs base (overrides) or checkpoint")
    if has_model and not spec.decode_only:
        check.fail("base", "base and checkpoint belong to decode_only experiments")
    if spec.base and spec.checkpoint is not None:
        check.fail("checkpoint", "give base or checkpoint, not both")
    if spec.checkpoint is not None and not spec.checkpoint.is_file():
        check.fail("checkpoint", f"no such file: {spec.checkpoint}")
    lists = {"data": spec.data, "common": spec.common, "base": spec.base}
    lists.update({f"conditions.{n}": o for n, o in spec.conditions.items()})
    for where, overrides in lists.items():
        for override in overrides:
            key = override_key(override)
            if key in RESERVED_KEYS or key.startswith("hydra"):
                hint = RUNNER_HINTS.get(key, "")
                check.fail(where, f"'{key}' is set by the experiment runner{hint}")
            if where.startswith("conditions.") and key in TEST_SET_KEYS:
                check.fail(where, f"'{key}' would change the test set; put it in data")
            search_key = key.startswith("decode.") and key not in (
                "decode.nbest",
                "decode.batch_tokens",
            )
            if spec.decode_only and where.startswith("conditions.") and not search_key:
                check.fail(where, f"'{key}': decode_only conditions set decode.* search keys")
    for i, pair in enumerate(spec.compare):
        for name in (pair.condition, pair.baseline):
            if name not in spec.conditions:
                check.fail(f"compare[{i}]", f"unknown condition '{name}'")
        if pair.metric is not None and pair.metric not in spec.columns:
            check.fail(f"compare[{i}].metric", f"unknown column '{pair.metric}'")
    _check_plots(spec, check)


def _check_plots(spec: ExperimentSpec, check: _Checker) -> None:
    keys = {override_key(o) for overrides in spec.conditions.values() for o in overrides}
    for i, plot in enumerate(spec.plots):
        axes = [("x", plot.x)] if plot.kind == "scatter" else []
        axes += [("y", y) for y in plot.y]
        for axis, column in axes:
            if column not in spec.columns:
                check.fail(
                    f"plots[{i}].{axis}",
                    f"unknown column '{column}'; valid: {', '.join(spec.columns)}",
                )
        if plot.kind == "sweep":
            for axis, key in (("x", plot.x), ("series", plot.series)):
                if key is not None and key not in keys:
                    check.fail(f"plots[{i}].{axis}", f"'{key}' is set by no condition")
