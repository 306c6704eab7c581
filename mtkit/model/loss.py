"""Training losses over decoder features: full softmax and sampled softmax.

Both work on the features of real (non-pad) target positions only, so padding costs no
output-layer work. Shapes: N real target tokens, H feature size, V vocabulary, C
candidates.

- Full softmax: cross-entropy with label smoothing. For training it runs as one fused,
  chunked step (:class:`FusedLinearCrossEntropy`) that never materialises the (N, V)
  logits at once and produces the gradients while the logits of a chunk are still in
  cache; a backward pass then only scales them.
- Sampled softmax (Jean et al., 2015; TensorFlow's ``sampled_softmax_loss``): the softmax
  runs over the batch's target ids plus K ids shared by the whole batch and drawn from a
  proposal Q, with every candidate's logit corrected by ``-log P(c in C)``
  (:func:`inclusion_probability`: 1 for the batch's targets, ``1 - (1 - Q)^K`` for drawn
  ids). A sampled id equal to a row's target *is* that target (candidates are a set), so
  accidental hits never count as negatives. With every id a candidate it equals the full
  softmax, whatever Q.
  Validation and decoding always use the full softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtkit.config import LossConfig


@dataclass
class LossResult:
    loss: torch.Tensor  # scalar to minimise: smoothed loss per target token
    nll_sum: torch.Tensor  # detached sum of token negative log-likelihoods (no smoothing)
    n_tokens: int


def _compute_dtype(device: torch.device) -> torch.dtype:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def smoothed_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, smoothing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed label-smoothed loss and summed NLL of fp32 logits (N, C) for targets (N,).

    The smoothed target puts ``1 - ε`` on the gold class ``y`` and spreads ``ε`` uniformly
    over all C classes: ``ℓ = (1 − ε) · (−log p_y) + ε · (1/C) Σ_c (−log p_c)``.
    """
    log_probs = F.log_softmax(logits, dim=-1)
    nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    loss = nll if smoothing == 0 else (1 - smoothing) * nll - smoothing * log_probs.mean(-1)
    return loss.sum(), nll.detach().sum()


