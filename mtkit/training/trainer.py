"""The training loop: ``fit`` -> ``train_step`` -> ``validate``, with exact resume.

``fit(run, run_dir)`` takes plain dataclasses (no Hydra), so tests drive it directly.
A run directory ends up with ``config.yaml``, ``train.log``, ``metrics.csv``,
``summary.json`` (see :mod:`mtkit.training.run_files`), ``best.pt``, ``last.pt`` and the last
``train.keep_checkpoints`` validation checkpoints ``step-XXXXXX.pt`` (see
:mod:`mtkit.model.checkpoint`). ``last.pt`` carries the optimizer, schedule, RNG and
data-order state: resuming from it continues exactly where the run stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from mtkit.config import RunConfig
from mtkit.corpus.batching import Batch, TokenBatchSampler, collate
from mtkit.corpus.cache import Corpus
from mtkit.errors import ConfigError, TrainingError
from mtkit.model import checkpoint
from mtkit.model.loss import Criterion, LossResult
from mtkit.model.seq2seq import Seq2Seq, build_model
from mtkit.runtime import autocast_context, resolve_device, resolve_precision, set_threads
from mtkit.training import distributed, launch
from mtkit.training.optim import EarlyStopping, LearningRate, build_optimizer, teacher_forcing_ratio
from mtkit.training.progress import Progress
from mtkit.training.run_files import RunFiles, log_file
from mtkit.training.signals import Interrupted, StopSignals
from mtkit.training.startup import (
    carry_best,
    check_loss_settings,
    check_run_directory,
    describe_start,
    load_shared_corpus,
)
from mtkit.training.validation import Scorer

log = logging.getLogger("mtkit")

_GO_ON, _EARLY_STOP, _SIGNAL = 0.0, 1.0, 2.0  # validation outcomes, broadcast from rank 0


def train_step(
    model: torch.nn.Module,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    clip_norm: float,
    teacher_forcing: float = 1.0,
    loss_weight: float = 1.0,
) -> tuple[LossResult, bool]:
    """Forward, loss, backward, clip, update. Returns the loss and whether the update happened.

    ``loss_weight`` scales the loss before backward (a process's part of a split batch:
    :func:`mtkit.training.distributed.part`).

    A step whose gradient norm is not finite (NaN/inf loss) is skipped: no update, so the
    weights (and any checkpoint written later) stay finite.
    """
    seq2seq = cast(Seq2Seq, getattr(model, "module", model))
    features, targets = model(batch, teacher_forcing)
    result = criterion.train_loss(features, targets, batch.tgt_mask, seq2seq.output)
    optimizer.zero_grad(set_to_none=True)
    (result.loss * loss_weight if loss_weight != 1.0 else result.loss).backward()
    norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), clip_norm if clip_norm > 0 else math.inf
    )
    if not bool(torch.isfinite(norm)):
        optimizer.zero_grad(set_to_none=True)
        return result, False
    optimizer.step()
    return result, True


class Trainer:
    def __init__(self, run: RunConfig, run_dir: Path, corpus: Corpus | None = None) -> None:
        self.run, self.run_dir, cfg = run, run_dir, run.train
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
        # processes started by train.processes split every batch; torchrun's shard the epoch
        self.split_batches = self.dist.enabled and launch.started_here() > 1
        self.precision = resolve_precision(cfg.precision, self.device)
        if self.dist.is_main:
            check_run_directory(run_dir, cfg)
        self.corpus = corpus or load_shared_corpus(run, self.dist, self.device)
        train = self.corpus.splits["train"]
        torch.manual_seed(cfg.seed)
        self.model = build_model(
            run.model, self.corpus.codec.src, self.corpus.codec.tgt, train.tgt_values
        )
        self.model.to(self.device)
        check_loss_settings(run, len(self.model.output_ids))
        counts = self.model.column_counts(train.tgt_values, len(train))
        self.criterion = Criterion(run.loss, len(self.model.output_ids), counts)
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        self.lr = LearningRate(cfg)
        self.stopping = EarlyStopping(cfg.early_stopping_metric, cfg.patience)
        self.progress = Progress()
        self.sampler = TokenBatchSampler.for_training(train, run.data, cfg.seed)
        self.scorer = Scorer(
            self.corpus.codec, run.decode, self.criterion, run.data.batch_tokens, self.device,
            self.precision, run.data.max_len,
        )  # fmt: skip
        if cfg.resume:
            self._resume(cfg.resume)
        else:
            torch.manual_seed(cfg.seed + self.dist.rank)
        self.trainable: torch.nn.Module = (
            DistributedDataParallel(self.model) if self.dist.enabled else self.model
        )
        self.signals = StopSignals(announce=self.dist.is_main)
        steps_per_epoch = len(self._epoch_batches(0))
        self.valid_every = cfg.valid_every or max(1, min(steps_per_epoch // 2, 2000))
        self.files = RunFiles(run_dir, cfg.tensorboard) if self.dist.is_main else None

    def _resume(self, path: str) -> None:
        schedules = {"lr": self.lr, "early_stopping": self.stopping}
        state = checkpoint.restore_training(
            path, self.model, self.corpus.codec, self.optimizer, schedules
        )
        self.progress = Progress.from_state(state["progress"])
        if self.dist.is_main:
            carry_best(Path(path), self.run_dir)
            torch.set_rng_state(state["rng_cpu"])
            if self.device.type == "cuda" and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        else:
            torch.manual_seed(self.run.train.seed + self.dist.rank + self.progress.step)
        p = self.progress
        log.info("resumed from %s at step %d (epoch %d)", path, p.step, p.epoch + 1)

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train until a budget, early stopping or a signal ends the run; return a summary."""
        if self.files is not None:
            self.files.write_config(self.run)
            self.files.write_metrics(self.progress.history)
            describe_start(
                self.run, self.corpus, self.model, self.device, self.precision, self.dist
            )
        start = time.perf_counter() - self.progress.elapsed
        try:
            with self.signals:
                reason = self._run_epochs(start)
                return self._finish(reason, start)
        except RuntimeError as error:
            if not distributed.lost_peer(error, self.dist):
                raise
            raise TrainingError(
                f"training process {self.dist.rank} of {self.dist.world}: {launch.LOST_PEER} "
                "(see its message); the process group is gone"
            ) from None
        finally:
            if self.files is not None:
                self.files.close()

    def _run_epochs(self, start: float) -> str:
        """Epochs of training steps, validating every ``valid_every``; returns why it stopped."""
        max_epochs = self.run.train.max_epochs
        while True:
            batches = self._epoch_batches(self.progress.epoch)
            if self.progress.batch_in_epoch == 0 and self.dist.is_main:
                log.info("epoch %d: %s", self.progress.epoch + 1, self.sampler.describe(batches))
            while self.progress.batch_in_epoch < len(batches):
                reason = self._budget_reason(start)
                if reason:
                    return reason
                self.train_step(batches[self.progress.batch_in_epoch], start)
                if self.progress.step % self.valid_every == 0:
                    reason = self._validate_and_save(start)
                if distributed.any_rank(self.signals.received, self.dist, self.device):
                    reason = "signal"
                if reason:
                    return reason
            self.progress.next_epoch()
            if max_epochs is not None and self.progress.epoch >= max_epochs:
                return "max_epochs"

    @property
    def counting_world(self) -> int:
        """The processes whose tokens one process's count stands for (split: it counts all)."""
        return 1 if self.split_batches else self.dist.world

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The batches this process steps through: all of them when they are split between
        the processes (each takes its part in :meth:`train_step`), else its shard."""
        batches = self.sampler.batches(epoch)
        return batches if self.split_batches else distributed.shard(batches, self.dist)

    def train_step(self, indices: np.ndarray, start: float) -> None:
        """One update on the batch of ``indices``, with the bookkeeping around it."""
        cfg, p = self.run.train, self.progress
        split = self.corpus.splits["train"]
        weight = 1.0
        if self.split_batches:
            indices, weight = distributed.part(indices, split.tgt_lengths, self.dist)
        batch = collate([split.source(i) for i in indices], [split.target(i) for i in indices])
        rate = self.lr.apply(self.optimizer, p.step)
        ratio = teacher_forcing_ratio(cfg, p.step)
        step_start = time.perf_counter()
        self.trainable.train()
        with autocast_context(self.device, self.precision):
            result, updated = train_step(
                self.trainable, self.criterion, self.optimizer, batch.to(self.device),
                cfg.clip_norm, ratio, weight,
            )  # fmt: skip
        nll_sum, n_tokens = float(result.nll_sum), result.n_tokens
        if self.split_batches:  # the whole batch's loss and tokens, as one process logs them
            nll_sum, total = distributed.summed(
                [nll_sum * (weight > 0), n_tokens * (weight > 0)], self.dist, self.device
            )
            n_tokens = int(total)
        p.record_step(nll_sum, n_tokens, updated, time.perf_counter() - step_start)
        p.elapsed = time.perf_counter() - start
        if not updated:
            p.check_skipped(cfg.max_bad_steps)
        if self.dist.is_main and p.step % cfg.log_every == 0:
            log.info(p.step_line(rate, self.counting_world))

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
        outcome = _GO_ON
        if self.dist.is_main:
            outcome = self._validate_on_main(start)
        outcome, self.lr.base = distributed.from_main(
            [outcome, self.lr.base], self.dist, self.device
        )
        if outcome != _SIGNAL:
            self.progress.validated_step = self.progress.step
        return {_EARLY_STOP: "early_stopping", _SIGNAL: "signal"}.get(outcome, "")

    def _validate_on_main(self, start: float) -> float:
        try:
            with self.signals.interruptible(), self._all_cores():
                metrics = self.validate()
        except Interrupted:
            return _SIGNAL  # last.pt is written on the way out; this validation is redone
        assert self.files is not None
        p = self.progress
        p.elapsed = time.perf_counter() - start
        ratio = teacher_forcing_ratio(self.run.train, p.step)
        p.add_row(metrics, self.lr.at(p.step), ratio, self.counting_world)
        self.files.add_row(p.history)
        if self.stopping.update(metrics["val_" + self.stopping.metric]):
            self._save("best.pt")
        if self.lr.after_validation(metrics["val_loss"]):
            log.info("validation loss did not improve: learning rate decayed to %.3g", self.lr.base)
        if self.run.train.keep_checkpoints:
            self._save(checkpoint.step_file_name(p.step))
            checkpoint.prune_step_checkpoints(self.run_dir, self.run.train.keep_checkpoints)
        self._save("last.pt", with_train_state=True)
        return _EARLY_STOP if self.stopping.should_stop else _GO_ON

    def validate(self) -> dict[str, float]:
        """Validation loss, perplexity and greedy BLEU (sacrebleu, detokenized)."""
        split = self.corpus.splits["valid"]
        loss, ppl = self.scorer.loss(self.model, split)
        metrics = {"val_loss": loss, "val_ppl": ppl, "val_bleu": math.nan}
        message = f"step {self.progress.step} validation: loss {loss:.4f} ppl {ppl:.2f}"
        if self.run.train.valid_bleu:
            score = self.scorer.bleu(self.model, split)
            metrics["val_bleu"] = score.score
            message += f" BLEU {score.score:.2f} ({score.signature})"
        log.info(message)
        return metrics

    @contextlib.contextmanager
    def _all_cores(self) -> Iterator[None]:
        """Rank 0 validates alone while the processes that split the batches with it wait
        (blocked, not spinning): give it their threads for that while."""
        before = torch.get_num_threads()
        if self.split_batches:
            torch.set_num_threads(before * self.dist.world)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _payload(self, with_train_state: bool = False) -> dict[str, Any]:
        train_state = None
        if with_train_state:
            schedules = {"lr": self.lr, "early_stopping": self.stopping}
            train_state = checkpoint.training_state(
                self.optimizer, schedules, asdict(self.progress), self.device
            )
        return checkpoint.build_payload(self.model, self.corpus.codec, self.run, train_state)

    def _save(self, name: str, with_train_state: bool = False) -> None:
        for tensor in self.model.state_dict().values():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise TrainingError(
                    f"weights are not finite at step {self.progress.step}; {name} not written"
                )
        checkpoint.save_checkpoint(self._payload(with_train_state), self.run_dir / name)

    # -- the end -----------------------------------------------------------------------------

    def _finish(self, reason: str, start: float) -> dict[str, Any]:
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
            self._save("last.pt", with_train_state=True)
            log.warning(
                "interrupted at step %d; last.pt saved. Resume with: "
                "python -m mtkit.train <same options> train.resume=%s",
                p.step,
                self.run_dir / "last.pt",
            )
            return {**summary, "signal": self.signals.number}
        best = self.stopping.best
        log.info(
            "training stopped (%s) after %d steps, %.1f minutes; best %s %.4g",
            reason,
            p.step,
            summary["minutes"],
            self.stopping.metric,
            best if best is not None else math.nan,
        )
        summary["best_metric"] = best
        if self.run.train.test_at_end and "test" in self.corpus.splits:
            try:
                with self.signals.interruptible(), self._all_cores():
                    summary["test"] = self._test_best()
            except Interrupted:
                return {**summary, "signal": self.signals.number}
        assert self.files is not None
        self.files.write_summary(summary)
        return summary

    def _test_best(self) -> dict[str, Any]:
        """Greedy BLEU of best.pt (or of the current weights, if none was saved) on test."""
        best = self.run_dir / "best.pt"
        model, codec = self.model, self.corpus.codec
        if best.is_file():
            model, codec, _ = checkpoint.load_model(best)
        test = self.corpus.splits["test"]
        score = self.scorer.bleu(model.to(self.device), test, codec=codec)
        log.info("test (best.pt, greedy): BLEU %.2f (%s)", score.score, score.signature)
        return {"bleu_greedy": round(score.score, 2), "signature": score.signature}


def fit(run: RunConfig, run_dir: Path, corpus: Corpus | None = None) -> dict[str, Any]:
    """Train one model as configured; files go to ``run_dir`` (rank 0 only)."""
    with log_file(run_dir, enabled=distributed.env_rank() == 0), distributed.group_closed_on_exit():
        return Trainer(run, run_dir, corpus).fit()
