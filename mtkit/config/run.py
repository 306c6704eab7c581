"""One training run's configuration (:class:`RunConfig`), and turning a composed tree into it.

:func:`to_run_config` takes what Hydra composed (or any OmegaConf tree, such as a saved
``config.yaml``) and builds plain dataclasses whose checks run on construction, so
everything below the entry points is testable without Hydra. Every mistake becomes one
:class:`~mtkit.errors.ConfigError` line that names the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtkit.config.data import DataConfig, TokenizerConfig
from mtkit.config.model import LossConfig, ModelConfig
from mtkit.config.search import DecodeConfig
from mtkit.config.train import TrainConfig
from mtkit.errors import ConfigError


@dataclass
class RunConfig:
    """Everything one training run needs; saved resolved as ``config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Resolve a composed config and build the checked :class:`RunConfig`."""
    try:
        if "hydra" in cfg:
            cfg = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
        _reject_unknown_keys(cfg, RunConfig, [])
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
        run = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(describe_omegaconf_error(error)) from None
    assert isinstance(run, RunConfig)
    _require_data_source(run.data)
    return run


def to_yaml(run: RunConfig) -> str:
    """The resolved configuration as YAML (what ``config.yaml`` holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(run))


def from_dict(section: type, values: dict[str, Any]) -> Any:
    """Rebuild one config section (e.g. :class:`ModelConfig`) from a plain dict, checked."""
    try:
        node = OmegaConf.merge(OmegaConf.structured(section), values)
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as error:
        raise ConfigError(describe_omegaconf_error(error)) from None


def valid_keys(schema: type, path: list[str]) -> list[str]:
    """The field names of the dataclass reached by following ``path`` from ``schema``."""
    node: Any = schema
    for key in path:
        found = {f.name: f for f in fields(node)}.get(key)
        if found is None or not is_dataclass(found.default_factory):  # type: ignore[arg-type]
            return []
        node = found.default_factory
    return [f.name for f in fields(node)]


def describe_omegaconf_error(error: OmegaConfBaseException) -> str:
    """Turn an OmegaConf/Hydra error into one line that names the key and what is valid."""
    key = getattr(error, "full_key", None) or ""
    message = str(getattr(error, "msg", None) or error).splitlines()[0]
    unknown = re.search(r"Key '([^']+)' (?:is )?not in", message)
    if unknown:
        parts = key.split(".") if key else [unknown.group(1)]
        choices = valid_keys(RunConfig, parts[:-1])
        where = ".".join(parts)
        hint = f"; valid keys: {', '.join(choices)}" if choices else ""
        return f"unknown config key '{where}'{hint}"
    if "missing mandatory value" in message.lower():
        return f"config key '{key}' must be set (for example {key}=VALUE on the command line)"
    return f"config key '{key}': {message}" if key else message


def _reject_unknown_keys(node: Any, schema: type, path: list[str]) -> None:
    """Catch keys added with Hydra's ``+key=value``, which bypass the schema."""
    if not isinstance(node, DictConfig):
        return
    known = {f.name: f for f in fields(schema)}
    for key in node:
        name = str(key)
        if name not in known:
            where = ".".join([*path, name])
            raise ConfigError(f"unknown config key '{where}'; valid keys: {', '.join(known)}")
        factory = known[name].default_factory
        if is_dataclass(factory):
            _reject_unknown_keys(node[name], factory, [*path, name])  # type: ignore[arg-type]


def _require_data_source(data: DataConfig) -> None:
    if data.format == "dir" and not data.dir:
        raise ConfigError("config key 'data.dir' must be set (a folder of {split}.{lang} files)")
    if data.format == "hf" and not data.name:
        raise ConfigError("config key 'data.name' must be set (a dataset id or local path)")
