"""Losses: the fused full softmax and sampled softmax against plain cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtkit.config import LossConfig
from mtkit.model.loss import (
    Criterion,
    FusedLinearCrossEntropy,
    inclusion_probability,
    linear_cross_entropy_reference,
    proposal_distribution,
    smoothed_cross_entropy,
)

N, H, V = 37, 8, 50


def reference(features, weight, bias, targets, smoothing):
    logits = F.linear(features, weight, bias)
    return F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction="sum")


def leaves(seed: int = 0):
    torch.manual_seed(seed)
    features = torch.randn(N, H, requires_grad=True)
    weight = torch.randn(V, H, requires_grad=True)
    bias = torch.randn(V, requires_grad=True)
    targets = torch.randint(4, V, (N,))
    return features, weight, bias, targets


def fused(features, weight, bias, targets, smoothing):
    """The fused loss in fp32, with the reference's signature."""
    return FusedLinearCrossEntropy.apply(features, weight, bias, targets, smoothing, torch.float32)


def loss_and_grads(loss_fn, features, weight, bias, targets, smoothing):
    """Loss, NLL and the gradients of 2 * loss w.r.t. features, weight and bias."""
    for t in (features, weight, bias):
        t.grad = None
    loss, nll = loss_fn(features, weight, bias, targets, smoothing)
    (2.0 * loss).backward()  # an upstream gradient other than 1 must scale the result
    grads = [t.grad.clone() for t in (features, weight, bias)]
    return loss.detach(), nll.detach(), grads


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_linear_cross_entropy_reference_is_torch_cross_entropy(smoothing):
    """The plain reference (W f + b, then the smoothed loss) equals torch's definition."""
    features, weight, bias, targets = leaves()
    loss, nll = linear_cross_entropy_reference(features, weight, bias, targets, smoothing)
    torch.testing.assert_close(loss, reference(features, weight, bias, targets, smoothing))
    torch.testing.assert_close(nll, reference(features, weight, bias, targets, 0.0).detach())


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_fused_cross_entropy_matches_reference(smoothing):
    """Loss, NLL and the features/weight/bias gradients of the fused form = the reference."""
    features, weight, bias, targets = leaves()
    expected = loss_and_grads(
        linear_cross_entropy_reference, features, weight, bias, targets, smoothing
    )
    got = loss_and_grads(fused, features, weight, bias, targets, smoothing)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-4)
    for got_grad, want in zip(got[2], expected[2], strict=True):
        torch.testing.assert_close(got_grad, want, rtol=1e-4, atol=1e-5)


