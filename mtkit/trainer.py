"""The training loop: steps, validation, early stopping, checkpoints and exact resume.

``fit(run, run_dir)`` takes plain dataclasses (no Hydra), so tests drive it directly.
A run directory ends up with ``config.yaml``, ``train.log``, ``metrics.csv``, ``best.pt``
and ``last.pt``. ``last.pt`` carries the optimizer, schedule, RNG and data-order state:
resuming from it continues exactly where the run stopped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mtkit import distributed
from mtkit.batching import Batch, TokenBatchSampler, collate, padding_overhead, sorted_batches
from mtkit.checkpoint import build_payload, incompatible_settings, load_checkpoint, save_checkpoint
from mtkit.config import RunConfig, to_yaml
from mtkit.data import Corpus, CorpusSplit, load_corpus
from mtkit.errors import CheckpointError, MtkitError
from mtkit.loss import Criterion, LossResult, target_counts
from mtkit.metrics import bleu
from mtkit.model import Seq2Seq, build_model
from mtkit.optim import LearningRate, build_optimizer, teacher_forcing_ratio
from mtkit.runtime import autocast_context, configure, resolve_device, resolve_precision
from mtkit.translator import Translator

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
    "elapsed_min",
]


class TrainingError(MtkitError):
    """Training cannot go on (for example the loss stays NaN)."""


def train_step(
    model: torch.nn.Module,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    clip_norm: float,
    teacher_forcing: float = 1.0,
) -> tuple[LossResult, bool]:
    """Forward, loss, backward, clip, update. Returns the loss and whether the update happened.

    A step whose gradient norm is not finite (NaN/inf loss) is skipped: no update, so the
    weights (and any checkpoint written later) stay finite.
    """
    seq2seq = cast(Seq2Seq, getattr(model, "module", model))
    features = model(batch, teacher_forcing)
    targets = seq2seq.columns(batch.tgt_out)
    result = criterion.train_loss(features, targets, batch.tgt_mask, seq2seq.output)
    optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), clip_norm if clip_norm > 0 else math.inf
    )
    if not bool(torch.isfinite(norm)):
        optimizer.zero_grad(set_to_none=True)
        return result, False
    optimizer.step()
    return result, True


@dataclass
class Progress:
    """Where training stands; saved in ``last.pt`` for an exact resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0
    best_metric: float | None = None
    bad_validations: int = 0
    skipped_steps: int = 0
    bad_in_a_row: int = 0
    interval_loss: float = 0.0
    interval_tokens: int = 0
    interval_time: float = 0.0
    validated_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    def __init__(self, run: RunConfig, run_dir: Path, corpus: Corpus | None = None) -> None:
        self.run = run
        self.run_dir = run_dir
        cfg = run.train
        self.device = resolve_device(cfg.device)
        self.dist = distributed.setup(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        configure(cfg.threads)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.corpus = corpus or self._load_corpus()
        train_split = self.corpus.splits["train"]
        codec = self.corpus.codec
        torch.manual_seed(cfg.seed)
        self.model = build_model(run.model, codec.src, codec.tgt, train_split.tgt_values)
        self.model.to(self.device)
        self.criterion = Criterion(
            run.loss,
            len(self.model.output_ids),
            target_counts(train_split.tgt_values, len(train_split), self.model.output_ids),
        )
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        self.lr = LearningRate(cfg)
        self.progress = Progress()
        self.sampler = TokenBatchSampler(
            train_split.src_lengths,
            train_split.tgt_lengths,
            run.data.batch_tokens,
            cfg.seed,
            run.data.pool_batches,
            run.data.buckets,
        )
        if cfg.resume:
            self._resume(cfg.resume)
        else:
            torch.manual_seed(cfg.seed + self.dist.rank)
        self.trainable: torch.nn.Module = (
            DistributedDataParallel(self.model) if self.dist.enabled else self.model
        )
        self._stop_signal: int | None = None
        steps_per_epoch = len(distributed.shard(self.sampler.batches(0), self.dist))
        self.valid_every = cfg.valid_every or max(1, min(steps_per_epoch // 2, 2000))

    # -- setup -------------------------------------------------------------------------------

    def _load_corpus(self) -> Corpus:
        """Rank 0 builds the cache first; the other ranks then read it."""
        if not self.dist.is_main:
            distributed.barrier(self.dist)
        corpus = load_corpus(self.run.data, self.run.tokenizer)
        if self.dist.is_main:
            distributed.barrier(self.dist)
        return corpus

    def _resume(self, path: str) -> None:
        payload = load_checkpoint(path)
        state = payload.get("train_state")
        if state is None:
            raise CheckpointError(
                f"{path}: holds no training state (resume from last.pt, not best.pt)"
            )
        differing = incompatible_settings(payload, self.run.model, self.corpus.codec.to_state())
        if differing:
            raise CheckpointError(
                f"{path}: cannot resume, settings differ from this run: {', '.join(differing)}"
            )
        self.model.load_state_dict(payload["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr.load_state_dict(state["lr"])
        self.progress = Progress(**state["progress"])
        if self.dist.is_main:
            torch.set_rng_state(state["rng_cpu"])
            if self.device.type == "cuda" and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        else:
            torch.manual_seed(self.run.train.seed + self.dist.rank + self.progress.step)
        self._carry_best(Path(path))
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            path,
            self.progress.step,
            self.progress.epoch,
            self.progress.batch_in_epoch,
        )

    def _carry_best(self, resumed_from: Path) -> None:
        """Resuming into a new run directory brings the old best.pt along."""
        best = resumed_from.parent / "best.pt"
        target = self.run_dir / "best.pt"
        if self.dist.is_main and best.is_file() and best.resolve() != target.resolve():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(best, target)

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train until a budget, early stopping or a signal ends the run; return a summary."""
        cfg = self.run.train
        if self.dist.is_main:
            self._write_start()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = self._progress_bar()
        start = time.perf_counter() - self.progress.elapsed
        stop_reason = ""
        try:
            while not stop_reason:
                batches = distributed.shard(self.sampler.batches(self.progress.epoch), self.dist)
                if self.progress.batch_in_epoch == 0 and self.dist.is_main:
                    log.info(
                        "epoch %d: %d batches, padding overhead %.1f%%",
                        self.progress.epoch + 1,
                        len(batches),
                        100
                        * padding_overhead(
                            batches, self.sampler.src_lengths, self.sampler.tgt_lengths
                        ),
                    )
                while self.progress.batch_in_epoch < len(batches):
                    stop_reason = self._budget_reason(start)
                    if stop_reason:
                        break
                    indices = batches[self.progress.batch_in_epoch]
                    self._one_step(indices, start, bar)
                    if self.progress.step % self.valid_every == 0:
                        stop_reason = self._validate_and_save(start)
                    if distributed.any_rank(self._stop_signal is not None, self.dist, self.device):
                        stop_reason = "signal"
                    if stop_reason:
                        break
                if self.progress.batch_in_epoch >= len(batches):
                    self.progress.epoch += 1
                    self.progress.batch_in_epoch = 0
                    if cfg.max_epochs is not None and self.progress.epoch >= cfg.max_epochs:
                        stop_reason = stop_reason or "max_epochs"
            bar.close()
            return self._finish(stop_reason, start)
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            distributed.teardown(self.dist)

    def _one_step(self, indices: Any, start: float, bar: tqdm) -> None:
        cfg = self.run.train
        split = self.corpus.splits["train"]
        batch = collate(
            [split.source(i) for i in indices], [split.target(i) for i in indices], indices
        ).to(self.device)
        rate = self.lr.apply(self.optimizer, self.progress.step)
        ratio = teacher_forcing_ratio(cfg, self.progress.step)
        step_start = time.perf_counter()
        self.trainable.train()
        with autocast_context(self.device, self.precision):
            result, updated = train_step(
                self.trainable, self.criterion, self.optimizer, batch, cfg.clip_norm, ratio
            )
        p = self.progress
        p.step += 1
        p.batch_in_epoch += 1
        if updated:
            p.bad_in_a_row = 0
            p.interval_loss += float(result.nll_sum)
            p.interval_tokens += result.n_tokens
        else:
            p.skipped_steps += 1
            p.bad_in_a_row += 1
            log.warning(
                "step %d: loss is not finite; update skipped (%d so far)", p.step, p.skipped_steps
            )
            if p.bad_in_a_row >= cfg.max_bad_steps:
                raise TrainingError(
                    f"the loss was NaN/inf for {p.bad_in_a_row} steps in a row "
                    f"(step {p.step}); lower train.lr or use train.precision=fp32"
                )
        p.interval_time += time.perf_counter() - step_start
        p.elapsed = time.perf_counter() - start
        if self.dist.is_main and (p.step % cfg.log_every == 0 or bar.disable is False):
            self._report(bar, rate)

    def _report(self, bar: tqdm, rate: float) -> None:
        p = self.progress
        loss = p.interval_loss / max(p.interval_tokens, 1)
        speed = p.interval_tokens * self.dist.world / max(p.interval_time, 1e-9)
        values = {
            "loss": f"{loss:.3f}",
            "ppl": f"{math.exp(min(loss, 50)):.1f}",
            "tok/s": f"{speed:.0f}",
            "lr": f"{rate:.2e}",
        }
        if not bar.disable:
            bar.update(p.step - bar.n)
            bar.set_postfix(values, refresh=False)
        elif p.step % self.run.train.log_every == 0:
            log.info(
                "step %d epoch %d | %s",
                p.step,
                p.epoch + 1,
                " ".join(f"{k} {v}" for k, v in values.items()),
            )

    def _budget_reason(self, start: float) -> str:
        cfg = self.run.train
        if cfg.max_steps is not None and self.progress.step >= cfg.max_steps:
            return "max_steps"
        out_of_time = (
            cfg.max_minutes is not None and time.perf_counter() - start >= 60 * cfg.max_minutes
        )
        if distributed.any_rank(out_of_time, self.dist, self.device):
            return "max_minutes"
        return ""

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stop_signal is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        self._stop_signal = signum
        if self.dist.is_main:
            print(
                f"\nmtkit: {signal.Signals(signum).name} received; saving last.pt after this "
                "step (send again to abort without saving)",
                file=sys.stderr,
            )

    # -- validation and checkpoints ----------------------------------------------------------

    def _validate_and_save(self, start: float) -> str:
        """Validate on rank 0, write metrics and checkpoints; returns a stop reason or ''."""
        stop, decayed_base = 0.0, self.lr.base
        self.progress.validated_step = self.progress.step
        if self.dist.is_main:
            metrics = self.validate()
            row = self._metrics_row(metrics, start)
            self.progress.history.append(row)
            self._write_metrics()
            improved = self._update_best(metrics)
            if improved:
                self._save("best.pt", with_train_state=False)
            if self.lr.after_validation(metrics["val_loss"]):
                log.info(
                    "validation loss did not improve: learning rate decayed to %.3g", self.lr.base
                )
            patience = self.run.train.patience
            if patience is not None and self.progress.bad_validations >= patience:
                stop = 1.0
            decayed_base = self.lr.base
            self._save("last.pt", with_train_state=True)
        stop, decayed_base = distributed.from_main([stop, decayed_base], self.dist, self.device)
        self.lr.base = decayed_base
        return "early_stopping" if stop else ""

    def validate(self) -> dict[str, float]:
        """Validation loss, perplexity and greedy BLEU (sacrebleu, detokenized)."""
        split = self.corpus.splits["valid"]
        loss, ppl = self._valid_loss(split)
        metrics = {"val_loss": loss, "val_ppl": ppl, "val_bleu": float("nan")}
        if self.run.train.valid_bleu:
            score = self.bleu_on(split, self.model)
            metrics["val_bleu"] = score.score
            log.info(
                "step %d validation: loss %.4f ppl %.2f BLEU %.2f (%s)",
                self.progress.step,
                loss,
                ppl,
                score.score,
                score.signature,
            )
        else:
            log.info("step %d validation: loss %.4f ppl %.2f", self.progress.step, loss, ppl)
        self.model.train()
        return metrics

    @torch.no_grad()
    def _valid_loss(self, split: CorpusSplit) -> tuple[float, float]:
        self.model.eval()
        nll, tokens = 0.0, 0
        lengths = [
            max(int(s), int(t)) for s, t in zip(split.src_lengths, split.tgt_lengths, strict=True)
        ]
        for indices in sorted_batches(lengths, self.run.data.batch_tokens):
            batch = collate(
                [split.source(i) for i in indices], [split.target(i) for i in indices], indices
            ).to(self.device)
            with autocast_context(self.device, self.precision):
                features = self.model(batch)
                result = self.criterion.eval_loss(
                    features, self.model.columns(batch.tgt_out), batch.tgt_mask, self.model.output
                )
            nll += float(result.nll_sum)
            tokens += result.n_tokens
        mean = nll / max(tokens, 1)
        return mean, math.exp(min(mean, 50.0))

    def bleu_on(self, split: CorpusSplit, model: Seq2Seq, beam_size: int = 1):
        translator = Translator(
            model, self.corpus.codec, self.run.decode, self.device, self.precision
        )
        hypotheses = translator.translate(split.texts("src"), beam_size=beam_size)
        return bleu(hypotheses, split.texts("tgt"))

    def _update_best(self, metrics: dict[str, float]) -> bool:
        name = self.run.train.early_stopping_metric
        value = metrics["val_" + name]
        if math.isnan(value):
            return False
        better = self.progress.best_metric is None or (
            value > self.progress.best_metric
            if name == "bleu"
            else value < self.progress.best_metric
        )
        if better:
            self.progress.best_metric = value
            self.progress.bad_validations = 0
        else:
            self.progress.bad_validations += 1
        return better

    def _metrics_row(self, metrics: dict[str, float], start: float) -> dict[str, Any]:
        p = self.progress
        train_loss = p.interval_loss / max(p.interval_tokens, 1) if p.interval_tokens else math.nan
        row = {
            "step": p.step,
            "epoch": p.epoch + 1,
            "train_loss": round(train_loss, 5),
            "train_ppl": round(math.exp(min(train_loss, 50)), 3) if p.interval_tokens else math.nan,
            "val_loss": round(metrics["val_loss"], 5),
            "val_ppl": round(metrics["val_ppl"], 3),
            "val_bleu": round(metrics["val_bleu"], 2),
            "tokens_per_s": round(p.interval_tokens * self.dist.world / max(p.interval_time, 1e-9)),
            "lr": self.lr.at(p.step),
            "elapsed_min": round((time.perf_counter() - start) / 60, 3),
        }
        p.interval_loss, p.interval_tokens, p.interval_time = 0.0, 0, 0.0
        return row

    def _save(self, name: str, with_train_state: bool) -> None:
        for tensor in self.model.state_dict().values():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise TrainingError(
                    f"weights are not finite at step {self.progress.step}; {name} not written"
                )
        train_state = None
        if with_train_state:
            train_state = {
                "optimizer": self.optimizer.state_dict(),
                "lr": self.lr.state_dict(),
                "progress": asdict(self.progress),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": (
                    torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
                ),
            }
        data = {
            "src_lang": self.run.data.src_lang,
            "tgt_lang": self.run.data.tgt_lang,
            "max_len": self.run.data.max_len,
            "reverse_source": self.run.data.reverse_source,
        }
        payload = build_payload(self.model, self.corpus.codec, self.run.decode, data, train_state)
        save_checkpoint(payload, self.run_dir / name)

    def _write_metrics(self) -> None:
        path = self.run_dir / "metrics.csv"
        temp = path.with_suffix(".csv.tmp")
        with temp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(self.progress.history)
        temp.replace(path)

    # -- start and finish --------------------------------------------------------------------

    def _write_start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(to_yaml(self.run))
        n_params = sum(p.numel() for p in self.model.parameters())
        stats = self.corpus.stats
        log.info(
            "corpus: %d training pairs, %d validation pairs; vocabulary %d/%d",
            len(self.corpus.splits["train"]),
            len(self.corpus.splits["valid"]),
            self.corpus.codec.src.vocab_size,
            self.corpus.codec.tgt.vocab_size,
        )
        if stats.get("train_long_dropped"):
            log.info(
                "%d training pairs over data.max_len=%d were filtered",
                stats["train_long_dropped"],
                self.run.data.max_len,
            )
        log.info(
            "model: %s %s attention=%s, %.2fM parameters; device %s, precision %s%s",
            self.run.model.cell,
            "bidirectional" if self.run.model.bidirectional else "",
            self.run.model.attention,
            n_params / 1e6,
            self.device,
            self.precision,
            f", {self.dist.world} processes" if self.dist.enabled else "",
        )
        if self.progress.history:
            self._write_metrics()

    def _progress_bar(self) -> tqdm:
        cfg = self.run.train
        total = cfg.max_steps
        if total is None and cfg.max_epochs is not None:
            total = cfg.max_epochs * len(distributed.shard(self.sampler.batches(0), self.dist))
        interactive = sys.stderr.isatty() and self.dist.is_main
        return tqdm(
            total=total,
            initial=self.progress.step,
            disable=not interactive,
            unit="step",
            dynamic_ncols=True,
            desc="train",
        )

    def _finish(self, reason: str, start: float) -> dict[str, Any]:
        p = self.progress
        summary: dict[str, Any] = {
            "stop_reason": reason,
            "steps": p.step,
            "epochs": p.epoch,
            "skipped_steps": p.skipped_steps,
            "minutes": round((time.perf_counter() - start) / 60, 2),
        }
        if reason == "signal":
            if self.dist.is_main:
                self._save("last.pt", with_train_state=True)
                log.warning(
                    "interrupted at step %d; last.pt saved. Resume with: "
                    "python -m mtkit.train <same options> train.resume=%s",
                    p.step,
                    self.run_dir / "last.pt",
                )
            summary["signal"] = self._stop_signal
            return summary
        if p.validated_step != p.step:
            self._validate_and_save(start)
        if self.dist.is_main:
            log.info(
                "training stopped (%s) after %d steps, %.1f minutes; best %s %.4g",
                reason,
                p.step,
                summary["minutes"],
                self.run.train.early_stopping_metric,
                p.best_metric if p.best_metric is not None else math.nan,
            )
            summary["best_metric"] = p.best_metric
            if self.run.train.test_at_end and "test" in self.corpus.splits:
                summary["test"] = self._test_best()
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _test_best(self) -> dict[str, Any]:
        """Greedy BLEU of best.pt on the test split."""
        best = self.run_dir / "best.pt"
        model = self.model
        if best.is_file():
            payload = load_checkpoint(best)
            train_targets = self.corpus.splits["train"].tgt_values
            model = build_model(
                self.run.model, self.corpus.codec.src, self.corpus.codec.tgt, train_targets
            )
            model.load_state_dict(payload["weights"])
            model.to(self.device)
        score = self.bleu_on(self.corpus.splits["test"], model)
        log.info("test (best.pt, greedy): BLEU %.2f (%s)", score.score, score.signature)
        return {"bleu_greedy": round(score.score, 2), "signature": score.signature}


def attach_log_file(run_dir: Path) -> logging.Handler:
    """Send mtkit's log lines to ``run_dir/train.log`` as well as the console."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("mtkit").addHandler(handler)
    return handler


def fit(run: RunConfig, run_dir: Path, corpus: Corpus | None = None) -> dict[str, Any]:
    """Train one model as configured; files go to ``run_dir`` (rank 0 only)."""
    handler = attach_log_file(run_dir) if distributed.env_rank() == 0 else None
    try:
        return Trainer(run, run_dir, corpus).fit()
    finally:
        if handler is not None:
            logging.getLogger("mtkit").removeHandler(handler)
            handler.close()
