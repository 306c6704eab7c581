"""The training loop: ``fit`` -> ``train_step`` -> ``validate``, with exact resume.

``fit(run, run_dir)`` takes plain dataclasses (no Hydra), so tests drive it directly.
A run directory ends up with ``config.yaml``, ``train.log``, ``metrics.csv``,
``summary.json`` (see :mod:`mtkit.training.run_files`), ``best.pt``, ``last.pt`` and the last
``train.keep_checkpoints`` validation checkpoints ``step-XXXXXX.pt`` (see
:mod:`mtkit.model.checkpoint`), and with ``train.ema_decay`` the weights' moving average
``ema.pt`` (:mod:`mtkit.training.ema`). ``last.pt`` carries the optimizer, schedule, RNG
and data-order state: resuming from it continues exactly where the run stopped.

A step is one optimizer update, made from ``train.accumulate`` consecutive batches of the
epoch (fewer at the end of an epoch); every count and schedule counts updates.

With several processes, rank 0 alone validates and writes files; how the processes
divide the batches is :mod:`mtkit.training.parallel`'s business.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from mtkit.config import RunConfig
from mtkit.corpus.batching import TokenBatchSampler
from mtkit.corpus.cache import Corpus
from mtkit.errors import ConfigError
from mtkit.model.loss import Criterion
from mtkit.model.seq2seq import build_model
from mtkit.runtime import autocast_context, resolve_device, resolve_precision, set_threads
from mtkit.training import distributed, launch
from mtkit.training.checkpoints import RunCheckpoints
from mtkit.training.ema import EMA_FILE, MovingAverage, score_saved_average, validate_average
from mtkit.training.init_from import initial_model, start_from_checkpoint
from mtkit.training.optim import EarlyStopping, LearningRate, build_optimizer, teacher_forcing_ratio
from mtkit.training.parallel import batch_division
from mtkit.training.progress import Eta, Progress
from mtkit.training.run_files import RunFiles, log_file
from mtkit.training.signals import Interrupted, StopSignals
from mtkit.training.startup import (
    check_loss_settings,
    check_run_directory_on_main,
    check_validation_pairs,
    describe_start,
    load_shared_corpus,
    peer_loss_reported,
)
from mtkit.training.step import apply_update, gather_gradients, train_step
from mtkit.training.validation import Scorer

__all__ = ["Trainer", "fit", "train_step"]

log = logging.getLogger("mtkit")


class Outcome(enum.Enum):
    """What a validation decided. Rank 0 decides; the value is the code it broadcasts."""

    GO_ON = 0.0
    EARLY_STOP = 1.0
    SIGNAL = 2.0  # interrupted: last.pt is written on the way out, this validation redone

    @property
    def stop_reason(self) -> str:
        return {Outcome.EARLY_STOP: "early_stopping", Outcome.SIGNAL: "signal"}.get(self, "")


class Trainer:
    """One training run: built from its config, then :meth:`fit` until it stops."""

    def __init__(self, run: RunConfig, run_dir: Path, corpus: Corpus | None = None) -> None:
        self.run, self.run_dir, cfg = run, run_dir, run.train
        self._setup_processes()
        self.precision = resolve_precision(cfg.precision, self.device)
        check_run_directory_on_main(run_dir, cfg, self.dist, self.device)
        self.init_from: dict[str, Any] | None = None
        if cfg.init_from:  # fine-tuning: the checkpoint's subwords encode the new data
            self.run, self.init_from = start_from_checkpoint(run, run_dir)
            run = self.run
        self.corpus = corpus or load_shared_corpus(run, self.dist, self.device)
        check_validation_pairs(run, self.corpus)
        self._build_model()
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        self.average = (  # rank 0 alone validates and saves it
            MovingAverage(self.model, cfg.ema_decay)
            if cfg.ema_decay and self.dist.is_main
            else None
        )
        self.lr = LearningRate(cfg)
        self.stopping = EarlyStopping(cfg.early_stopping_metric, cfg.patience)
        self.progress = Progress()
        self.sampler = TokenBatchSampler.for_training(
            self.corpus.splits["train"], run.data, cfg.seed
        )
        self.scorer = Scorer(
            self.corpus.codec, run.decode, self.criterion, run.data.batch_tokens, self.device,
            self.precision, run.data.max_len,
        )  # fmt: skip
        self.checkpoints = RunCheckpoints(
            run, run_dir, self.model, self.corpus.codec, self.optimizer,
            {"lr": self.lr, "early_stopping": self.stopping}, self.device, self.average,
        )  # fmt: skip
        if cfg.resume:
            self.progress = self.checkpoints.resume(cfg.resume, self.dist)
        else:
            torch.manual_seed(cfg.seed + self.dist.rank)
        self.trainable: torch.nn.Module = (
            DistributedDataParallel(self.model) if self.dist.enabled else self.model
        )
        self.signals = StopSignals(announce=self.dist.is_main)
        self.steps_per_epoch = -(-len(self._epoch_batches(0)) // cfg.accumulate)  # updates
        self.valid_every = cfg.valid_every or max(1, min(self.steps_per_epoch // 2, 2000))
        self.files = RunFiles(run_dir, cfg.tensorboard) if self.dist.is_main else None

    def _setup_processes(self) -> None:
        """The device, the process group and threads, and how the processes divide batches."""
        cfg = self.run.train
        self.device = resolve_device(cfg.device)
        if launch.started_here() > 1 and self.device.type != "cpu":
            raise ConfigError(
                f"train.processes starts CPU training processes, but train.device={cfg.device} "
                f"resolved to {self.device}; set train.device=cpu, or use torchrun on GPUs"
            )
        self.dist = distributed.setup(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        set_threads(cfg.threads)
        self.division = batch_division(self.dist, launch.started_here())

    def _build_model(self) -> None:
        """The model (initialised from ``train.seed``) and its training loss."""
        run, train = self.run, self.corpus.splits["train"]
        torch.manual_seed(run.train.seed)
        if self.init_from is not None:
            self.model = initial_model(self.init_from, run, self.corpus.codec, train.tgt_values)
        else:
            self.model = build_model(
                run.model, self.corpus.codec.src, self.corpus.codec.tgt, train.tgt_values
            )
        self.model.to(self.device)
        check_loss_settings(run, len(self.model.output_ids))
        counts = self.model.column_counts(train.tgt_values, len(train))
        self.criterion = Criterion(run.loss, len(self.model.output_ids), counts)

    def _describe_updates(self) -> None:
        """A log line for accumulation and the moving average, when they are on."""
        cfg = self.run.train
        if cfg.accumulate > 1:
            log.info(
                "updates of %d batches each (train.accumulate): %d updates per epoch",
                cfg.accumulate,
                self.steps_per_epoch,
            )
        if self.average is not None:
            log.info("moving average of the weights: decay %g, saved as ema.pt", cfg.ema_decay)

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train until a budget, early stopping or a signal ends the run; return a summary."""
        if self.files is not None:
            self.files.write_config(self.run)
            self.files.write_metrics(self.progress.history)
            describe_start(
                self.run, self.corpus, self.model, self.device, self.precision, self.dist
            )
            self._describe_updates()
        start = time.perf_counter() - self.progress.elapsed
        self.eta = Eta.for_run(self.run.train, self.steps_per_epoch, self.progress.step)
        try:
            with self.signals:
                reason = self._run_epochs(start)
                return self._finish(reason, start)
        finally:
            if self.files is not None:
                self.files.close()

    def _run_epochs(self, start: float) -> str:
        """Epochs of training steps, validating every ``valid_every``; returns why it stopped."""
        max_epochs, accumulate = self.run.train.max_epochs, self.run.train.accumulate
        while True:
            batches = self._epoch_batches(self.progress.epoch)
            if self.progress.batch_in_epoch == 0 and self.dist.is_main:
                log.info("epoch %d: %s", self.progress.epoch + 1, self.sampler.describe(batches))
            while self.progress.batch_in_epoch < len(batches):
                reason = self._budget_reason(start)
                if reason:
                    return reason
                first = self.progress.batch_in_epoch
                self.train_step(batches[first : first + accumulate], start)
                if self.progress.step % self.valid_every == 0:
                    reason = self._validate_and_save(start)
                if distributed.any_rank(self.signals.received, self.dist, self.device):
                    reason = "signal"
                if reason:
                    return reason
            self.progress.next_epoch()
            if max_epochs is not None and self.progress.epoch >= max_epochs:
                return "max_epochs"

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The batches this process steps through in ``epoch``."""
        return self.division.epoch(self.sampler.batches(epoch))

    def train_step(self, group: list[np.ndarray], start: float) -> None:
        """One update on the batches of ``group`` (their pair indices), with the bookkeeping
        around it: loss and tokens over all of them, skipped updates, progress lines."""
        cfg, p = self.run.train, self.progress
        rate = self.lr.apply(self.optimizer, p.step)
        ratio = teacher_forcing_ratio(cfg, p.step)
        step_start = time.perf_counter()
        self.trainable.train()
        with autocast_context(self.device, self.precision):
            self.optimizer.zero_grad(set_to_none=True)
            nll_sum, n_tokens = gather_gradients(
                self.trainable, self.criterion, self.corpus.splits["train"], group,
                self.division, ratio, self.device,
            )  # fmt: skip
            updated = apply_update(self.trainable, self.optimizer, cfg.clip_norm)
        if updated and self.average is not None:
            self.average.update(self.model)
        p.record_step(nll_sum, n_tokens, updated, time.perf_counter() - step_start, len(group))
        p.elapsed = time.perf_counter() - start
        if not updated:
            p.check_skipped(cfg.max_bad_steps)
        if self.dist.is_main and p.step % cfg.log_every == 0:
            line = p.step_line(rate, self.division.counting_world)
            log.info(line + self.eta.describe(p.step, p.elapsed))

    def _budget_reason(self, start: float) -> str:
        cfg = self.run.train
        if cfg.max_steps is not None and self.progress.step >= cfg.max_steps:
            return "max_steps"
        out_of_time = (
            cfg.max_minutes is not None and time.perf_counter() - start >= 60 * cfg.max_minutes
        )
        return "max_minutes" if distributed.any_rank(out_of_time, self.dist, self.device) else ""

    # -- validation and checkpoints ----------------------------------------------------------

    def _validate_and_save(self, start: float) -> str:
        """Validate on rank 0, then write metrics and checkpoints; returns a stop reason or ''."""
        outcome = self._validate_on_main(start) if self.dist.is_main else Outcome.GO_ON
        code, self.lr.base = distributed.from_main(
            [outcome.value, self.lr.base], self.dist, self.device
        )
        outcome = Outcome(code)
        if outcome is not Outcome.SIGNAL:
            self.progress.validated_step = self.progress.step
        return outcome.stop_reason

    def _validate_on_main(self, start: float) -> Outcome:
        try:
            with self.signals.interruptible(), self.division.all_cores():
                split = self.corpus.splits["valid"]
                valid_bleu = self.run.train.valid_bleu
                metrics = self.scorer.validate(self.model, split, self.progress.step, valid_bleu)
                averaged = None
                if self.average is not None:
                    averaged = validate_average(
                        self.scorer, self.average, split, self.progress.step, valid_bleu
                    )
        except Interrupted:
            return Outcome.SIGNAL
        assert self.files is not None
        p = self.progress
        p.elapsed = time.perf_counter() - start
        ratio = teacher_forcing_ratio(self.run.train, p.step)
        p.add_row(metrics, self.lr.at(p.step), ratio, self.division.counting_world, averaged)
        self.files.add_row(p.history)
        if self.stopping.update(metrics["val_" + self.stopping.metric]):
            self.checkpoints.save("best.pt", p.step)
        if self.lr.after_validation(metrics["val_loss"]):
            log.info("validation loss did not improve: learning rate decayed to %.3g", self.lr.base)
        self.checkpoints.save_step(p.step)
        self.checkpoints.save_average(p.step)
        self.checkpoints.save("last.pt", p.step, p)
        return Outcome.EARLY_STOP if self.stopping.should_stop else Outcome.GO_ON

    # -- the end -----------------------------------------------------------------------------

    def _finish(self, reason: str, start: float) -> dict[str, Any]:
        """Validate the last steps, then report: a summary, last.pt on a signal, the test."""
        p = self.progress
        if reason != "signal" and p.validated_step != p.step:
            reason = self._validate_and_save(start) or reason
        summary: dict[str, Any] = {
            "stop_reason": reason,
            "steps": p.step,
            "epochs": p.epoch,
            "skipped_steps": p.skipped_steps,
            "minutes": round((time.perf_counter() - start) / 60, 2),
        }
        if not self.dist.is_main:
            return summary
        if reason == "signal":
            self.checkpoints.save("last.pt", p.step, p)
            log.warning(
                "interrupted at step %d; last.pt saved. Resume with: "
                "python -m mtkit.train <same options> train.resume=%s",
                p.step,
                self.run_dir / "last.pt",
            )
            return {**summary, "signal": self.signals.number}
        return self._report(summary)

    def _report(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Rank 0, after a run that ended normally: log it, test best.pt, write summary.json."""
        best = self.stopping.best
        log.info(
            "training stopped (%s) after %d steps, %.1f minutes; best %s %.4g",
            summary["stop_reason"],
            summary["steps"],
            summary["minutes"],
            self.stopping.metric,
            best if best is not None else math.nan,
        )
        summary["best_metric"] = best
        if self.run.train.test_at_end and "test" in self.corpus.splits:
            try:
                with self.signals.interruptible(), self.division.all_cores():
                    test = self.corpus.splits["test"]
                    summary["test"] = self.scorer.test_best(
                        self.run_dir / "best.pt", self.model, test
                    )
                    if self.average is not None and (self.run_dir / EMA_FILE).is_file():
                        summary["test_ema"] = score_saved_average(
                            self.scorer, self.run_dir / EMA_FILE, test
                        )
            except Interrupted:
                return {**summary, "signal": self.signals.number}
        assert self.files is not None
        self.files.write_summary(summary)
        return summary


def fit(run: RunConfig, run_dir: Path, corpus: Corpus | None = None) -> dict[str, Any]:
    """Train one model as configured; files go to ``run_dir`` (rank 0 only).

    With several processes, a process that finds another one gone (at start-up or in a
    collective of any step) ends with a one-line TrainingError, not gloo's traceback.
    """
    main = distributed.env_rank() == 0
    with log_file(run_dir, enabled=main), distributed.group_closed_on_exit(), peer_loss_reported():
        return Trainer(run, run_dir, corpus).fit()
