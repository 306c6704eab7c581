"""Token-budget batch sampling: coverage, budget, determinism, buckets, padding, inference order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtkit.corpus.batching import TokenBatchSampler, fill_batches, padding_overhead, sorted_batches

BUDGET = 400
BUCKETS = [[5, 10], [10, 15], [20, 25], [40, 50]]


def make_lengths(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Source/target lengths (with EOS) like real text, plus a few pairs over the budget."""
    rng = np.random.default_rng(seed)
    src = rng.integers(2, 70, size=n)
    tgt = np.clip(src + rng.integers(-8, 9, size=n), 2, None)
    src[[7, 100, 2500]] = [BUDGET + 50, 3, BUDGET * 2]
    tgt[[7, 100, 2500]] = [10, BUDGET + 1, 5]
    return src.astype(np.int64), tgt.astype(np.int64)


def cost(batch: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> int:
    return len(batch) * int(max(src[batch].max(), tgt[batch].max()))


def as_lists(batches: list[np.ndarray]) -> list[list[int]]:
    return [b.tolist() for b in batches]


def sampler(buckets: list[list[int]] | None = None, seed: int = 1, **kw: int) -> TokenBatchSampler:
    src, tgt = make_lengths()
    return TokenBatchSampler(src, tgt, BUDGET, seed=seed, buckets=buckets, **kw)


MODES = pytest.mark.parametrize("buckets", [None, BUCKETS], ids=["pooled", "buckets"])


@MODES
@pytest.mark.parametrize("epoch", [0, 1, 5])
def test_every_example_exactly_once(buckets: list[list[int]] | None, epoch: int) -> None:
    s = sampler(buckets)
    batches = s.batches(epoch)
    flat = np.concatenate(batches)
    assert len(flat) == len(s.src_lengths)
    assert sorted(flat.tolist()) == list(range(len(s.src_lengths)))
    assert all(len(b) > 0 for b in batches)


@MODES
def test_no_batch_over_budget_unless_single_long_example(buckets: list[list[int]] | None) -> None:
    s = sampler(buckets)
    batches = s.batches(0)
    over = [b for b in batches if cost(b, s.src_lengths, s.tgt_lengths) > BUDGET]
    assert over, "the data has pairs over the budget; they must appear as batches"
    assert all(len(b) == 1 for b in over)
    assert sorted(int(b[0]) for b in over) == [7, 100, 2500]


def test_pooled_batches_are_reasonably_full() -> None:
    """The sampler fills batches, it does not e.g. emit one example per batch."""
    s = sampler()
    batches = s.batches(0)
    assert len(batches) < len(s.src_lengths) / 5
    costs = [cost(b, s.src_lengths, s.tgt_lengths) for b in batches if len(b) > 1]
    assert np.mean(costs) > 0.8 * BUDGET


@MODES
def test_same_seed_and_epoch_give_identical_batches(buckets: list[list[int]] | None) -> None:
    a = sampler(buckets, seed=7).batches(3)
    b = sampler(buckets, seed=7).batches(3)
    assert as_lists(a) == as_lists(b)
    # and calling twice on one sampler does not advance hidden state
    s = sampler(buckets, seed=7)
    assert as_lists(s.batches(3)) == as_lists(s.batches(3)) == as_lists(a)


@MODES
def test_other_epoch_or_seed_gives_other_order(buckets: list[list[int]] | None) -> None:
    base = as_lists(sampler(buckets, seed=7).batches(0))
    other_epoch = as_lists(sampler(buckets, seed=7).batches(1))
    other_seed = as_lists(sampler(buckets, seed=8).batches(0))
    assert other_epoch != base
    assert other_seed != base
    # not only the order of the batches changes: their contents do too
    assert {tuple(b) for b in other_epoch} != {tuple(b) for b in base}
    assert {tuple(b) for b in other_seed} != {tuple(b) for b in base}


def test_len_is_the_number_of_batches_of_epoch_zero() -> None:
    s = sampler()
    assert len(s) == len(s.batches(0))


def bucket_of(src: int, tgt: int) -> int:
    for b, (max_src, max_tgt) in enumerate(BUCKETS):
        if src <= max_src and tgt <= max_tgt:
            return b
    return len(BUCKETS)


def test_bucket_mode_keeps_buckets_apart_with_an_overflow_bucket() -> None:
    s = sampler(BUCKETS)
    src, tgt = s.src_lengths, s.tgt_lengths
    assignment = np.array([bucket_of(int(a), int(b)) for a, b in zip(src, tgt, strict=True)])
    overflow = set(np.flatnonzero(assignment == len(BUCKETS)).tolist())
    assert len(overflow) > 50  # lengths go up to 69, the last bucket stops at 40/50
    seen_overflow: set[int] = set()
    for batch in s.batches(2):
        kinds = set(assignment[batch].tolist())
        assert len(kinds) == 1, f"batch mixes buckets {kinds}"
        (kind,) = kinds
        if kind < len(BUCKETS):
            # fixed-size batches: budget // longest side of the bucket
            assert len(batch) <= BUDGET // max(BUCKETS[kind])
        else:
            seen_overflow.update(batch.tolist())
    assert seen_overflow == overflow


def test_bucket_batch_sizes_follow_the_bucket() -> None:
    src = np.array([3] * 100 + [12] * 50)
    tgt = np.array([4] * 100 + [14] * 50)
    s = TokenBatchSampler(src, tgt, 100, seed=0, buckets=[[5, 10], [15, 20]])
    sizes = sorted(len(b) for b in s.batches(0))
    # bucket (5, 10): 100 // 10 = 10 per batch; bucket (15, 20): 100 // 20 = 5 per batch
    assert sizes == [5] * 10 + [10] * 10


def test_padding_overhead_by_hand() -> None:
    src = np.array([3, 5, 4, 2])
    tgt = np.array([2, 4, 6, 2])
    batches = [np.array([0, 1]), np.array([2]), np.array([3])]
    # batch [0, 1]: real 3+5+2+4 = 14, padded 2*(5+4) = 18
    # batch [2]:    real 4+6 = 10,     padded 1*(4+6) = 10
    # batch [3]:    real 2+2 = 4,      padded 1*(2+2) = 4
    assert padding_overhead(batches, src, tgt) == pytest.approx(4 / 28)
    assert padding_overhead([np.array([2]), np.array([3])], src, tgt) == 0.0
    # every pair in one batch: padded 4*(5+6) = 44, real 28
    assert padding_overhead([np.array([0, 1, 2, 3])], src, tgt) == pytest.approx(16 / 28)


def test_pooled_sampler_pads_less_than_random_batches() -> None:
    s = sampler()
    src, tgt = s.src_lengths, s.tgt_lengths
    sorted_overhead = padding_overhead(s.batches(0), src, tgt)
    rng = np.random.default_rng(0)
    random_batches = np.array_split(rng.permutation(len(src)), len(s.batches(0)))
    assert sorted_overhead < 0.5 * padding_overhead(random_batches, src, tgt)


def test_fill_batches_by_hand() -> None:
    order = np.array([0, 1, 2, 3, 4])
    src = np.array([2, 3, 3, 5, 9])
    tgt = np.array([2, 2, 4, 5, 1])
    # budget 10: [0,1,2] costs 3*4 = 12 > 10, so [0,1] (2*3 = 6), [2,3] (2*5 = 10), [4] (9)
    assert as_lists(fill_batches(order, src, tgt, 10)) == [[0, 1], [2, 3], [4]]
    # budget 8: the single pair 4 (cost 9) still gets a batch of its own
    assert as_lists(fill_batches(order, src, tgt, 8)) == [[0, 1], [2], [3], [4]]


@pytest.mark.parametrize("budget", [1, 20, 100, 100_000])
def test_sorted_batches_cover_every_index_once(budget: int) -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 40, size=500).tolist()
    batches = sorted_batches(lengths, budget)
    flat = np.concatenate(batches).tolist()
    assert sorted(flat) == list(range(500))
    lengths_array = np.asarray(lengths)
    # longest first, and within the budget unless alone
    assert all(np.diff(lengths_array[flat]) <= 0)
    for batch in batches:
        assert len(batch) == 1 or len(batch) * int(lengths_array[batch].max()) <= budget
    if budget == 100_000:
        assert len(batches) == 1
    if budget == 1:
        assert len(batches) == 500


