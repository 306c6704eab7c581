"""Raising an experiment's update budget continues its finished runs instead of restarting."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from helpers import ROOT, run_module

TINY = """\
description: One cell on the embedded corpus, a few updates.
paper:
  citation: "Nobody (2024). A test."
  claim: "Nothing to reproduce."
data: [data=synth]
budget_steps: 2
seeds: 2
common: [model=small, train.valid_every=2, train.log_every=1, train.device=cpu,
         train.precision=fp32, train.threads=1, decode.max_len_a=0.5, decode.max_len_b=3]
conditions:
  gru: [model.cell=gru]
  lstm: [model.cell=lstm]
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MTKIT_CACHE_DIR": str(tmp_path / "cache")}


def steps_of(out: Path) -> dict[str, str]:
    with (out / "results.csv").open(newline="") as handle:
        return {f"{r['condition']}-{r['seed']}": r["steps"] for r in csv.DictReader(handle)}


def test_more_steps_resume_finished_runs(tmp_path: Path, env: dict[str, str]):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY, encoding="utf-8")
    out = tmp_path / "out"
    args = (str(spec), "--out", str(out), "--seeds", "1")
    first = run_module("mtkit.experiment", *args, cwd=ROOT, env=env)
    assert first.returncode == 0, first.stderr
    assert set(steps_of(out).values()) == {"2"}
    plan = run_module("mtkit.experiment", *args, "--steps", "4", "--dry-run", cwd=ROOT, env=env)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.count(" resume ") == 2, plan.stdout
    again = run_module("mtkit.experiment", *args, "--steps", "4", cwd=ROOT, env=env)
    assert again.returncode == 0, again.stderr
    assert "resuming at update 2 of 4 updates" in again.stdout
    assert set(steps_of(out).values()) == {"4"}
    assert "resumed from" in (out / "runs" / "gru-seed1" / "train.log").read_text()
    same = run_module("mtkit.experiment", *args, "--dry-run", cwd=ROOT, env=env)
    assert same.stdout.count(" done ") == 2, same.stdout  # a smaller budget trains nothing


def test_the_command_line_budget_replaces_the_files():
    """--steps N is N updates (no early stopping unless --converge); --budget is minutes."""
    from mtkit.errors import ConfigError
    from mtkit.experiment.budget import Budget, choose

    converging = Budget(steps=3000, converge=True, patience=4)
    assert choose(converging, 800, None, False) == Budget(steps=800, patience=4)
    assert choose(converging, 800, None, True) == Budget(steps=800, converge=True, patience=4)
    assert choose(converging, None, None, False) == converging
    assert choose(Budget(steps=10), None, None, True) == Budget(steps=10, converge=True)
    assert choose(converging, None, 12.5, False) == Budget(minutes=12.5)
    fixed = choose(converging, 800, None, False).overrides()
    assert "train.early_stopping_metric=loss" not in fixed
    with pytest.raises(ConfigError, match="not both"):
        choose(converging, 800, 12.5, False)
    with pytest.raises(ConfigError, match="--converge"):
        choose(Budget(minutes=5), None, None, True)
