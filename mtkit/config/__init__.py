"""Typed configuration: a dataclass schema for every config group, and composing ``conf/``.

The dataclasses are the single source of truth for option names, types and defaults,
one module per group: :mod:`~mtkit.config.data` (``data``, ``tokenizer``),
:mod:`~mtkit.config.model` (``model``, ``loss``), :mod:`~mtkit.config.train`
(``train``), :mod:`~mtkit.config.search` (``decode``) and :mod:`~mtkit.config.run`
(the whole run, and building it from a composed tree). Their checks run on
construction, so everything below the entry points is testable without Hydra.

:mod:`~mtkit.config.compose` is the one module that imports Hydra: the commands compose
their overrides there. This package does not load it, so the layers below stay free of
Hydra; :func:`register_configs` is looked up in it on first use.
"""

from __future__ import annotations

from typing import Any

from mtkit.config.data import DataConfig, TokenizerConfig
from mtkit.config.model import ATTENTION_TYPES, LossConfig, ModelConfig
from mtkit.config.paths import CONF_DIR, DATA_DIR, PACKAGE_DIR, PROJECT_ROOT
from mtkit.config.run import (
    RunConfig,
    describe_omegaconf_error,
    from_dict,
    to_run_config,
    to_yaml,
    valid_keys,
)
from mtkit.config.search import DecodeConfig, SearchOptions
from mtkit.config.train import (
    TRAIN_GROUPS,
    BudgetConfig,
    LoopConfig,
    OptimizerConfig,
    RunDirConfig,
    RuntimeConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "ATTENTION_TYPES",
    "CONF_DIR",
    "DATA_DIR",
    "PACKAGE_DIR",
    "PROJECT_ROOT",
    "TRAIN_GROUPS",
    "BudgetConfig",
    "DataConfig",
    "DecodeConfig",
    "LoopConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RunConfig",
    "RunDirConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "SearchOptions",
    "TokenizerConfig",
    "TrainConfig",
    "describe_omegaconf_error",
    "from_dict",
    "register_configs",
    "to_run_config",
    "to_yaml",
    "valid_keys",
]


def __getattr__(name: str) -> Any:
    """``register_configs`` from :mod:`mtkit.config.compose`, loading Hydra only when asked."""
    if name == "register_configs":
        from mtkit.config import compose

        return compose.register_configs
    raise AttributeError(f"module 'mtkit.config' has no attribute {name!r}")
