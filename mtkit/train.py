"""``python -m mtkit.train``: the Hydra entry point.

Hydra composes ``conf/`` against the dataclass schemas, picks the run directory
(``hydra.run.dir``) and hands over; everything below takes plain dataclasses. Before
Hydra starts, the overrides are composed once more to turn a bad key, a bad value or an
unwritable run directory into a one-line error instead of a traceback.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mtkit.config import CONF_DIR, RunConfig, to_run_config
from mtkit.config.compose import check_overrides, register_configs
from mtkit.errors import ConfigError, MtkitError
from mtkit.training import launch

log = logging.getLogger("mtkit")


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    _setup_console_logging()
    # imported here so that config errors are reported before torch loads
    from mtkit.runtime import tune_process
    from mtkit.training.distributed import env_rank
    from mtkit.training.signals import Aborted
    from mtkit.training.trainer import fit

    tune_process()
    try:
        run = to_run_config(cfg)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = fit(run, run_dir)
    except MtkitError as error:
        _fail(error)
    except Aborted as abort:
        if launch.speaks():
            print("mtkit-train: aborted; last.pt was not updated", file=sys.stderr)
        raise SystemExit(128 + abort.number) from None
    if summary.get("signal"):
        raise SystemExit(128 + int(summary["signal"]))
    if env_rank() == 0:
        print(f"run directory: {run_dir}", file=sys.stderr)


def _fail(error: MtkitError) -> NoReturn:
    """The one way this command reports a user's mistake: one line, exit status 2 (of the
    processes that ``train.processes`` starts, rank 0 prints it: mtkit.training.launch)."""
    line = f"mtkit-train: error: {' '.join(str(error).split())}"
    if launch.record_error(line):
        print(line, file=sys.stderr)
    raise SystemExit(2) from None


def _setup_console_logging() -> None:
    from mtkit.training.distributed import env_rank

    logger = logging.getLogger("mtkit")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if env_rank() == 0 else logging.WARNING)
    logger.propagate = False


def _processes(run: RunConfig) -> int:
    """How many training processes to start (``train.processes``, at most one per usable
    core; ``auto`` asks whether CUDA is there only when the device is ``auto``, which
    loads torch)."""
    from mtkit.runtime import available_cores

    cuda = False
    if run.train.processes == "auto" and run.train.device == "auto":
        import torch

        cuda = torch.cuda.is_available()
    return launch.resolve_processes(run.train, available_cores(), cuda)


def _check_processes(run: RunConfig) -> None:
    """``train.processes`` > 1 starts its own processes, so not under torchrun (a GPU
    device is refused by each process's Trainer, once resolved)."""
    processes = run.train.processes
    if processes != "auto" and processes > 1 and launch.under_torchrun():
        raise ConfigError(
            f"train.processes={processes} starts its own training processes; under torchrun "
            "leave it at 1 (torchrun's --nproc_per_node sets the processes)"
        )


def _check_run_files(overrides: list[str]) -> None:
    """A ``hydra.run.dir`` given on the command line is checked before Hydra or any
    training process touches it (:func:`mtkit.training.run_files.check_run_files`)."""
    from mtkit.training.run_files import check_run_files

    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "hydra.run.dir" and value and "${" not in value:
            check_run_files(Path(value).expanduser().absolute())


def main() -> None:
    """Check the overrides, then train.

    A signal before training starts (or after it ends) stops the command at once, with one
    line and exit status 128 + N; during training the trainer's own handling takes over
    (finish the step, save last.pt, stop).
    """
    from mtkit.runtime import prefer_passive_wait

    prefer_passive_wait()  # before torch loads (mtkit.runtime explains why)
    from mtkit.cli.io import exit_on_signals

    with exit_on_signals("mtkit-train", quiet=not launch.speaks()):
        _main()


def _main() -> None:
    overrides = sys.argv[1:]
    plain = [a for a in overrides if not a.startswith("-")]
    flags_only_hydra = any(a.startswith("-") for a in overrides)
    processes = 1
    try:
        if not flags_only_hydra:
            run = check_overrides(plain)
            _check_processes(run)
            _check_run_files(plain)
            processes = 1 if launch.started_here() else _processes(run)
    except MtkitError as error:
        _fail(error)
    if processes > 1:
        from mtkit.runtime import available_cores

        raise SystemExit(launch.run_processes(processes, overrides, available_cores()))
    from mtkit.training.distributed import (
        env_rank,  # torch loads only once the options are known good
    )

    scratch = None
    if env_rank() > 0:
        # Only rank 0 writes a run directory; the others get a throwaway one.
        scratch = tempfile.mkdtemp(prefix="mtkit-rank-")
        sys.argv += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]
    register_configs()  # @hydra.main composes against the schema
    try:
        _hydra_main()
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
