"""One training update: forward and backward over one batch or several, then clip and step.

An update may gather the gradient of several batches (``train.accumulate``): each
batch's mean-token loss is weighted by its share of the batches' target tokens
(:func:`token_shares`), so the summed gradient is the one of the mean over all of their
tokens, the gradient of one batch as large as all of them together. A non-finite
gradient skips the whole update.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from mtkit.corpus.batching import Batch, collate
from mtkit.corpus.layout import CorpusSplit
from mtkit.model.loss import Criterion, LossResult
from mtkit.model.seq2seq import Seq2Seq
from mtkit.training.parallel import BatchDivision


def token_shares(group: Sequence[np.ndarray], tgt_lengths: np.ndarray) -> list[float]:
    """Each batch's share of the target tokens (EOS included) of the batches of ``group``.

    ``group`` holds each batch's pair indices into a split whose per-pair target lengths
    are ``tgt_lengths`` (``(n,)``). A group of one batch gets exactly ``[1.0]``.
    """
    counts = [int(np.asarray(tgt_lengths)[indices].sum()) for indices in group]
    total = sum(counts)
    return [count / total if total else 1.0 / len(group) for count in counts]


def backward_part(
    model: torch.nn.Module,
    criterion: Criterion,
    batch: Batch,
    teacher_forcing: float = 1.0,
    loss_weight: float = 1.0,
) -> LossResult:
    """Forward and backward of one batch, adding its gradient to the parameters' ``grad``.

    ``model`` is a :class:`~mtkit.model.seq2seq.Seq2Seq`, or one wrapped for data
    parallelism (its ``module``). ``loss_weight`` scales the mean-token loss before
    backward: a batch's share of an accumulated update (:func:`token_shares`) times a
    process's part of a split batch (:func:`mtkit.training.distributed.part`).
    """
    seq2seq = cast(Seq2Seq, getattr(model, "module", model))
    features, targets = model(batch, teacher_forcing)
    result = criterion.train_loss(features, targets, batch.tgt_mask, seq2seq.output)
    (result.loss * loss_weight if loss_weight != 1.0 else result.loss).backward()
    return result


def gather_gradients(
    model: torch.nn.Module,
    criterion: Criterion,
    split: CorpusSplit,
    group: Sequence[np.ndarray],
    division: BatchDivision,
    teacher_forcing: float,
    device: torch.device,
) -> tuple[float, int]:
    """Forward and backward of each batch of ``group`` (pair indices into ``split``), each
    loss weighted by the batch's share of the group's target tokens, so the gradients add
    up to that of one batch of them all. Returns the summed NLL and target tokens of the
    group (every process's: :meth:`~mtkit.training.parallel.BatchDivision.batch_totals`).

    Each process trains on its portion of a batch (``division``); under
    DistributedDataParallel the processes average their gradients once, in the backward
    of the group's last batch.
    """
    nll_sum, n_tokens = 0.0, 0
    shares = token_shares(group, split.tgt_lengths)
    for number, (indices, share) in enumerate(zip(group, shares, strict=True)):
        mine, weight = division.portion(indices, split.tgt_lengths)
        batch = collate([split.source(i) for i in mine], [split.target(i) for i in mine])
        with gradient_sync(model, number == len(group) - 1):
            result = backward_part(
                model, criterion, batch.to(device), teacher_forcing, weight * share
            )
        nll, tokens = division.batch_totals(float(result.nll_sum), result.n_tokens, weight, device)
        nll_sum, n_tokens = nll_sum + nll, n_tokens + tokens
    return nll_sum, n_tokens


def gradient_sync(model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
    """Where DistributedDataParallel averages gradients: only in an update's last backward."""
    if last or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def apply_update(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, clip_norm: float
) -> bool:
    """Clip the gathered gradient and step; returns whether the update happened.

    An update whose gradient norm is not finite (NaN/inf loss) is skipped and its gradient
    dropped, so the weights (and any checkpoint written later) stay finite.
    """
    norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), clip_norm if clip_norm > 0 else math.inf
    )
    if not bool(torch.isfinite(norm)):
        optimizer.zero_grad(set_to_none=True)
        return False
    optimizer.step()
    return True


def train_step(
    model: torch.nn.Module,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    clip_norm: float,
    teacher_forcing: float = 1.0,
    loss_weight: float = 1.0,
) -> tuple[LossResult, bool]:
    """One update on one batch: forward, loss, backward, clip, step.

    Returns the loss and whether the update happened (see :func:`apply_update`).
    """
    optimizer.zero_grad(set_to_none=True)
    result = backward_part(model, criterion, batch, teacher_forcing, loss_weight)
    return result, apply_update(model, optimizer, clip_norm)
