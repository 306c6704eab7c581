"""Hydra overrides of experiment runs: merging, typed values, and checking before any run.

Every run of an experiment is ``python -m mtkit.train`` with one list of ``key=value``
overrides: the experiment's ``data``, its ``common`` list, the condition's list, the
command line's, then the runner's own (budget, seed). All of them are composed once,
before anything trains, so a misspelt key fails in a second and not after an hour.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mtkit.config import RunConfig
from mtkit.errors import ConfigError

# A value Hydra's override grammar takes unquoted.
_PLAIN = re.compile(r"[\w./@%~+\-]+")


def override_key(override: str) -> str:
    """The key an override sets: ``model.cell=lstm`` -> ``model.cell``, ``+a.b=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def override_values(overrides: list[str]) -> dict[str, Any]:
    """Override keys -> typed values (YAML scalars: ``5`` -> 5, ``gnmt`` -> 'gnmt'), last wins."""
    values: dict[str, Any] = {}
    for override in overrides:
        text = override.split("=", 1)[1] if "=" in override else ""
        try:
            values[override_key(override)] = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            values[override_key(override)] = text
    return values


def merge(*lists: list[str]) -> list[str]:
    """Concatenate override lists; a key set twice keeps only its last value."""
    last: dict[str, str] = {}
    for overrides in lists:
        for override in overrides:
            key = override_key(override)
            last.pop(key, None)  # re-insert so that the order follows the last setting
            last[key] = override
    return list(last.values())


def hydra_value(path: Path | str) -> str:
    """A path as a Hydra override value, quoted when it holds special characters."""
    text = str(path)
    if _PLAIN.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def runner_overrides(budget: list[str], seed: int) -> list[str]:
    """What the runner sets on every training run: the budget's overrides and the seed."""
    return [*budget, f"train.seed={seed}"]


def check_stages(stages: list[tuple[str, list[str]]], where: str, run_dir: Path) -> None:
    """Compose every condition's overrides once; on a mistake, name the list that made it.

    ``stages`` is ``[(label, overrides), ...]``: shared lists (``data``, ``common``, ...)
    and then one ``conditions.<name>`` list per condition, each composed on top of all the
    shared ones. When a condition fails, the shared lists are composed one by one to find
    the first that breaks, so an error names ``data``, ``common`` or the condition.
    """
    budget = ["train.max_steps=1", "train.max_minutes=null"]
    fixed = [*runner_overrides(budget, 0), f"hydra.run.dir={hydra_value(run_dir)}"]
    shared_stages = [(label, o) for label, o in stages if not label.startswith("conditions.")]
    shared = merge(*(o for _, o in shared_stages))
    for label, overrides in stages:
        if not label.startswith("conditions."):
            continue
        error = _compose_error(merge(shared, overrides, fixed))
        if error is None:
            continue
        prefix: list[str] = []
        for shared_label, shared_overrides in shared_stages:
            prefix = merge(prefix, shared_overrides)
            shared_error = _compose_error(merge(prefix, fixed))
            if shared_error is not None:
                raise ConfigError(f"{where}: {shared_label}: {shared_error}")
        raise ConfigError(f"{where}: {label}: {error}")


def _compose_error(overrides: list[str]) -> str | None:
    """The one-line message of composing ``overrides``, or None when they are fine."""
    from mtkit.config.compose import check_overrides

    try:
        check_overrides(overrides)
    except ConfigError as error:
        return str(error)
    return None


def compose(overrides: list[str]) -> RunConfig:
    """The checked :class:`RunConfig` a training run with ``overrides`` would get."""
    from mtkit.config.compose import compose_run

    return compose_run([o for o in overrides if not override_key(o).startswith("hydra")])
