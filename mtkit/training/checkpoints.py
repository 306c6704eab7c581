"""The checkpoints one training run writes, and the ``last.pt`` it resumes from.

At a validation the run writes ``best.pt`` when the early-stopping metric improved, a
``step-XXXXXX.pt`` kept for averaging (the last ``train.keep_checkpoints``), and
``last.pt`` with everything an exact resume needs: optimizer, schedules, progress, the
random state and the weights' moving average if there is one, which is also written as
``ema.pt`` (:mod:`mtkit.model.checkpoint` holds the file format).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mtkit.config import RunConfig
from mtkit.corpus.tokenizer import TextCodec
from mtkit.errors import TrainingError
from mtkit.model import checkpoint
from mtkit.model.seq2seq import Seq2Seq
from mtkit.training.distributed import DistInfo
from mtkit.training.ema import EMA_FILE, MovingAverage
from mtkit.training.progress import Progress

log = logging.getLogger("mtkit")


@dataclass
class RunCheckpoints:
    """Writes one run's checkpoints into its run directory and reads ``last.pt`` back.

    ``schedules`` are the objects saved beside the optimizer, by name (the learning rate
    and early stopping: each has ``state_dict`` and ``load_state_dict``). ``average`` is
    the weights' moving average (``train.ema_decay``; rank 0 only), None without one.
    """

    run: RunConfig
    run_dir: Path
    model: Seq2Seq
    codec: TextCodec
    optimizer: torch.optim.Optimizer
    schedules: dict[str, Any]
    device: torch.device
    average: MovingAverage | None = None

    def save(
        self, name: str, step: int, progress: Progress | None = None, model: Seq2Seq | None = None
    ) -> None:
        """Write checkpoint ``name`` of ``model`` (the run's model unless given); with
        ``progress``, also the state that resumes training.

        Weights that are not finite are refused: a checkpoint is never one that would
        translate into nothing, or resume into NaN.
        """
        model = model or self.model
        for tensor in model.state_dict().values():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise TrainingError(f"weights are not finite at step {step}; {name} not written")
        train_state = None
        if progress is not None:
            train_state = checkpoint.training_state(
                self.optimizer, self.schedules, asdict(progress), self.device
            )
            if self.average is not None:
                train_state["ema"] = self.average.state_dict()
        payload = checkpoint.build_payload(model, self.codec, self.run, train_state)
        checkpoint.save_checkpoint(payload, self.run_dir / name)

    def save_step(self, step: int) -> None:
        """The validation checkpoint kept for averaging; the oldest beyond the kept ones go."""
        keep = self.run.train.keep_checkpoints
        if keep:
            self.save(checkpoint.step_file_name(step), step)
            checkpoint.prune_step_checkpoints(self.run_dir, keep)

    def save_average(self, step: int) -> None:
        """``ema.pt``: the moving average as an ordinary checkpoint (none without one)."""
        if self.average is not None:
            self.save(EMA_FILE, step, model=self.average.model)

    def resume(self, path: str, dist: DistInfo) -> Progress:
        """Load ``last.pt`` into the model, optimizer and schedules; returns its progress.

        Rank 0 continues the saved random state; the other ranks, which saved none, seed
        from the step so that their dropout does not repeat the first steps'.
        """
        state = checkpoint.restore_training(
            path, self.model, self.codec, self.optimizer, self.schedules
        )
        progress = Progress.from_state(state["progress"])
        if self.average is not None:
            self.average.load_state_dict(state.get("ema"))
        if dist.is_main:
            carry_best(Path(path), self.run_dir)
            torch.set_rng_state(state["rng_cpu"])
            if self.device.type == "cuda" and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        else:
            torch.manual_seed(self.run.train.seed + dist.rank + progress.step)
        log.info("resumed from %s at step %d (epoch %d)", path, progress.step, progress.epoch + 1)
        return progress


def carry_best(resumed_from: Path, run_dir: Path) -> None:
    """Resuming into a new run directory brings the old ``best.pt`` along."""
    best = resumed_from.parent / "best.pt"
    target = run_dir / "best.pt"
    if best.is_file() and best.resolve() != target.resolve():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, target)
