"""Reading and checking experiment files.

Every mistake in a file is a :class:`~mtkit.errors.ConfigError` whose one-line message
names the file and the key (``conf/experiment/x.yaml: conditions.a: ...``), raised
before anything is trained. Overrides are only checked for their shape here; their
keys and values are composed by :func:`mtkit.experiment.overrides.check_stages`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mtkit.errors import ConfigError
from mtkit.experiment import fields
from mtkit.experiment.fields import Checker
from mtkit.experiment.overrides import override_key
from mtkit.experiment.spec import (
    CORPORA,
    LENGTH_SPLIT,
    NAME_PATTERN,
    PAPER_KEYS,
    REQUIRED_KEYS,
    RESERVED_KEYS,
    TEST_SET_KEYS,
    TOP_KEYS,
    ExperimentSpec,
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


def load_spec(name: str, corpora: str | None = None, follow: bool = True) -> ExperimentSpec:
    """Read and check ``conf/experiment/NAME.yaml`` (or a YAML path).

    ``follow``: also check the experiment a ``base_from`` names (one level deep, so two
    files naming each other cannot loop).
    """
    path = experiment_path(name)
    where = display(path)
    raw = _read_yaml(path, where)
    check = Checker(where)
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
    if spec.base_from is not None and follow:
        _check_base_from(spec, check)
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


def _substitute(items: list[str], corpora: str) -> list[str]:
    return [item.replace(CORPORA, corpora) for item in items]


def _build(path: Path, raw: dict[str, Any], check: Checker, corpora: str) -> ExperimentSpec:
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
        budget=fields.budget(raw, check),
        seeds=int(check.number(raw.get("seeds", 3), "seeds", 2, integer=True)),
        seed=int(check.number(raw.get("seed", 1234), "seed", 0, integer=True)),
        common=_substitute(check.overrides(raw.get("common"), "common"), corpora),
        plots=[
            fields.plot(item, i, check) for i, item in enumerate(fields.items(raw, "plots", check))
        ],
        decode_only=fields.flag(raw.get("decode_only", False), "decode_only", check),
        base=_substitute(check.overrides(raw.get("base"), "base"), corpora),
        base_from=fields.base_from(raw.get("base_from"), check),
        checkpoint=checkpoint,
        length_buckets=fields.buckets(raw.get("length_buckets"), check),
        compare=fields.pairs(raw.get("compare"), check),
        corpora=corpora,
        length_split=fields.length_split(raw.get("length_split"), check, corpora),
        extra_tests=fields.extra_tests(raw.get("extra_tests"), check),
    )


def _check_length_split(spec: ExperimentSpec, check: Checker) -> None:
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


def _check_base_from(spec: ExperimentSpec, check: Checker) -> None:
    """The experiment named exists, trains models (is not decoding-only) and has the condition."""
    assert spec.base_from is not None
    try:
        source = load_spec(spec.base_from.experiment, spec.corpora, follow=False)
    except ConfigError as error:
        check.fail("base_from.experiment", str(error))
    name, condition = source.name, spec.base_from.condition
    if source.decode_only:
        check.fail("base_from.experiment", f"{name} trains no models (it is decode_only)")
    if condition not in source.conditions:
        known = ", ".join(source.conditions)
        check.fail("base_from.condition", f"{name} has no condition {condition!r} ({known})")
    if (source.data_display, source.length_split) != (spec.data_display, spec.length_split):
        theirs = " ".join(source.data_display)
        check.fail("data", f"must be {name}'s data ({theirs}), the data its models train on")


def _check_consistency(spec: ExperimentSpec, check: Checker) -> None:
    """Cross-field rules: decode-only shape, reserved and per-condition keys, plot names."""
    models = {
        "base": bool(spec.base),
        "base_from": spec.base_from is not None,
        "checkpoint": spec.checkpoint is not None,
    }
    given = [key for key, present in models.items() if present]
    if spec.decode_only and not given:
        check.fail("base", "a decode_only experiment needs base, base_from or checkpoint")
    if given and not spec.decode_only:
        check.fail(given[0], "base, base_from and checkpoint belong to decode_only experiments")
    if len(given) > 1:
        check.fail(given[1], f"give one of base, base_from and checkpoint, not {given[0]} too")
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


def _check_plots(spec: ExperimentSpec, check: Checker) -> None:
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
