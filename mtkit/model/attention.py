"""Attention over encoder states: additive (Bahdanau) and multiplicative (Luong) scores.

Keys are projected once per batch (:meth:`Attention.prepare`), never per decoder step.
Scores over padding are set to -inf before the softmax, so padded positions get exactly
zero weight. :meth:`Attention.forward` is the fast form used everywhere;
:meth:`Attention.reference` computes the same weights and context from the papers'
equations as written (the ``*_scores_reference`` functions), and the tests hold the two
together. Shapes: B batch, S source length, T target steps, D encoder state size, Q query
size, A attention size (A = Q here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """One of ``bahdanau``, ``luong_dot``, ``luong_general``, ``luong_concat``.

    - ``bahdanau``: v · tanh(W q + U k + b), Bahdanau et al. (2015) eq. 6 (computed in
      an equivalent sigmoid form, see :meth:`forward`; reference:
      :func:`additive_scores_reference`).
    - ``luong_concat``: v · tanh(W [q; k]), Luong et al. (2015) eq. 8; the same family as
      Bahdanau's score, without a bias (reference: :func:`concat_scores_reference`).
    - ``luong_general``: q · (W k) (reference: :func:`general_scores_reference`).
    - ``luong_dot``: q · k, needs Q == D (reference: :func:`dot_scores_reference`).

    Here ``W`` is ``query_proj``, ``U`` is ``key_proj`` (for ``luong_concat``, ``W [q; k]``
    is ``query_proj(q) + key_proj(k)``) and ``b`` is ``query_proj``'s bias.
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

        ``keys`` come from :meth:`prepare`, ``values`` are the encoder states (B, S, D) and
        ``mask`` (B, S) is True on real positions. Returns ``(context, weights)`` of shapes
        (B, [T,] D) and (B, [T,] S).
        """
        single_step = query.dim() == 2
        if single_step:
            query = query.unsqueeze(1)  # (B, 1, Q)
        if self.additive:
            # v.tanh(x) = 2 v.sigmoid(2x) - sum(v): the last term is the same for every source
            # position and cancels in the softmax, so the weights are exactly those of
            # v.tanh(q + k), computed with sigmoid, which is cheaper than tanh on CPUs (this
            # is the costliest part of a decoder step). Keys come doubled.
            projected = 2.0 * self.query_proj(query)  # (B, T, Q)
            scores = sigmoid_scores(projected, keys, 2.0 * self.v.to(projected.dtype))
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)
        context, weights = attend(scores, values, mask)
        if single_step:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights

    def reference(
        self, query: torch.Tensor, states: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from the papers' equations, on unprojected states (B, S, D).

        Slow and plain, for tests and for reading: queries (B, T, Q) -> context (B, T, D)
        and weights (B, T, S).
        """
        if self.kind == "bahdanau":
            projections = (self.query_proj.weight, self.key_proj.weight, self.query_proj.bias)
            scores = additive_scores_reference(query, states, *projections, self.v)
        elif self.kind == "luong_concat":
            weight = torch.cat([self.query_proj.weight, self.key_proj.weight], dim=1)
            scores = concat_scores_reference(query, states, weight, self.v)
        elif self.kind == "luong_general":
            scores = general_scores_reference(query, states, self.key_proj.weight)
        else:
            scores = dot_scores_reference(query, states)
        return attend(scores, states, mask)


# Rows of hidden values an inference call of sigmoid_scores computes at a time: 2^18
# fp32 numbers (1 MB) stay in cache between the add, the sigmoid and the product.
BLOCK_ELEMENTS = 1 << 18


def sigmoid_scores(projected: torch.Tensor, keys: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``e_t,i = v · σ(p_t + k_i)``: queries (B, T, Q), keys (B, S, Q), v (Q,) -> (B, T, S).

    The (B, T, S, Q) hidden values are the largest tensor of a decoder step, far larger
    than a CPU cache for a beam search's rows. Without autograd they are computed in
    blocks of rows that stay in cache (BLOCK_ELEMENTS) between the add, the sigmoid and
    the product. The numbers are those of one pass up to the last bits, as for any change
    of batch (a block is a smaller product).
    """
    if torch.is_grad_enabled() and (projected.requires_grad or keys.requires_grad):
        hidden = (projected.unsqueeze(2) + keys.unsqueeze(1)).sigmoid_()  # (B, T, S, Q)
        return torch.matmul(hidden, v)
    batch, steps, length = projected.size(0), projected.size(1), keys.size(1)
    rows = max(1, BLOCK_ELEMENTS // max(1, steps * length * keys.size(2)))
    if rows >= batch:
        return torch.matmul((projected.unsqueeze(2) + keys.unsqueeze(1)).sigmoid_(), v)
    scores = projected.new_empty(batch, steps, length)
    for start in range(0, batch, rows):
        end = start + rows
        hidden = torch.add(projected[start:end].unsqueeze(2), keys[start:end].unsqueeze(1))
        torch.matmul(hidden.sigmoid_(), v, out=scores[start:end])
    return scores


def attend(
    scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked softmax over source positions, and the weighted sum of the values.

    ``a_t,i = exp(e_t,i) / Σ_{j real} exp(e_t,j)``, ``c_t = Σ_i a_t,i v_i``: scores
    (B, T, S) -> context (B, T, D), weights (B, T, S). Scores go to fp32 first (also under
    bf16), and padding gets weight exactly 0.
    """
    scores = scores.float().masked_fill(~mask.unsqueeze(1), float("-inf"))
    weights = F.softmax(scores, dim=-1)  # (B, T, S)
    context = torch.bmm(weights.to(values.dtype), values)  # (B, T, D)
    return context, weights


def additive_scores_reference(
    query: torch.Tensor,
    states: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    b: torch.Tensor,
    v: torch.Tensor,
) -> torch.Tensor:
    """Bahdanau et al. (2015) eq. 6: ``e_t,i = v · tanh(W q_t + U k_i + b)``.

    query (B, T, Q), states (B, S, D), W (A, Q), U (A, D), b (A,), v (A,) -> (B, T, S).
    """
    projected_query = (query @ w.t() + b).unsqueeze(2)  # (B, T, 1, A): W q_t + b
    projected_keys = (states @ u.t()).unsqueeze(1)  # (B, 1, S, A): U k_i
    return torch.tanh(projected_query + projected_keys) @ v


def concat_scores_reference(
    query: torch.Tensor, states: torch.Tensor, w: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Luong et al. (2015) eq. 8, concat: ``e_t,i = v · tanh(W [q_t; k_i])``.

    query (B, T, Q), states (B, S, D), W (A, Q + D), v (A,) -> (B, T, S).
    """
    steps, length = query.size(1), states.size(1)
    pairs = torch.cat(
        [
            query.unsqueeze(2).expand(-1, -1, length, -1),  # q_t at every i
            states.unsqueeze(1).expand(-1, steps, -1, -1),  # k_i at every t
        ],
        dim=-1,
    )  # (B, T, S, Q + D)
    return torch.tanh(pairs @ w.t()) @ v


def general_scores_reference(
    query: torch.Tensor, states: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    """Luong et al. (2015) eq. 8, general: ``e_t,i = q_t · (W k_i)``; W (Q, D) -> (B, T, S)."""
    return dot_scores_reference(query, states @ w.t())


def dot_scores_reference(query: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Luong et al. (2015) eq. 8, dot: ``e_t,i = q_t · k_i = Σ_j q_t,j k_i,j`` -> (B, T, S)."""
    return (query.unsqueeze(2) * states.unsqueeze(1)).sum(-1)
