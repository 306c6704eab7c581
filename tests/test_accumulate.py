"""Gradient accumulation (``train.accumulate``): N batches per update, as one N times larger."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, TINY_OVERRIDES, load_weights, read_metrics, run_module, tiny_run

from mtkit.config import RunConfig, TrainConfig
from mtkit.corpus.batching import collate
from mtkit.errors import ConfigError
from mtkit.model.checkpoint import load_checkpoint
from mtkit.search.translator import Translator
from mtkit.training.step import token_shares, train_step
from mtkit.training.trainer import Trainer, fit


def exact_run(corpus_dir: Path, **train: object) -> RunConfig:
    """A tiny run without randomness in its updates: no dropout, plain SGD, fp32."""
    run = tiny_run(corpus_dir, optimizer="sgd", lr=0.5, **train)
    run.model.dropout = 0.0
    return run


def test_token_shares_weight_each_batch_by_its_target_tokens():
    tgt_lengths = np.array([3, 5, 2, 10])
    shares = token_shares([np.array([0, 1]), np.array([2]), np.array([3])], tgt_lengths)
    assert shares == [8 / 20, 2 / 20, 10 / 20]
    assert token_shares([np.array([3, 0])], tgt_lengths) == [1.0]  # exactly one


def test_one_accumulated_update_equals_one_update_on_the_joined_batch(
    tiny_corpus_dir: Path, tmp_path: Path
):
    """accumulate=3 on b1, b2, b3 == one update on b1+b2+b3 (same pairs), up to float order."""
    accumulating = Trainer(exact_run(tiny_corpus_dir, accumulate=3), tmp_path / "a")
    group = accumulating._epoch_batches(0)[:3]
    assert len(group) == 3
    joined = Trainer(exact_run(tiny_corpus_dir), tmp_path / "b")
    before = {k: v.clone() for k, v in joined.model.state_dict().items()}

    accumulating.train_step(group, time.perf_counter())
    joined.train_step([np.concatenate(group)], time.perf_counter())

    want, got = joined.model.state_dict(), accumulating.model.state_dict()
    assert any(not torch.equal(want[k], before[k]) for k in want)  # the update moved weights
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)
    a, b = accumulating.progress, joined.progress
    assert (a.step, a.batch_in_epoch, b.step, b.batch_in_epoch) == (1, 3, 1, 1)
    assert a.interval_tokens == b.interval_tokens
    assert a.train_loss == pytest.approx(b.train_loss, rel=1e-6)


def test_accumulate_one_is_the_single_batch_update(tiny_corpus_dir: Path, tmp_path: Path):
    """accumulate=1 trains bit for bit as a loop of single-batch updates (dropout on)."""
    run = tiny_run(tiny_corpus_dir, max_steps=6, valid_every=100)
    fit(run, tmp_path / "run")
    reference = Trainer(tiny_run(tiny_corpus_dir), tmp_path / "reference")
    split = reference.corpus.splits["train"]
    reference.model.train()
    nll, tokens = 0.0, 0
    for indices in reference._epoch_batches(0)[:6]:
        batch = collate([split.source(i) for i in indices], [split.target(i) for i in indices])
        result, updated = train_step(
            reference.model, reference.criterion, reference.optimizer, batch, run.train.clip_norm
        )
        assert updated
        nll, tokens = nll + float(result.nll_sum), tokens + result.n_tokens

    weights = load_weights(tmp_path / "run" / "last.pt")
    state = reference.model.state_dict()
    assert all(torch.equal(weights[k], state[k]) for k in weights)
    [row] = read_metrics(tmp_path / "run")
    assert float(row["train_loss"]) == round(nll / tokens, 5)


def test_steps_count_updates_and_an_epoch_ends_with_a_smaller_one(
    tiny_corpus_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    run = tiny_run(tiny_corpus_dir, accumulate=4, max_steps=None, max_epochs=1, valid_every=3)
    trainer = Trainer(run, tmp_path)
    batches = len(trainer._epoch_batches(0))
    assert batches % 4 != 0  # the epoch's last update holds fewer than 4 batches
    with caplog.at_level(logging.INFO, logger="mtkit"):
        summary = trainer.fit()
    updates = -(-batches // 4)
    assert f"updates of 4 batches each (train.accumulate): {updates} updates per epoch" in (
        caplog.text
    )
    assert summary["steps"] == updates and trainer.steps_per_epoch == updates
    steps = [int(row["step"]) for row in read_metrics(tmp_path)]
    assert steps == [*range(3, updates + 1, 3), *([updates] if updates % 3 else [])]
    progress = load_checkpoint(tmp_path / "last.pt")["train_state"]["progress"]
    assert (progress["epoch"], progress["batch_in_epoch"]) == (1, 0)


def test_resume_with_accumulation_continues_exactly(tiny_corpus_dir: Path, tmp_path: Path):
    """10 updates of 2 batches, stop in the middle of the epoch, resume to 20 == 20 straight."""
    fit(tiny_run(tiny_corpus_dir, accumulate=2, max_steps=20), tmp_path / "straight")
    fit(tiny_run(tiny_corpus_dir, accumulate=2, max_steps=10), tmp_path / "first")
    progress = load_checkpoint(tmp_path / "first" / "last.pt")["train_state"]["progress"]
    assert (progress["epoch"], progress["batch_in_epoch"]) == (0, 20)  # mid-epoch
    resumed = tiny_run(
        tiny_corpus_dir, accumulate=2, max_steps=20, resume=str(tmp_path / "first" / "last.pt")
    )
    fit(resumed, tmp_path / "resumed")

    expected = read_metrics(tmp_path / "straight")
    assert [row["step"] for row in expected] == ["5", "10", "15", "20"]
    assert read_metrics(tmp_path / "resumed") == expected
    want = load_weights(tmp_path / "straight" / "last.pt")
    got = load_weights(tmp_path / "resumed" / "last.pt")
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("value", [0, -2])
def test_a_bad_accumulate_names_the_key(value: int):
    with pytest.raises(ConfigError, match=rf"^train\.accumulate={value} is not valid"):
        TrainConfig(accumulate=value)


def test_cli_refuses_a_bad_accumulate_in_one_line(tiny_corpus_dir: Path, tmp_path: Path):
    result = run_module(
        "mtkit.train",
        *TINY_OVERRIDES,
        f"data.dir={tiny_corpus_dir}",
        "train.accumulate=0",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=ROOT,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("mtkit-train: error:") and "train.accumulate=0" in lines[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r" / "last.pt").exists()


def test_a_non_finite_batch_skips_the_whole_update(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The second batch of an update has a NaN loss: the first batch's gradient is not
    applied either, nor is the moving average moved; the next update trains normally."""
    import mtkit.model.loss as loss_module

    real = loss_module.FusedLinearCrossEntropy.apply
    calls = {"n": 0}

    def second_is_nan(*args):
        calls["n"] += 1
        loss, nll = real(*args)
        return (loss * float("nan"), nll) if calls["n"] == 2 else (loss, nll)

    monkeypatch.setattr(loss_module.FusedLinearCrossEntropy, "apply", second_is_nan)
    trainer = Trainer(exact_run(tiny_corpus_dir, accumulate=2, ema_decay=0.5), tmp_path)
    assert trainer.average is not None
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batches = trainer._epoch_batches(0)
    trainer.train_step(batches[:2], time.perf_counter())
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert (trainer.progress.skipped_steps, trainer.average.updates) == (1, 0)
    trainer.train_step(batches[2:4], time.perf_counter())
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert (trainer.progress.step, trainer.progress.skipped_steps, trainer.average.updates) == (
        2,
        1,
        1,
    )


