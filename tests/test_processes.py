"""``train.processes=2``: the command starts two data-parallel processes itself. They must
train what one process trains (each batch split between them, the loss weighted back to
the whole batch's mean), repeat exactly for a seed, stop together on Ctrl-C with a
resumable ``last.pt``, and end the run with one line each when one of them dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_OVERRIDES, load_weights, read_metrics

from mtkit.config import TrainConfig
from mtkit.errors import ConfigError
from mtkit.training.distributed import DistInfo, part
from mtkit.training.launch import LOST_PEER, report_errors, resolve_processes

TIMEOUT_S = 240
LINUX = sys.platform.startswith("linux")


def train(corpus: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        train_command(corpus, run_dir, *overrides), capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False, env=quiet_env(run_dir),
    )  # fmt: skip


def train_command(corpus: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "mtkit.train", *TINY_OVERRIDES, f"data.dir={corpus}",
        "model.dropout=0", f"hydra.run.dir={run_dir}", *overrides,
    ]  # fmt: skip


def quiet_env(run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "WORLD_SIZE")}
    return {**env, "MTKIT_CACHE_DIR": str(run_dir.parent / "cache")}


def test_a_batch_splits_into_alike_parts_whose_weights_restore_the_batch_mean() -> None:
    lengths = np.array([9, 8, 8, 7, 7, 7, 5])  # target tokens (EOS included) per pair
    batch = np.array([0, 1, 2, 3, 4, 5, 6])
    parts = [part(batch, lengths, DistInfo(rank, 2, rank)) for rank in (0, 1)]
    assert [p.tolist() for p, _ in parts] == [[0, 2, 4, 6], [1, 3, 5]]
    # world * n_rank / n_batch: the mean of the ranks' weighted means is the batch mean
    assert [w for _, w in parts] == pytest.approx([2 * 29 / 51, 2 * 22 / 51])
    assert sum(w for _, w in parts) == pytest.approx(2.0)
    lonely, weight = part(np.array([4]), lengths, DistInfo(1, 2, 1))
    assert lonely.tolist() == [4] and weight == 0.0  # computes, but adds nothing


@pytest.mark.parametrize(
    ("settings", "cores", "cuda", "expected"),
    [
        ({}, 2, False, 2),  # the default on a 2-core CPU
        ({}, 16, False, 2),
        ({}, 1, False, 1),
        ({}, 2, True, 1),  # device=auto finds a GPU
        ({"device": "cpu"}, 2, True, 2),
        ({"device": "cuda"}, 2, True, 1),
        ({"threads": 1}, 2, False, 1),  # pinned threads: one process
        ({"processes": 3}, 4, False, 3),
        ({"processes": 2}, 2, False, 2),  # as many as the cores
    ],
)
def test_auto_processes(settings: dict, cores: int, cuda: bool, expected: int) -> None:
    assert resolve_processes(TrainConfig(**settings), cores, cuda) == expected


@pytest.mark.parametrize("count", [3, 64])
def test_more_processes_than_cores_is_one_line_naming_the_limit(count: int) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_processes(TrainConfig(processes=count), 2, False)
    assert str(caught.value) == (
        f"train.processes={count} is not valid; expected an integer from 1 to 2 (the usable cores)"
    )


def test_other_processes_errors_show_when_rank_0_has_none_of_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "1.txt").write_text("mtkit-train: error: only process 1 saw this\n")
    report_errors(tmp_path, 2)  # rank 0 printed nothing
    assert capsys.readouterr().err == "mtkit-train: error: only process 1 saw this\n"
    (tmp_path / "0.txt").write_text(f"mtkit-train: error: process 0: {LOST_PEER}\n")
    report_errors(tmp_path, 2)
    assert "only process 1 saw this" in capsys.readouterr().err
    (tmp_path / "0.txt").write_text("mtkit-train: error: the same mistake, seen by all\n")
    report_errors(tmp_path, 2)  # rank 0 printed it; the others' copies stay quiet
    assert capsys.readouterr().err == ""


def test_two_processes_train_what_one_trains_and_repeat_exactly(
    tiny_corpus_dir: Path, tmp_path: Path
) -> None:
    steps = ["train.max_steps=10"]
    one = train(tiny_corpus_dir, tmp_path / "one", "train.threads=1", *steps)
    two = train(tiny_corpus_dir, tmp_path / "two", "train.processes=2", *steps)
    again = train(tiny_corpus_dir, tmp_path / "again", "train.processes=2", *steps)
    for result in (one, two, again):
        assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes" in two.stderr
    single, split = load_weights(tmp_path / "one/last.pt"), load_weights(tmp_path / "two/last.pt")
    for name, value in single.items():  # the same updates, summed in another order
        torch.testing.assert_close(split[name], value, atol=1e-5, rtol=1e-4, msg=name)
    repeated = load_weights(tmp_path / "again/last.pt")
    assert all(torch.equal(repeated[name], value) for name, value in split.items())
    columns = ["step", "train_loss", "val_loss"]  # the whole batch's loss is logged
    assert read_metrics(tmp_path / "two", columns) == read_metrics(tmp_path / "one", columns)


def start_training(corpus: Path, run_dir: Path) -> subprocess.Popen[str]:
    """A two-process run without end, returned once it is a few steps in."""
    command = train_command(corpus, run_dir, "train.processes=2", "train.max_steps=100000")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=quiet_env(run_dir),
    )  # fmt: skip
    wait_for_training(run_dir, process)
    return process


def wait_for_training(run_dir: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    log = run_dir / "train.log"
    while not (log.is_file() and "epoch 1:" in log.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    time.sleep(1.0)  # a few steps in


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def rank_of(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (rank,) = [entry[5:] for entry in environ if entry.startswith(b"RANK=")]
    return int(rank)


@pytest.mark.skipif(not LINUX, reason="finds the processes through /proc (Linux)")
def test_ctrl_c_stops_both_with_a_last_pt_that_resumes(
    tiny_corpus_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    process = start_training(tiny_corpus_dir, run_dir)
    started = children(process.pid)
    process.send_signal(signal.SIGINT)  # what the terminal sends to the command
    _, stderr = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "last.pt saved" in stderr and "Traceback" not in stderr
    assert not any(Path(f"/proc/{pid}").exists() for pid in started)
    stopped_at = torch.load(run_dir / "last.pt", weights_only=False)["train_state"]["progress"]
    target = stopped_at["step"] + 3
    resumed = train(
        tiny_corpus_dir, tmp_path / "resumed", "train.processes=2", f"train.max_steps={target}",
        f"train.resume={run_dir / 'last.pt'}",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {run_dir / 'last.pt'} at step {stopped_at['step']}" in resumed.stderr
    assert f"after {target} steps" in resumed.stderr


@pytest.mark.skipif(not LINUX, reason="finds the processes through /proc (Linux)")
def test_a_process_killed_ends_the_run_with_one_line_each(
    tiny_corpus_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    process = start_training(tiny_corpus_dir, run_dir)
    (second,) = [pid for pid in children(process.pid) if rank_of(pid) == 1]
    os.kill(second, signal.SIGKILL)
    _, stderr = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 128 + signal.SIGKILL
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("mtkit-train: error:")]
    assert any("training process 1 of 2 was killed by SIGKILL" in line for line in errors)
    assert any("training process 0 of 2: another process" in line for line in errors), stderr


def test_processes_under_torchrun_is_one_line(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    env = {**quiet_env(tmp_path / "run"), "WORLD_SIZE": "2", "RANK": "0"}
    result = subprocess.run(
        train_command(tiny_corpus_dir, tmp_path / "run", "train.processes=2"),
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "under torchrun leave it at 1" in result.stderr.strip().splitlines()[-1]


@pytest.mark.skipif(not LINUX, reason="finds the processes through /proc (Linux)")
def test_kill_9_of_the_command_leaves_no_process_behind(
    tiny_corpus_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    process = start_training(tiny_corpus_dir, run_dir)
    started = children(process.pid)
    assert len(started) == 2
    process.kill()
    process.communicate(timeout=TIMEOUT_S)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in started)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for its reaper counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.mark.parametrize("problem", ["trained-model", "run-file-is-a-pipe"])
def test_a_start_up_refusal_ends_every_process_with_its_one_line(
    tiny_corpus_dir: Path, tmp_path: Path, problem: str
) -> None:
    """Rank 0 refuses the run directory (after the processes joined their group, or before
    it): both processes end, with that one line and nothing from the other one."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if problem == "trained-model":
        (run_dir / "best.pt").write_bytes(b"a trained model")
        expected = f"{run_dir} already holds a trained model (best.pt)"
    else:  # found in the process itself when the run directory comes from Hydra's default
        os.mkfifo(run_dir / "train.log")
        expected = f"{run_dir / 'train.log'}: is a named pipe, not a regular file"
    command = train_command(tiny_corpus_dir, run_dir, "train.processes=2")
    if problem != "trained-model":  # past the command's own check of a hydra.run.dir it reads
        command[command.index(f"hydra.run.dir={run_dir}")] = "hydra.run.dir=${oc.env:RUN_DIR}"
    env = {**quiet_env(run_dir), "RUN_DIR": str(run_dir)}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "Traceback" in line]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith(f"mtkit-train: error: {expected}"), lines
    assert lines[-1] == errors[0] and "gloo" not in result.stderr and "frame #" not in result.stderr
