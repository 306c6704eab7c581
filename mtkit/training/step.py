"""One training update: forward, loss, backward, clip, step; a non-finite one is skipped."""

from __future__ import annotations

import math
from typing import cast

import torch

from mtkit.corpus.batching import Batch
from mtkit.model.loss import Criterion, LossResult
from mtkit.model.seq2seq import Seq2Seq


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

    ``model`` is a :class:`~mtkit.model.seq2seq.Seq2Seq`, or one wrapped for data
    parallelism (its ``module``). ``loss_weight`` scales the loss before backward (a
    process's part of a split batch: :func:`mtkit.training.distributed.part`).

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