def train_command(corpus_dir: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        *TINY_OVERRIDES,
        f"data.dir={corpus_dir}",
        "train.max_steps=6",
        "train.valid_every=3",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def test_two_processes_accumulate_what_one_accumulates(tiny_corpus_dir: Path, tmp_path: Path):
    """train.processes=2 splits every batch of an update: the same updates as one process
    (without dropout, whose masks differ with the split)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ("train.accumulate=3", "train.ema_decay=0.5", "model.dropout=0")
    for name, processes in (("one", "train.threads=1"), ("two", "train.processes=2")):
        command = train_command(tiny_corpus_dir, tmp_path / name, *common, processes)
        result = run_module("mtkit.train", *command, cwd=ROOT, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    for checkpoint in ("last.pt", "ema.pt"):
        single = load_weights(tmp_path / "one" / checkpoint)
        split = load_weights(tmp_path / "two" / checkpoint)
        for name, value in single.items():  # the same updates, summed in another order
            torch.testing.assert_close(split[name], value, atol=1e-5, rtol=1e-4, msg=name)
    columns = ["step", "train_loss", "val_loss"]
    assert read_metrics(tmp_path / "two", columns) == read_metrics(tmp_path / "one", columns)


def test_accumulation_under_torchrun(tiny_corpus_dir: Path, tmp_path: Path):
    """DistributedDataParallel skips the gradient average for all but an update's last batch."""
    run_dir = tmp_path / "ddp"
    command = train_command(tiny_corpus_dir, run_dir, "train.accumulate=2", "train.ema_decay=0.5")
    result = run_module(
        "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mtkit.train",
        *command, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["step"] for row in read_metrics(run_dir)] == ["3", "6"]
    progress = load_checkpoint(run_dir / "last.pt")["train_state"]["progress"]
    assert progress["batch_in_epoch"] == 12  # 6 updates of 2 batches of this rank's shard
    assert Translator.from_checkpoint(run_dir / "ema.pt").translate(["red cat"])[0] is not None
