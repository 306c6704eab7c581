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

from mtkit.errors import CheckpointError, ConfigError, TrainingError
from mtkit.model.checkpoint import load_checkpoint
from mtkit.search.translator import Translator
from mtkit.training.trainer import fit


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
    import mtkit.model.loss as loss_module

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
    import mtkit.model.loss as loss_module

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


def test_a_trained_run_directory_is_never_replaced_silently(tiny_corpus_dir: Path, tmp_path: Path):
    fit(tiny_run(tiny_corpus_dir), tmp_path)
    before = (tmp_path / "best.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a trained model .*train\.overwrite=true"):
        fit(tiny_run(tiny_corpus_dir, max_steps=5), tmp_path)
    assert (tmp_path / "best.pt").read_bytes() == before
    # resuming into the same folder and an explicit overwrite are both allowed
    fit(tiny_run(tiny_corpus_dir, max_steps=15, resume=str(tmp_path / "last.pt")), tmp_path)
    assert read_metrics(tmp_path)[-1]["step"] == "15"
    fit(tiny_run(tiny_corpus_dir, max_steps=5, overwrite=True), tmp_path)
    assert [row["step"] for row in read_metrics(tmp_path)] == ["5"]


def test_cli_refuses_to_overwrite_in_one_line(tiny_corpus_dir: Path, tmp_path: Path):
    run_dir = tmp_path / "r"
    args = [*TINY_OVERRIDES, f"data.dir={tiny_corpus_dir}", "train.max_steps=5"]
    assert run_module("mtkit.train", *args, f"hydra.run.dir={run_dir}", cwd=ROOT).returncode == 0
    again = run_module("mtkit.train", *args, f"hydra.run.dir={run_dir}", cwd=ROOT)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("mtkit-train: error:")
    assert "already holds a trained model" in again.stderr and "Traceback" not in again.stderr


def test_step_checkpoints_are_kept_and_rotated(tiny_corpus_dir: Path, tmp_path: Path):
    fit(tiny_run(tiny_corpus_dir, max_steps=25, keep_checkpoints=3), tmp_path)
    kept = sorted(p.name for p in tmp_path.glob("step-*.pt"))
    assert kept == ["step-000015.pt", "step-000020.pt", "step-000025.pt"]
    last = load_weights(tmp_path / "last.pt")
    newest = load_checkpoint(tmp_path / "step-000025.pt")
    assert "train_state" not in newest
    assert all(torch.equal(newest["weights"][k], last[k]) for k in last)
    assert Translator.from_checkpoint(tmp_path / "step-000015.pt").translate(["red cat"])
    fit(tiny_run(tiny_corpus_dir, keep_checkpoints=0), tmp_path / "none")
    assert not list((tmp_path / "none").glob("step-*.pt"))


def test_checkpoints_get_ordinary_file_permissions(tiny_corpus_dir: Path, tmp_path: Path):
    fit(tiny_run(tiny_corpus_dir, max_steps=5), tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("best.pt", "last.pt", "metrics.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_leftovers_of_a_killed_save_are_removed(tiny_corpus_dir: Path, tmp_path: Path):
    tmp_path.mkdir(exist_ok=True)
    orphan = tmp_path / ".last.pt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    fit(tiny_run(tiny_corpus_dir, max_steps=5), tmp_path)
    assert not orphan.exists()


def test_resume_from_a_checkpoint_of_the_earlier_layout(tiny_corpus_dir: Path, tmp_path: Path):
    """last.pt files written before early stopping had its own state still resume exactly."""
    fit(tiny_run(tiny_corpus_dir, max_steps=20), tmp_path / "straight")
    fit(tiny_run(tiny_corpus_dir, max_steps=10), tmp_path / "first")
    payload = torch.load(tmp_path / "first" / "last.pt", weights_only=True)
    state = payload["train_state"]
    stopping = state.pop("early_stopping")
    state["progress"]["best_metric"] = stopping["best"]
    state["progress"]["bad_validations"] = int(stopping["bad_validations"])
    state["lr"]["bad_validations"] = state["lr"].pop("plateau")
    payload["data"]["reverse_source"] = payload["codec"]["reverse_source"]
    old = tmp_path / "old-last.pt"
    torch.save(payload, old)
    fit(tiny_run(tiny_corpus_dir, max_steps=20, resume=str(old)), tmp_path / "resumed")
    assert read_metrics(tmp_path / "resumed")[2:] == read_metrics(tmp_path / "straight")[2:]


def test_tensorboard_events_carry_the_metrics(tiny_corpus_dir: Path, tmp_path: Path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(tiny_run(tiny_corpus_dir, tensorboard=True), tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/valid", "bleu/valid", "learning_rate"} <= tags
    assert {"speed/target_tokens_per_s", "teacher_forcing_ratio"} <= tags
    assert [e.step for e in events.Scalars("loss/valid")] == [5, 10]


def _start_training(tiny_corpus_dir: Path, run_dir: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable, "-m", "mtkit.train", *TINY_OVERRIDES, f"data.dir={tiny_corpus_dir}",
            "train.max_steps=100000", "train.valid_every=100000", f"hydra.run.dir={run_dir}",
        ],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_two_quick_signals_abort_without_a_traceback(tiny_corpus_dir: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    process = _start_training(tiny_corpus_dir, run_dir, tmp_path)
    try:
        _wait_for(run_dir / "train.log", "epoch 2:", process, timeout=120)
        process.send_signal(signal.SIGINT)
        time.sleep(0.005)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "Traceback" not in stderr


def test_a_signal_during_start_up_exits_cleanly(tiny_corpus_dir: Path, tmp_path: Path):
    process = _start_training(tiny_corpus_dir, tmp_path / "run", tmp_path)
    try:
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr


def test_a_huge_validation_pair_is_warned_about_and_its_output_capped(
    tiny_corpus_dir: Path, tmp_path: Path
):
    huge = " ".join(["red cat sleeps near the big house"] * 300)  # 2,100 words
    for lang, text in (("xx", huge), ("yy", huge.upper())):
        path = tiny_corpus_dir / f"valid.{lang}"
        path.write_text(path.read_text() + text + "\n")
    run_dir = tmp_path / "run"
    fit(tiny_run(tiny_corpus_dir, max_steps=5), run_dir)
    log = (run_dir / "train.log").read_text()
    assert "valid split: 1 pair(s) longer than data.max_len=50 source pieces (pair 41)" in log
    assert "cut at 87 pieces" in log  # 1.5 * 50 + decode.max_len_b (12)
    assert read_metrics(run_dir)[-1]["step"] == "5"


def test_more_sampled_softmax_samples_than_output_columns_is_refused(
    tiny_corpus_dir: Path, tmp_path: Path
):
    run = tiny_run(tiny_corpus_dir)
    run.loss.sampled_softmax, run.loss.num_samples = True, 5000
    with pytest.raises(ConfigError, match=r"loss\.num_samples=5000 is not valid; expected fewer"):
        fit(run, tmp_path)