def test_sorted_batches_is_stable_for_equal_lengths() -> None:
    assert as_lists(sorted_batches([2, 5, 2, 5], 10)) == [[1, 3], [0, 2]]


# --------------------------------------------------------------------------------------
# exact batches (what resume relies on) and the sampler's memory

GOLDEN_SRC = [1, 9, 8, 5, 5, 10, 1, 8, 3, 2, 6, 11, 9, 9, 8, 9, 6, 2, 10, 5, 6, 5, 3, 11]
GOLDEN_TGT = [3, 10, 7, 7, 5, 10, 1, 6, 1, 2, 9, 8, 12, 11, 6, 10, 4, 4, 11, 4, 3, 8, 3, 14]


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64])
def test_batches_of_a_seed_and_epoch_never_change(dtype: type) -> None:
    """The batches earlier versions made for (seed 5, epoch 3): a resumed run sees the same."""
    src, tgt = np.array(GOLDEN_SRC, dtype=dtype), np.array(GOLDEN_TGT, dtype=dtype)
    pooled = TokenBatchSampler(src, tgt, 30, seed=5).batches(3)
    assert as_lists(pooled) == [
        [23], [18, 12], [3, 21, 7], [19, 4, 20, 16], [11, 13], [6, 9, 0, 8, 22, 17],
        [14, 2, 10], [15, 1, 5],
    ]  # fmt: skip
    bucketed = TokenBatchSampler(src, tgt, 30, seed=5, buckets=[[4, 5], [8, 9]]).batches(3)
    assert as_lists(bucketed) == [
        [23], [11, 13], [4, 10, 20], [16, 2, 7], [15, 1, 5], [22, 0, 8, 9, 17, 6], [19, 3, 21],
        [18, 12], [14],
    ]  # fmt: skip


