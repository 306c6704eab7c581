"""What a training run does before its first step.

Refuse to overwrite a trained model, clean up what a killed run left behind, prepare
the corpus (rank 0 first, so the others only read the cache) and log, once, what is
about to be trained.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from mtkit.config import RunConfig, TrainConfig
from mtkit.corpus.cache import Corpus, load_corpus
from mtkit.errors import ConfigError, DataError, MtkitError, TrainingError
from mtkit.model.checkpoint import remove_stale_temp_files, step_checkpoints
from mtkit.model.seq2seq import Seq2Seq
from mtkit.search.hypothesis import output_cap
from mtkit.training import distributed, launch
from mtkit.training.validation import long_pairs, within_limit

log = logging.getLogger("mtkit")

_TRAINED = ("best.pt", "last.pt")


def check_run_directory(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse a run directory that holds a trained model, unless resuming or overwriting.

    Resuming (``train.resume``) may write into the directory it resumes from; anything
    else needs ``train.overwrite=true``. Temp files of a save that was killed are removed.
    """
    if run_dir.is_dir():
        removed = remove_stale_temp_files(run_dir)
        if removed:
            log.info(
                "%s: removed %d unfinished checkpoint file(s) of an earlier run", run_dir, removed
            )
    if cfg.resume:
        return
    if cfg.overwrite:
        for old in step_checkpoints(run_dir) if run_dir.is_dir() else []:
            old.unlink()  # they belong to the run being replaced, and would be averaged with it
        return
    existing = [name for name in _TRAINED if (run_dir / name).exists()]
    existing += [p.name for p in step_checkpoints(run_dir)][:1] if run_dir.is_dir() else []
    if existing:
        raise ConfigError(
            f"{run_dir} already holds a trained model ({', '.join(existing)}); resume with "
            f"train.resume={run_dir / 'last.pt'}, choose another hydra.run.dir, "
            "or pass train.overwrite=true to replace it"
        )


def check_run_directory_on_main(
    run_dir: Path, cfg: TrainConfig, dist: distributed.DistInfo, device: torch.device
) -> None:
    """Rank 0 checks the run directory (:func:`check_run_directory`; the other ranks have
    none) and every process learns the outcome, so a refusal ends them all: rank 0 with
    its one line, the others with :func:`peer_failed` (recorded, not printed)."""
    problem: MtkitError | None = None
    if dist.is_main:
        try:
            check_run_directory(run_dir, cfg)
        except MtkitError as error:
            problem = error
    if distributed.any_rank(problem is not None, dist, device):
        raise problem or peer_failed(dist)


def peer_failed(dist: distributed.DistInfo) -> TrainingError:
    """The error of a process that stops only because another process of the run did."""
    return TrainingError(
        f"training process {dist.rank} of {dist.world}: {launch.LOST_PEER} (see its message)"
    )


@contextmanager
def peer_loss_reported() -> Iterator[None]:
    """Turn the backend error of a collective whose peer has gone (gloo's ``Connection
    closed by peer``, at start-up or inside backward) into :func:`peer_failed`'s line."""
    try:
        yield
    except RuntimeError as error:
        info = distributed.launched()
        if not distributed.lost_peer(error, info):
            raise
        raise peer_failed(info) from None


def check_loss_settings(run: RunConfig, output_columns: int) -> None:
    """Sampled softmax needs fewer samples than output columns, which only the data tells."""
    if run.loss.sampled_softmax and run.loss.num_samples >= output_columns:
        raise ConfigError(
            f"loss.num_samples={run.loss.num_samples} is not valid; expected fewer than the "
            f"model's {output_columns} output columns (or loss.sampled_softmax=false)"
        )