def linear_cross_entropy_reference(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    targets: torch.Tensor,
    smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output projection then :func:`smoothed_cross_entropy`, plainly: ``z = W f + b``.

    Features (N, H), weight (M, H), bias (M,), targets (N,) -> (summed loss, summed NLL),
    with gradients from autograd. :class:`FusedLinearCrossEntropy` computes the same.
    """
    logits = F.linear(features, weight, bias).float()  # (N, M)
    return smoothed_cross_entropy(logits, targets, smoothing)


class FusedLinearCrossEntropy(torch.autograd.Function):
    """:func:`linear_cross_entropy_reference`, chunked, with the gradients made in forward.

    Per chunk of rows: logits ``z``, ``lse = log Σ exp z``, the loss, then in place the
    gradient ``∂ℓ/∂z = softmax(z) − ε/C − (1 − ε) · onehot(y)``, from which the chunk's
    shares of ``∂/∂f``, ``∂/∂W`` and ``∂/∂b`` are accumulated. The (N, M) logits never
    exist at once, and backward only scales the stored gradients.
    """

    @staticmethod
    def forward(
        ctx: Any,
        features: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        targets: torch.Tensor,
        smoothing: float,
        compute_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, vocab = features.size(0), weight.size(0)
        chunk = max(64, (1 << 22) // vocab)
        w = weight.detach().to(compute_dtype)
        grad_features = torch.empty(
            n, features.size(1), dtype=compute_dtype, device=features.device
        )
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        grad_bias = torch.zeros_like(bias, dtype=torch.float32)
        loss_sum = features.new_zeros((), dtype=torch.float32)
        nll_sum = features.new_zeros((), dtype=torch.float32)
        with torch.autocast(features.device.type, enabled=False):
            for start in range(0, n, chunk):
                x = features[start : start + chunk].detach().to(compute_dtype)
                y = targets[start : start + chunk]
                logits = torch.matmul(x, w.t()).float() + bias.detach().float()  # (n, V)
                lse = torch.logsumexp(logits, dim=-1)  # (n,)
                nll = lse - logits.gather(1, y.unsqueeze(1)).squeeze(1)
                loss = (
                    nll
                    if smoothing == 0
                    else (1 - smoothing) * nll + smoothing * (lse - logits.mean(-1))
                )
                loss_sum += loss.sum()
                nll_sum += nll.sum()
                grad = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place
                if smoothing:
                    grad.sub_(smoothing / vocab)
                grad.scatter_add_(1, y.unsqueeze(1), grad.new_full((len(y), 1), smoothing - 1))
                grad_bias += grad.sum(0)
                grad_c = grad.to(compute_dtype)
                grad_features[start : start + chunk] = grad_c @ w
                grad_weight += (grad_c.t() @ x).float()
        ctx.save_for_backward(grad_features, grad_weight, grad_bias)
        ctx.feature_dtype, ctx.weight_dtype = features.dtype, weight.dtype
        ctx.mark_non_differentiable(nll_sum)
        return loss_sum, nll_sum

    @staticmethod
    def backward(
        ctx: Any, grad_loss: torch.Tensor, _grad_nll: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        grad_features, grad_weight, grad_bias = ctx.saved_tensors
        return (
            (grad_features * grad_loss).to(ctx.feature_dtype),
            (grad_weight * grad_loss).to(ctx.weight_dtype),
            (grad_bias * grad_loss).to(ctx.weight_dtype),
            None,
            None,
            None,
        )


def proposal_distribution(kind: str, vocab_size: int, counts: np.ndarray | None) -> torch.Tensor:
    """Q over the output columns: log-uniform over frequency ranks (Zipf), unigram, or uniform.

    Every column keeps some mass, so no drawn candidate's correction is infinite.
    Without counts, the column order stands in for the frequency rank (sentencepiece
    orders pieces roughly by frequency).
    """
    if kind == "uniform":
        return torch.full((vocab_size,), 1.0 / vocab_size)
    freq = np.zeros(vocab_size) if counts is None else np.asarray(counts, np.float64)[:vocab_size]
    if kind == "unigram":
        q = torch.from_numpy(freq + 1.0)
    else:
        order = np.argsort(-freq, kind="stable") if counts is not None else np.arange(vocab_size)
        ranks = np.empty(vocab_size, dtype=np.float64)
        ranks[order] = np.arange(vocab_size)
        q = torch.from_numpy(np.log((ranks + 2) / (ranks + 1)))
    return (q / q.sum()).float()


class Criterion:
    """Computes the training loss (full or sampled softmax) and the validation loss."""

    def __init__(self, cfg: LossConfig, vocab_size: int, counts: np.ndarray | None = None) -> None:
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.proposal = (
            proposal_distribution(cfg.proposal, vocab_size, counts) if cfg.sampled_softmax else None
        )

    def train_loss(
        self,
        features: torch.Tensor,
        tgt_out: torch.Tensor,
        tgt_mask: torch.Tensor,
        output: nn.Linear,
    ) -> LossResult:
        flat, targets = features[tgt_mask], tgt_out[tgt_mask]  # (N, H), (N,)
        n_tokens = int(targets.numel())
        if self.proposal is not None:
            loss_sum, nll_sum = self._sampled(flat, targets, output)
        else:
            loss_sum, nll_sum = FusedLinearCrossEntropy.apply(
                flat,
                output.weight,
                output.bias,
                targets,
                self.cfg.label_smoothing,
                _compute_dtype(flat.device),
            )
        return LossResult(loss_sum / max(n_tokens, 1), nll_sum.detach(), n_tokens)

    def eval_loss(
        self,
        features: torch.Tensor,
        tgt_out: torch.Tensor,
        tgt_mask: torch.Tensor,
        output: nn.Linear,
    ) -> LossResult:
        """Full-softmax loss, as used for validation whatever the training loss."""
        flat, targets = features[tgt_mask], tgt_out[tgt_mask]
        loss_sum, nll_sum = linear_cross_entropy_reference(
            flat, output.weight, output.bias, targets, self.cfg.label_smoothing
        )
        n_tokens = int(targets.numel())
        return LossResult(loss_sum / max(n_tokens, 1), nll_sum, n_tokens)

    def _sampled(
        self, features: torch.Tensor, targets: torch.Tensor, output: nn.Linear
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.proposal is not None
        proposal = self.proposal.to(features.device)
        samples = torch.multinomial(proposal, self.cfg.num_samples, replacement=True)
        candidates = torch.unique(torch.cat([targets, samples]))  # (C,) sorted
        columns = torch.searchsorted(candidates, targets)  # each row's target column
        logits = F.linear(features, output.weight[candidates], output.bias[candidates]).float()
        inclusion = inclusion_probability(
            proposal[candidates], self.cfg.num_samples, torch.isin(candidates, targets)
        )
        logits = logits - inclusion.log()
        return smoothed_cross_entropy(logits, columns, self.cfg.label_smoothing)


def inclusion_probability(q: torch.Tensor, samples: int, in_batch: torch.Tensor) -> torch.Tensor:
    """P(c in C) for each candidate: 1 for the batch's targets, else 1 - (1 - Q(c))^K.

    The importance correction of sampled softmax is ``z'_c = z_c - log P(c in C)``: a
    column that is in the candidate set only by chance stands for the columns left out,
    in proportion to how rarely it gets in. The batch's targets are in ``C`` whatever
    was drawn, so they get no correction; a drawn column is in ``C`` if any of the ``K``
    draws (with replacement) hit it. For rare columns ``1 - (1 - Q)^K ~ K Q``, the
    textbook ``- log Q`` up to a constant; for frequent ones it saturates at 1, so with
    every column a candidate the loss is exactly the full softmax, whatever ``Q``.

    Shapes: ``q`` and ``in_batch`` (C,); returns (C,).
    """
    drawn = -torch.expm1(samples * torch.log1p(-q.clamp(max=1.0 - 1e-7)))
    return torch.where(in_batch, torch.ones_like(q), drawn)
