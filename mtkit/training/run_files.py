"""The files a run directory holds besides its checkpoints.

``config.yaml`` (the resolved configuration), ``train.log`` (the log lines),
``metrics.csv`` (one row per validation, columns :data:`METRIC_FIELDS`, and
:data:`EMA_FIELDS` in a run with a moving average of the weights),
``summary.json`` (how the run ended) and, with ``train.tensorboard=true``, TensorBoard
event files with the same metrics. Only rank 0 writes them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mtkit.config import RunConfig, to_yaml
from mtkit.config.paths import node_kind, output_target, write_atomically
from mtkit.errors import ConfigError, DataError, TrainingError

log = logging.getLogger("mtkit")

METRIC_FIELDS = [
    "step",
    "epoch",
    "train_loss",
    "train_ppl",
    "val_loss",
    "val_ppl",
    "val_bleu",
    "tokens_per_s",
    "lr",
    "teacher_forcing",
    "elapsed_min",
]

# the scores of the weights' moving average (train.ema_decay), after the others
EMA_FIELDS = ["ema_val_loss", "ema_val_ppl", "ema_val_bleu"]

# The files of a run directory, each a regular file (:func:`check_run_files`).
RUN_FILES = (
    "config.yaml",
    "train.log",
    "metrics.csv",
    "summary.json",
    "best.pt",
    "last.pt",
    "ema.pt",
)

# metrics.csv column -> TensorBoard tag
_TENSORBOARD_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/valid",
    "val_ppl": "perplexity/valid",
    "val_bleu": "bleu/valid",
    "lr": "learning_rate",
    "tokens_per_s": "speed/target_tokens_per_s",
    "teacher_forcing": "teacher_forcing_ratio",
    "ema_val_loss": "loss/valid_ema",
    "ema_val_bleu": "bleu/valid_ema",
}


class RunFiles:
    """Writes config.yaml, metrics.csv, summary.json and TensorBoard events of one run."""

    def __init__(self, run_dir: Path, tensorboard: bool = False) -> None:
        self.run_dir = run_dir
        self._writer: Any = _tensorboard_writer(run_dir) if tensorboard else None

    def write_config(self, run: RunConfig) -> None:
        self._write("config.yaml", to_yaml(run))

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv from the whole history."""
        text = io.StringIO()
        averaged = any("ema_val_loss" in row for row in history)
        fields = METRIC_FIELDS + EMA_FIELDS if averaged else METRIC_FIELDS
        writer = csv.DictWriter(text, fieldnames=fields, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        self._write("metrics.csv", text.getvalue())

    def _write(self, name: str, text: str) -> None:
        """Atomically (temp file, then rename; never over a special file); a failure is one
        line naming the file."""
        path = self.run_dir / name
        try:
            write_atomically(output_target(path), lambda stream: stream.write(text.encode()))
        except DataError as error:
            raise TrainingError(str(error)) from None

    def add_row(self, history: list[dict[str, Any]]) -> None:
        """After a validation: metrics.csv, and the newest row as TensorBoard scalars."""
        self.write_metrics(history)
        if self._writer is None or not history:
            return
        row = history[-1]
        for column, tag in _TENSORBOARD_TAGS.items():
            value = row.get(column)
            if isinstance(value, int | float) and math.isfinite(value):
                self._writer.add_scalar(tag, value, row["step"])
        self._writer.flush()

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._write("summary.json", json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tensorboard_writer(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "train.tensorboard=true needs the tensorboard package "
            "(pip install 'mtkit[tensorboard]')"
        ) from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def check_run_files(run_dir: Path) -> None:
    """Refuse a run directory where a file of the run (:data:`RUN_FILES`, a
    ``step-XXXXXX.pt``) is a folder, a device, a named pipe or a socket: writing it would
    block (a pipe), fail at every line (``/dev/full``) or replace the node (a checkpoint
    renamed over it). One line naming the file."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(
            f"hydra.run.dir={run_dir}: is {node_kind(run_dir) or 'a file'}, not a folder; "
            "choose another hydra.run.dir"
        )
    steps = sorted(p.name for p in run_dir.glob("step-*.pt")) if run_dir.is_dir() else []
    for name in (*RUN_FILES, *steps):
        kind = node_kind(run_dir / name)
        if kind is not None:
            raise ConfigError(
                f"{run_dir / name}: is {kind}, not a regular file; a run writes its {name} "
                "there: remove it or choose another hydra.run.dir"
            )


@contextmanager
def log_file(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Send mtkit's log lines to ``run_dir/train.log`` as well as the console (after
    :func:`check_run_files`: ``train.log`` is appended to, so it must be a regular file)."""
    if not enabled:
        yield
        return
    check_run_files(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"hydra.run.dir={run_dir}: cannot create it ({error.strerror or error})"
        ) from None
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