def load_shared_corpus(run: RunConfig, dist: distributed.DistInfo, device: torch.device) -> Corpus:
    """Rank 0 builds the cache first; the other ranks then only open it.

    Every rank learns whether all of them have the corpus, so a node that cannot see the
    cache (or a rank 0 that cannot build it) stops every process with one line, instead
    of leaving the others waiting or failing inside the process group.
    """
    if not dist.is_main:
        distributed.barrier(dist)
    corpus, error = None, None
    try:
        corpus = load_corpus(run.data, run.tokenizer, build=dist.is_main)
    except MtkitError as problem:
        error = problem
    if dist.is_main:
        distributed.barrier(dist)
    if distributed.any_rank(error is not None, dist, device):
        raise error or DataError("another process could not open the corpus cache (see its error)")
    assert corpus is not None
    return corpus


def describe_start(
    run: RunConfig,
    corpus: Corpus,
    model: Seq2Seq,
    device: torch.device,
    precision: str,
    dist: distributed.DistInfo,
) -> None:
    """One log line each for the corpus, what was filtered out of it, and the model."""
    stats = corpus.stats
    log.info(
        "corpus: %d training pairs, %d validation pairs; vocabulary %d/%d",
        len(corpus.splits["train"]),
        len(corpus.splits["valid"]),
        corpus.codec.src.vocab_size,
        corpus.codec.tgt.vocab_size,
    )
    dropped = {
        "training pairs with an empty side": stats.get("train_empty_dropped"),
        "validation pairs with an empty side": stats.get("valid_empty_dropped"),
        "test pairs with an empty side": stats.get("test_empty_dropped"),
        f"training pairs over data.max_len={run.data.max_len}": stats.get("train_long_dropped"),
    }
    for what, count in dropped.items():
        if count:
            log.info("filtered out: %d %s", count, what)
    warn_long_pairs(run, corpus)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "model: %s%s attention=%s, %.2fM parameters, output vocabulary %d of %d pieces; "
        "device %s, precision %s%s",
        run.model.cell + (" with peepholes" if run.model.peepholes else ""),
        " bidirectional" if run.model.bidirectional else "",
        run.model.attention,
        n_params / 1e6,
        len(model.output_ids),
        corpus.codec.tgt.vocab_size,
        device,
        precision,
        _describe_processes(dist),
    )


def warn_long_pairs(run: RunConfig, corpus: Corpus) -> None:
    """Name the validation and test pairs longer than ``data.max_len``: their translations
    are cut, and the validation loss leaves them out (:meth:`Scorer.loss`)."""
    max_len, cap = run.data.max_len, output_cap(run.decode, run.data.max_len)
    for role in ("valid", "test"):
        if role not in corpus.splits:
            continue
        split, left_out = corpus.splits[role], "left out of the validation loss; "
        source = long_pairs(split, max_len, "src")
        if source:
            log.warning(
                "%s split: %d pair(s) longer than data.max_len=%d source pieces (pair %s); "
                "%stheir translations are cut at %d pieces",
                role, len(source), max_len, _shown(source),
                left_out if role == "valid" else "", cap,
            )  # fmt: skip
        target = sorted(set(long_pairs(split, max_len, "tgt")) - set(source))
        if target and role == "valid":
            log.warning(
                "valid split: %d pair(s) longer than data.max_len=%d target pieces (pair %s); "
                "%s",
                len(target), max_len, _shown(target), left_out.rstrip("; "),
            )  # fmt: skip


def check_validation_pairs(run: RunConfig, corpus: Corpus) -> None:
    """The validation loss needs one pair within ``data.max_len`` on both sides."""
    if len(within_limit(corpus.splits["valid"], run.data.max_len)) == 0:
        raise DataError(
            f"valid split: every pair is longer than data.max_len={run.data.max_len} pieces "
            "on a side, so no validation loss can be computed; raise data.max_len or add "
            "shorter validation pairs"
        )


def _shown(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")


def _describe_processes(dist: distributed.DistInfo) -> str:
    """How many processes train, and how they share the batches."""
    if not dist.enabled:
        return ""
    if launch.started_here():
        return f", {dist.world} processes (train.processes), each on its part of every batch"
    return f", {dist.world} processes"
