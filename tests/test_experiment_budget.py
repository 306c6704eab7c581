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
