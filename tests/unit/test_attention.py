"""Attention: the fast forms against the papers' equations, and the equations by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mtkit.config import ATTENTION_TYPES
from mtkit.model.attention import (
    BLOCK_ELEMENTS,
    Attention,
    additive_scores_reference,
    concat_scores_reference,
    dot_scores_reference,
    general_scores_reference,
    sigmoid_scores,
)

KINDS = [kind for kind in ATTENTION_TYPES if kind != "none"]
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [None, 4], ids=["one-step", "all-steps"])
def test_fast_attention_equals_the_papers_equations(kind, steps):
    """Weights and context of ``forward`` (sigmoid form, doubled keys, bmm) = ``reference``."""
    torch.manual_seed(0)
    key_dim = 6 if kind == "luong_dot" else 10
    attention = Attention(kind, query_dim=6, key_dim=key_dim)
    states = torch.randn(3, 5, key_dim) * MASK.unsqueeze(-1)  # zero on padding, as encoded
    shape = (3, 6) if steps is None else (3, steps, 6)
    query = torch.randn(*shape)
    with torch.no_grad():
        context, weights = attention(query, attention.prepare(states), states, MASK)
        queries = query.unsqueeze(1) if steps is None else query
        ref_context, ref_weights = attention.reference(queries, states, MASK)
    if steps is None:
        ref_context, ref_weights = ref_context.squeeze(1), ref_weights.squeeze(1)
    assert weights.shape == (*shape[:-1], 5) and context.shape == (*shape[:-1], key_dim)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(context, ref_context, atol=1e-6, rtol=1e-5)
    padding = ~MASK if steps is None else ~MASK.unsqueeze(1).expand(-1, steps, -1)
    assert torch.all(weights[padding] == 0.0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(shape[:-1]))


@pytest.mark.parametrize("kind", ["bahdanau", "luong_concat"])
def test_additive_attention_weights_equal_the_tanh_formula(kind):
    torch.manual_seed(0)
    attention = Attention(kind, query_dim=6, key_dim=10)
    states = torch.randn(3, 5, 10)
    query = torch.randn(3, 6)
    _, weights = attention(query, attention.prepare(states), states, MASK)
    keys = attention.key_proj(states)
    scores = torch.tanh(attention.query_proj(query).unsqueeze(1) + keys) @ attention.v
    expected = torch.softmax(scores.masked_fill(~MASK, float("-inf")), dim=-1)
    torch.testing.assert_close(weights, expected)


def test_reference_scores_by_hand():
    """One query, two keys, identity projections: the equations evaluated on paper."""
    query = torch.tensor([[[0.5, 0.0]]])  # (1, 1, 2)
    keys = torch.tensor([[[0.5, 0.0], [1.0, 2.0]]])  # (1, 2, 2)
    eye, ones = torch.eye(2), torch.ones(2)
    # v . tanh(q + k + b), b = (0, 1): k_1 -> tanh(1) + tanh(1); k_2 -> tanh(1.5) + tanh(3)
    additive = additive_scores_reference(query, keys, eye, eye, torch.tensor([0.0, 1.0]), ones)
    expected = [[[2 * math.tanh(1.0), math.tanh(1.5) + math.tanh(3.0)]]]
    torch.testing.assert_close(additive, torch.tensor(expected))
    torch.testing.assert_close(dot_scores_reference(query, keys), torch.tensor([[[0.25, 0.5]]]))
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # W k swaps the coordinates
    general = general_scores_reference(query, keys, swap)
    torch.testing.assert_close(general, torch.tensor([[[0.0, 1.0]]]))


def test_concat_score_is_the_additive_score_without_bias():
    """Luong's v . tanh(W [q; k]) splits W into Bahdanau's W q + U k (with b = 0)."""
    torch.manual_seed(0)
    query, keys = torch.randn(2, 3, 4), torch.randn(2, 5, 6)
    w, u, v = torch.randn(7, 4), torch.randn(7, 6), torch.randn(7)
    concat = concat_scores_reference(query, keys, torch.cat([w, u], dim=1), v)
    additive = additive_scores_reference(query, keys, w, u, torch.zeros(7), v)
    torch.testing.assert_close(concat, additive)


@pytest.mark.parametrize("rows, steps, length", [(40, 1, 9), (7, 3, 5), (1, 1, 40)])
def test_scores_in_row_blocks_are_the_single_pass_numbers(
    monkeypatch: pytest.MonkeyPatch, rows: int, steps: int, length: int
):
    """Search computes the additive scores in cache-sized blocks of rows: the numbers of
    the single pass training uses, up to the last bits (a block is a smaller product, as
    a smaller batch is)."""
    torch.manual_seed(3)
    query, keys, v = torch.randn(rows, steps, 16), torch.randn(rows, length, 16), torch.randn(16)
    single = torch.matmul((query.unsqueeze(2) + keys.unsqueeze(1)).sigmoid(), v)
    monkeypatch.setattr("mtkit.model.attention.BLOCK_ELEMENTS", 3 * steps * length * 16)  # 3 rows
    with torch.inference_mode():
        blocked = sigmoid_scores(query, keys, v)
    assert blocked.shape == (rows, steps, length)
    assert torch.allclose(blocked, single, rtol=1e-6, atol=1e-5)
    assert BLOCK_ELEMENTS == 1 << 18
