"""The one place that composes ``conf/`` with Hydra.

Every command that takes training options (``mtkit.train``, ``mtkit.data``,
``mtkit.shortlist``, the experiment runner) turns its ``key=value`` overrides into a
checked :class:`~mtkit.config.run.RunConfig` here, so a misspelt key, a bad value or an
unknown preset is the same one-line :class:`~mtkit.errors.ConfigError` everywhere. The
rest of :mod:`mtkit.config` does not import Hydra, so the layers below load without it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtkit.config.paths import CONF_DIR, DATA_DIR
from mtkit.config.run import RunConfig, describe_omegaconf_error, to_run_config
from mtkit.errors import ConfigError


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore and the ``${mtkit_data:NAME}`` resolver.

    ``conf/train.yaml`` names the schema (``mtkit_schema``) first in its defaults, so
    Hydra refuses an unknown key or a wrongly typed value while it composes. The resolver
    gives the embedded corpora a location that does not depend on the working directory.
    """
    ConfigStore.instance().store(name="mtkit_schema", node=RunConfig)
    if not OmegaConf.has_resolver("mtkit_data"):
        OmegaConf.register_new_resolver("mtkit_data", lambda name: str(DATA_DIR / name))


def compose_run(overrides: list[str]) -> RunConfig:
    """The checked :class:`RunConfig` that ``python -m mtkit.train OVERRIDES`` trains."""
    run, _ = _compose(overrides)
    return run


def check_overrides(overrides: list[str]) -> RunConfig:
    """:func:`compose_run`, and check that the run directory (``hydra.run.dir``) can be
    created, so that a training run fails before it loads anything."""
    run, run_dir = _compose(overrides)
    _check_writable(run_dir)
    return run


def _compose(overrides: list[str]) -> tuple[RunConfig, Path]:
    """Compose ``train.yaml`` with ``overrides``: the run's config and its run directory."""
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        run_dir = Path(str(cfg.hydra.run.dir))
        run = to_run_config(cfg)
    except HydraException as error:
        raise ConfigError(describe_hydra_error(error)) from None
    except OmegaConfBaseException as error:
        raise ConfigError(describe_omegaconf_error(error)) from None
    return run, run_dir


def describe_hydra_error(error: HydraException) -> str:
    """One line for a Hydra error; an unknown preset lists the group's presets."""
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):
        return describe_omegaconf_error(cause)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("Available options"):
            choices = []
            for option in lines[i + 1 :]:
                if option.startswith("Config search path"):
                    break
                choices.append(option)
            return f"{' '.join(lines[:i])}; {line} {', '.join(choices)}"
    return "; ".join(lines[:2]) if lines else type(error).__name__


def _check_writable(run_dir: Path) -> None:
    """Try to create a scratch folder where the run directory will go."""
    existing = run_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a directory")
        Path(tempfile.mkdtemp(prefix=".mtkit-check-", dir=existing)).rmdir()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            f"cannot write the run directory {run_dir} (hydra.run.dir): {reason}"
        ) from None