@pytest.mark.parametrize("budget", [1, 7, 40, 400, 10**6])
def test_the_fast_cut_of_sorted_pools_equals_the_greedy_loop(budget: int) -> None:
    from mtkit.corpus.batching import _ascending_cuts, _greedy_cuts

    rng = np.random.default_rng(budget)
    for n in (1, 2, 50, 2000):
        longest = np.sort(rng.integers(1, 90, size=n))
        assert _ascending_cuts(longest, budget) == _greedy_cuts(longest.tolist(), budget)


def test_compact_memory_mapped_lengths_are_used_without_a_copy(tmp_path: Path) -> None:
    src, tgt = make_lengths()
    np.save(tmp_path / "src.npy", src.astype(np.int16))
    np.save(tmp_path / "tgt.npy", tgt.astype(np.int16))
    mapped = [np.load(tmp_path / f"{side}.npy", mmap_mode="r") for side in ("src", "tgt")]
    s = TokenBatchSampler(mapped[0], mapped[1], BUDGET, seed=1)
    assert s.src_lengths.dtype == np.int16 and np.shares_memory(s.src_lengths, mapped[0])
    batches = s.batches(2)
    assert {b.dtype for b in batches} == {np.dtype(np.int32)}
    assert as_lists(batches) == as_lists(TokenBatchSampler(src, tgt, BUDGET, seed=1).batches(2))


@pytest.mark.parametrize("buckets", [None, BUCKETS], ids=["pooled", "buckets"])
def test_an_epoch_of_a_million_pairs_takes_a_few_bytes_per_pair(
    buckets: list[list[int]] | None,
) -> None:
    """No Python object per pair: the epoch's index arrays and small temporaries only."""
    import tracemalloc

    n = 1_000_000
    rng = np.random.default_rng(0)
    src = rng.integers(2, 60, size=n).astype(np.int16)
    tgt = rng.integers(2, 60, size=n).astype(np.int16)
    sampler = TokenBatchSampler(src, tgt, 4000, seed=1, buckets=buckets)
    tracemalloc.start()
    batches = sampler.batches(0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sum(len(b) for b in batches) == n
    # pooled: the int64 permutation while it becomes int32 indices (12 B/pair), then the
    # sorted pools' indices; buckets also sort the whole overflow bucket at once
    assert peak < (16 if buckets is None else 28) * n, f"{peak / n:.1f} bytes per pair"
