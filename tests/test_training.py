"""Training: exact resume, determinism, signals, NaN handling, safe checkpoints, DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY_OVERRIDES, load_weights, read_metrics, run_module, tiny_run

from mtkit.checkpoint import load_checkpoint
from mtkit.errors import CheckpointError
from mtkit.trainer import TrainingError, fit
from mtkit.translator import Translator


def test_resume_continues_exactly(tiny_corpus_dir: Path, tmp_path: Path):
    """N steps, stop, resume to 2N == an uninterrupted 2N-step run (metrics and weights)."""
    straight = tmp_path / "straight"
    fit(tiny_run(tiny_corpus_dir, max_steps=20), straight)
    first = tmp_path / "first"
    fit(tiny_run(tiny_corpus_dir, max_steps=10), first)
    resumed = tmp_path / "resumed"
    fit(tiny_run(tiny_corpus_dir, max_steps=20, resume=str(first / "last.pt")), resumed)

    expected = read_metrics(straight)
    assert [row["step"] for row in expected] == ["5", "10", "15", "20"]
    assert read_metrics(resumed) == expected
    for name in ("last.pt", "best.pt"):
        want, got = load_weights(straight / name), load_weights(resumed / name)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_same_seed_gives_identical_runs(tiny_corpus_dir: Path, tmp_path: Path):
    fit(tiny_run(tiny_corpus_dir), tmp_path / "a")
    fit(tiny_run(tiny_corpus_dir), tmp_path / "b")
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")
    a, b = load_weights(tmp_path / "a" / "last.pt"), load_weights(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    fit(tiny_run(tiny_corpus_dir, seed=7), tmp_path / "c")
    assert read_metrics(tmp_path / "c") != read_metrics(tmp_path / "a")


def test_run_directory_contents_and_safe_checkpoints(tiny_corpus_dir: Path, tmp_path: Path):
    run = tiny_run(tiny_corpus_dir, test_at_end=True)
    summary = fit(run, tmp_path)
    for name in ("config.yaml", "train.log", "metrics.csv", "best.pt", "last.pt", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert "test" in summary and "bleu_greedy" in summary["test"]
    assert "reverse_source: true" in (tmp_path / "config.yaml").read_text()
    for checkpoint in tmp_path.glob("*.pt"):
        payload = torch.load(checkpoint, weights_only=True)  # no pickled code
        assert payload["format"] == "mtkit-checkpoint"
        assert payload["codec"]["reverse_source"] is True
        assert isinstance(payload["codec"]["src_model"], bytes)
    assert "train_state" in torch.load(tmp_path / "last.pt", weights_only=True)
    assert "train_state" not in torch.load(tmp_path / "best.pt", weights_only=True)
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("step,epoch,train_loss")


def test_nan_loss_skips_the_step_and_counts_it(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import mtkit.loss as loss_module

    real = loss_module.FusedLinearCrossEntropy.apply
    calls = {"n": 0}

    def sometimes_nan(*args):
        calls["n"] += 1
        loss, nll = real(*args)
        return (loss * float("nan"), nll) if calls["n"] in (2, 3) else (loss, nll)

    monkeypatch.setattr(loss_module.FusedLinearCrossEntropy, "apply", sometimes_nan)
    summary = fit(tiny_run(tiny_corpus_dir), tmp_path)
    assert summary["skipped_steps"] == 2
    weights = load_weights(tmp_path / "last.pt")
    assert all(bool(torch.isfinite(w).all()) for w in weights.values() if w.is_floating_point())


def test_persistent_nan_stops_with_a_clear_error(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import mtkit.loss as loss_module

    real = loss_module.FusedLinearCrossEntropy.apply
    monkeypatch.setattr(
        loss_module.FusedLinearCrossEntropy,
        "apply",
        lambda *a: (real(*a)[0] * float("nan"), real(*a)[1]),
    )
    with pytest.raises(TrainingError, match="NaN/inf for 3 steps in a row"):
        fit(tiny_run(tiny_corpus_dir, max_bad_steps=3), tmp_path)
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "last.pt").exists()


def test_resume_errors_name_the_problem(tiny_corpus_dir: Path, tmp_path: Path):
    fit(tiny_run(tiny_corpus_dir), tmp_path / "run")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        fit(tiny_run(tiny_corpus_dir, resume=str(tmp_path / "missing.pt")), tmp_path / "x")
    with pytest.raises(CheckpointError, match=r"holds no training state"):
        fit(tiny_run(tiny_corpus_dir, resume=str(tmp_path / "run" / "best.pt")), tmp_path / "x")
    truncated = tmp_path / "truncated.pt"
    data = (tmp_path / "run" / "last.pt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        fit(tiny_run(tiny_corpus_dir, resume=str(truncated)), tmp_path / "x")
    other = tiny_run(tiny_corpus_dir, resume=str(tmp_path / "run" / "last.pt"))
    other.model.decoder_hidden = 32
    other.model.bidirectional = False
    with pytest.raises(
        CheckpointError,
        match=r"model\.bidirectional, .*model\.decoder_hidden|"
        r"model\.decoder_hidden",
    ):
        fit(other, tmp_path / "x")


class NeedsCode:
    """An object that only pickled code can rebuild."""


def test_checkpoint_refusals(tmp_path: Path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": {}}, plain)
    with pytest.raises(CheckpointError, match="not an mtkit checkpoint"):
        load_checkpoint(plain)

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "mtkit-checkpoint", "object": NeedsCode()}, unsafe)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(unsafe)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"corrupt or truncated|not a readable"):
        load_checkpoint(text)


def _wait_for(path: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and text in path.read_text():
            return
        if process.poll() is not None:
            raise AssertionError(f"training exited early: {process.communicate()}")
        time.sleep(0.2)
    raise AssertionError(f"{text!r} did not appear in {path}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_loadable_last_checkpoint(tiny_corpus_dir: Path, tmp_path: Path, sig):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtkit.train",
            *TINY_OVERRIDES,
            f"data.dir={tiny_corpus_dir}",
            "train.max_steps=100000",
            "train.valid_every=100000",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(run_dir / "train.log", "epoch 2:", process, timeout=120)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + sig
    assert "Traceback" not in stderr
    assert "train.resume=" in stderr
    payload = load_checkpoint(run_dir / "last.pt")
    assert payload["train_state"]["progress"]["step"] > 0
    translator = Translator.from_checkpoint(run_dir / "last.pt")
    assert len(translator.translate(["red cat", ""])) == 2


def test_two_process_ddp_on_cpu(tiny_corpus_dir: Path, tmp_path: Path):
    run_dir = tmp_path / "runs" / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "mtkit.train",
            *TINY_OVERRIDES,
            f"data.dir={tiny_corpus_dir}",
            "train.max_steps=10",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]  # one run directory
    assert "2 processes" in (run_dir / "train.log").read_text()
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == ["5", "10"]
    translator = Translator.from_checkpoint(run_dir / "best.pt")  # loads in one process
    assert translator.translate(["red cat sleeps"])[0] is not None


def test_cli_resume_error_is_one_line(tiny_corpus_dir: Path, tmp_path: Path):
    result = run_module(
        "mtkit.train",
        *TINY_OVERRIDES,
        f"data.dir={tiny_corpus_dir}",
        f"train.resume={tmp_path / 'nope.pt'}",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=ROOT,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("mtkit-train: error:") and "nope.pt" in lines[-1]
    assert "Traceback" not in result.stderr
