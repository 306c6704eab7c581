"""The two ways training processes divide batches, and validation outcomes as broadcast codes."""

from __future__ import annotations

import numpy as np
import torch

from mtkit.training import distributed
from mtkit.training.distributed import DistInfo
from mtkit.training.parallel import ShardedBatches, SplitBatches, batch_division
from mtkit.training.trainer import Outcome

BATCHES = [np.arange(i, i + 3) for i in range(0, 15, 3)]  # five batches of three pairs
LENGTHS = np.arange(1, 16)


def test_the_mode_follows_who_started_the_processes() -> None:
    assert isinstance(batch_division(DistInfo(), 0), ShardedBatches)
    assert isinstance(batch_division(DistInfo(0, 2), 0), ShardedBatches)  # torchrun
    assert isinstance(batch_division(DistInfo(0, 2), 2), SplitBatches)  # train.processes=2


def test_sharded_processes_step_through_their_own_whole_batches() -> None:
    one, second = ShardedBatches(DistInfo()), ShardedBatches(DistInfo(1, 2))
    assert one.epoch(BATCHES) == BATCHES and one.counting_world == 1
    assert [b.tolist() for b in second.epoch(BATCHES)] == [[3, 4, 5], [9, 10, 11]]
    assert second.counting_world == 2  # tokens/s: each process counted its own
    indices, weight = second.portion(BATCHES[1], LENGTHS)
    assert indices is BATCHES[1] and weight == 1.0
    assert second.batch_totals(3.5, 7, weight, torch.device("cpu")) == (3.5, 7)


def test_split_processes_step_through_every_batch_and_take_their_part() -> None:
    info = DistInfo(1, 2)
    split = SplitBatches(info)
    assert split.epoch(BATCHES) == BATCHES and split.counting_world == 1
    indices, weight = split.portion(BATCHES[1], LENGTHS)
    expected = distributed.part(BATCHES[1], LENGTHS, info)
    assert indices.tolist() == expected[0].tolist() == [4] and weight == expected[1]


def test_only_split_processes_lend_rank_0_their_threads() -> None:
    before = torch.get_num_threads()
    with SplitBatches(DistInfo(0, 2)).all_cores():
        assert torch.get_num_threads() == 2 * before
    assert torch.get_num_threads() == before
    with ShardedBatches(DistInfo(0, 2)).all_cores():
        assert torch.get_num_threads() == before


def test_outcomes_travel_as_floats_and_name_the_stop_reason() -> None:
    for outcome in Outcome:
        code = torch.tensor([outcome.value], dtype=torch.float64).tolist()[0]
        assert Outcome(code) is outcome
    assert [o.stop_reason for o in Outcome] == ["", "early_stopping", "signal"]
