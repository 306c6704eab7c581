"""Dropout whose random mask is cheap to draw on CPU.

Dropout (Srivastava et al., 2014) in its inverted form: ``y = x ⊙ m / (1 − p)`` with
``m_j ~ Bernoulli(1 − p)`` drawn independently per element, so ``E[y] = x``
(:func:`dropout_reference` writes exactly that). ``torch.nn.Dropout`` draws one Bernoulli
sample per element, which on CPU costs more than the rest of the dropout. Here the mask is
drawn as random bytes, which is cheaper: an element is kept when its byte is at least
``round(256 * p)``, and kept elements are scaled by the inverse of the actual keep rate,
so the output is unbiased.

The price is rounding: the drop rate is ``p`` rounded to a multiple of 1/256
(:func:`effective_rate`; 0.3 -> 77/256 = 0.3008, 0.1 -> 26/256 = 0.1016), so a rate below
1/512 drops nothing and one above 255.5/256 drops everything. The backward pass reuses
the forward mask. CUDA keeps PyTorch's fused kernel (exact ``p``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def effective_rate(p: float) -> float:
    """The drop rate that :func:`dropout` applies on CPU for a requested ``p``."""
    return round(256 * p) / 256


class _ByteMaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, threshold: int) -> torch.Tensor:
        keep = torch.randint(0, 256, x.shape, dtype=torch.uint8, device=x.device) >= threshold
        scale = 256.0 / (256 - threshold)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout of rate ``p`` (rounded to 1/256 on CPU); identity when not training."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    threshold = round(256 * p)
    if threshold >= 256:
        return torch.zeros_like(x)
    return _ByteMaskDropout.apply(x, threshold)


def dropout_reference(x: torch.Tensor, p: float) -> torch.Tensor:
    """The definition: ``x ⊙ m / (1 − p)``, ``m ~ Bernoulli(1 − p)`` per element (training)."""
    if p >= 1.0:
        return torch.zeros_like(x)
    mask = torch.bernoulli(torch.full_like(x, 1.0 - p))
    return x * mask / (1.0 - p)


class Dropout(nn.Module):
    """:func:`dropout` as a module (follows ``train()`` / ``eval()``)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