def test_fused_cross_entropy_chunks_large_batches():
    torch.manual_seed(1)
    big_v = 70_000  # chunk = 2^22 // V = 59 rows -> several chunks
    features = torch.randn(150, 4, requires_grad=True)
    weight = torch.randn(big_v, 4, requires_grad=True)
    bias = torch.zeros(big_v, requires_grad=True)
    targets = torch.randint(0, big_v, (150,))
    loss, _, grads = loss_and_grads(fused, features, weight, bias, targets, 0.1)
    torch.testing.assert_close(
        loss, reference(features, weight, bias, targets, 0.1), rtol=1e-5, atol=1e-3
    )
    _, _, expected = loss_and_grads(
        linear_cross_entropy_reference, features, weight, bias, targets, 0.1
    )
    for got, want in zip(grads, expected, strict=True):  # sums over 70k columns, reordered
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("proposal", ["uniform", "log_uniform", "unigram"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_sampled_softmax_with_every_word_equals_full_softmax(smoothing, proposal):
    """Every id a candidate: value and gradient equal full CE, whatever the proposal."""
    features, weight, bias, targets = leaves(2)
    output = torch.nn.Linear(H, V)
    output.weight, output.bias = (
        torch.nn.Parameter(weight.detach().clone()),
        torch.nn.Parameter(bias.detach().clone()),
    )
    criterion = Criterion(
        LossConfig(
            sampled_softmax=True, num_samples=200 * V, proposal=proposal, label_smoothing=smoothing
        ),
        V,
        np.arange(V)[::-1].copy(),
    )
    torch.manual_seed(0)
    mask = torch.ones(1, N, dtype=torch.bool)
    result = criterion.train_loss(features.unsqueeze(0), targets.unsqueeze(0), mask, output)
    assert result.n_tokens == N
    result.loss.backward()
    sampled_grads = (features.grad.clone(), output.weight.grad.clone(), output.bias.grad.clone())
    features.grad = None
    full = reference(features, output.weight, output.bias, targets, smoothing) / N
    output.weight.grad = output.bias.grad = None
    full.backward()
    torch.testing.assert_close(result.loss, full, rtol=1e-5, atol=1e-5)
    for got, want in zip(
        sampled_grads, (features.grad, output.weight.grad, output.bias.grad), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_sampled_softmax_uses_few_candidates_and_corrects_by_log_q():
    features, _weight, _bias, targets = leaves(3)
    output = torch.nn.Linear(H, 1000)
    criterion = Criterion(
        LossConfig(sampled_softmax=True, num_samples=10, label_smoothing=0.0), 1000
    )
    seen: dict[str, torch.Tensor] = {}
    original = F.linear

    def spy(x, w, b=None):
        seen["rows"] = w
        return original(x, w, b)

    torch.manual_seed(0)
    F.linear, saved = spy, F.linear  # type: ignore[assignment]
    try:
        result = criterion.train_loss(
            features.unsqueeze(0), targets.unsqueeze(0), torch.ones(1, N, dtype=torch.bool), output
        )
    finally:
        F.linear = saved  # type: ignore[assignment]
    assert seen["rows"].shape[0] <= len(set(targets.tolist())) + 10
    assert torch.isfinite(result.loss)


def test_inclusion_probability_corrects_only_what_was_drawn():
    """The batch's targets are certain candidates; a drawn column is in with 1-(1-Q)^K."""
    q = torch.tensor([0.5, 0.01, 1e-6, 0.2])
    in_batch = torch.tensor([False, False, False, True])
    got = inclusion_probability(q, 10, in_batch)
    want = torch.tensor([1 - 0.5**10, 1 - 0.99**10, 1 - (1 - 1e-6) ** 10, 1.0])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)
    assert abs(float(got[2]) / (10 * 1e-6) - 1) < 1e-4  # rare columns: K Q, i.e. -log Q + const


def test_proposals_are_distributions_with_mass_everywhere():
    counts = np.array([0, 5, 0, 100, 50, 1, 7, 3])
    for kind in ("log_uniform", "unigram"):
        q = proposal_distribution(kind, 8, counts)
        assert bool((q > 0).all())  # no candidate gets an infinite -log Q correction
        torch.testing.assert_close(q.sum(), torch.tensor(1.0))
    uniform = proposal_distribution("uniform", 8, counts)
    torch.testing.assert_close(uniform, torch.full((8,), 0.125))
    zipf = proposal_distribution("log_uniform", 8, counts)
    assert zipf[3] > zipf[4] > zipf[6] > zipf[1]  # ranked by frequency


def test_eval_loss_ignores_padding_and_smoothing_free_nll():
    features, _weight, _bias, targets = leaves(4)
    output = torch.nn.Linear(H, V)
    criterion = Criterion(LossConfig(label_smoothing=0.2), V)
    mask = torch.ones(1, N, dtype=torch.bool)
    mask[0, -5:] = False
    result = criterion.eval_loss(features.unsqueeze(0), targets.unsqueeze(0), mask, output)
    assert result.n_tokens == N - 5
    logits = output(features[:-5])
    _, nll = smoothed_cross_entropy(logits, targets[:-5], 0.0)
    torch.testing.assert_close(result.nll_sum, nll)
