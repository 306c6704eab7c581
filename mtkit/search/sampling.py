"""Sampled decoding: each step draws the next piece from the model's distribution.

Back-translation (Edunov et al. 2018) wants varied synthetic sources rather than the
single most likely one, so greedy search (:class:`~mtkit.search.stream.GreedyStream`)
can draw its pick instead of taking the argmax: from ``softmax(log p / temperature)``,
over the ``top_k`` most likely columns only when ``top_k`` > 0 (fairseq's
``--sampling --temperature --sampling-topk``). Constraints apply first (length limits,
``min_len``, n-gram blocking, a forced prefix), so a sample obeys them as greedy search
does. The score is the model's own log-probability of the drawn pieces, temperature
aside, so it equals :func:`~mtkit.search.greedy.forced_scores` of the output.

A draw is the Gumbel-max trick: ``argmax(log p / T + G)`` with ``G = -log(-log U)`` and
U uniform in (0, 1) is a draw from ``softmax(log p / T)``. U is not taken from a
stateful generator but computed by an integer hash of (row key, step, column) (a
counter-based generator): the row key hashes the seed with the sentence's source ids, so
the noise a sentence meets is the same in any batch, in any order, in any process of the
decoding pool and on any device. Its sample is then the same wherever its log-probs are
(in fp32 on the CPU, whatever the batch; another device or precision may tip a near tie).
The same sentence twice in one input gets the same sample twice (another seed gives
another). Shapes: A rows, M output columns, k of them kept by ``top_k``.
"""

from __future__ import annotations

import zlib

import torch

from mtkit.config import SearchOptions

_MASK = 0xFFFFFFFF  # hashes are 32-bit values held in int64 tensors
_GOLDEN = 0x9E3779B9  # spreads consecutive steps apart before mixing


def row_keys(src: torch.Tensor, src_lengths: torch.Tensor, seed: int) -> torch.Tensor:
    """(B,) int64 keys in [0, 2^32): the CRC-32 of each row's source ids (B, S), up to its
    length (B,), started from the seed's. Computed once per sentence, when it joins."""
    start = zlib.crc32(seed.to_bytes(8, "little"))
    keys = []
    for row, length in zip(src.tolist(), src_lengths.tolist(), strict=True):
        data = b"".join(int(i).to_bytes(4, "little") for i in row[: int(length)])
        keys.append(zlib.crc32(data, start))
    return torch.tensor(keys, dtype=torch.long, device=src.device)


def sample(
    log_probs: torch.Tensor, keys: torch.Tensor, steps: torch.Tensor, options: SearchOptions
) -> torch.Tensor:
    """The column drawn for each row (A,), from its log-probs (A, M) after constraints.

    ``keys`` (A,) from :func:`row_keys`, ``steps`` (A,) each row's own step count (so a
    row's draws do not depend on when it joined a running batch).
    """
    scaled = log_probs / options.temperature if options.temperature != 1.0 else log_probs
    k = options.top_k
    if 0 < k < log_probs.size(1):
        values, columns = scaled.topk(k, dim=-1)  # (A, k)
        noisy = values + _gumbel(keys, steps, columns)
        return columns.gather(1, noisy.argmax(dim=-1, keepdim=True)).squeeze(1)
    columns = torch.arange(log_probs.size(1), device=log_probs.device).unsqueeze(0)
    return (scaled + _gumbel(keys, steps, columns)).argmax(dim=-1)


def _gumbel(keys: torch.Tensor, steps: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Gumbel noise (A, C) for ``columns`` (A, C) or (1, C): a function of (key, step,
    column) alone. U takes 24 bits of the hash, centred in its interval, so 0 < U < 1."""
    base = _mix(keys ^ ((steps * _GOLDEN) & _MASK))  # (A,)
    bits = _mix(_mix(base.unsqueeze(1) ^ columns))  # (A, C)
    uniform = ((bits >> 8).float() + 0.5) / float(1 << 24)
    return -torch.log(-torch.log(uniform))


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply rounds, after Wellons' "lowbias32"), on
    values in [0, 2^32). Both multipliers are below 2^31, so no int64 product overflows."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _MASK
    return x ^ (x >> 16)
