"""``train.processes=N``: data-parallel training processes that ``python -m mtkit.train``
starts itself on one machine.

Why processes rather than threads: a training step of this model is hundreds of small
operations in sequence (one recurrent step after another). Intra-op threads split each
of them, and most are too small to split well, so a second thread adds far less than a
second core could. Two processes of one thread each run whole steps side by side and
meet once per step to average their gradients (gloo, over loopback): on a 2-core CPU
that gets much closer to twice one core (docs/performance.md, "The second core").

The command that the user ran becomes a small supervisor (it computes nothing; it loads
torch only to ask whether CUDA is there when ``train.device=auto``): it starts ``N``
copies of itself with the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT`` on a free loopback port) plus ``MTKIT_PROCESSES``, so
each copy trains through the same distributed code as under ``torchrun``; only the
batches differ (:func:`mtkit.training.distributed.part`). The supervisor forwards Ctrl-C and
SIGTERM to every copy exactly once (the copies have their own process group, so the
terminal does not signal them a second time), stops the others when one fails, and
exits with the status of the first that failed. A copy dies with the supervisor (Linux:
``PR_SET_PDEATHSIG``), so none is left behind by ``kill -9``. A one-line error is printed
by rank 0 only (the others would repeat it); the supervisor prints another process's
error when rank 0 has none of its own (:func:`report_errors`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from mtkit.config import TrainConfig
from mtkit.runtime import check_process_count, own_group_and_die_with_parent

ENV_PROCESSES = "MTKIT_PROCESSES"
"""Set in the processes :func:`run_processes` starts: the number of them."""
ENV_ERRORS = "MTKIT_PROCESS_ERRORS"
"""A folder where each started process leaves its one-line error (``RANK.txt``)."""
LOST_PEER = "another process of this run stopped"
"""What rank 0's error says when it failed only because another process did."""

PEER_NOTICE_S = 10.0  # after one process failed: time for the others to notice and stop
STOP_GRACE_S = 20.0  # then how long they get to stop on SIGTERM before SIGKILL


def started_here() -> int:
    """The number of processes when this one was started by :func:`run_processes`, else 0."""
    value = os.environ.get(ENV_PROCESSES, "")
    return int(value) if value.isdigit() else 0


def resolve_processes(train: TrainConfig, cores: int, cuda_available: bool) -> int:
    """The number of training processes for ``train.processes``.

    ``auto`` gives 2 on a CPU with at least 2 cores when ``train.threads`` is ``auto``
    (two processes use a second core better than a second thread does: see the module
    docstring), and 1 on a GPU, on one core, under torchrun, or when the threads are
    pinned.
    With more than 2 cores each of the 2 processes gets ``cores // 2`` threads.
    A number is at most ``cores`` (:func:`mtkit.runtime.check_process_count`): more
    processes than cores only take turns, each with a model and an optimizer in memory.
    """
    if train.processes != "auto":
        return check_process_count("train.processes", train.processes, cores)
    on_cpu = train.device == "cpu" or (train.device == "auto" and not cuda_available)
    if not on_cpu or cores < 2 or train.threads != "auto" or under_torchrun():
        return 1
    return 2


def speaks() -> bool:
    """Whether this process prints its messages: not a process that :func:`run_processes`
    started other than rank 0 (rank 0 and the supervisor speak for the run)."""
    return not started_here() or os.environ.get("RANK", "0") == "0"


def record_error(line: str) -> bool:
    """Leave ``line`` for the supervisor when this process was started by it; returns
    whether this process should print it too (only rank 0 does: the others would repeat
    rank 0's error, and the supervisor prints theirs when rank 0 has none of its own)."""
    folder = os.environ.get(ENV_ERRORS)
    if not started_here() or not folder:
        return True
    rank = os.environ.get("RANK", "0")
    with contextlib.suppress(OSError):
        (Path(folder) / f"{rank}.txt").write_text(line + "\n", encoding="utf-8")
    return speaks()


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher) started this process, not mtkit itself."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not started_here()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (the processes meet there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_environment(
    rank: int, count: int, port: int, threads: int, errors: Path
) -> dict[str, str]:
    """The environment of process ``rank`` of ``count``: torchrun's variables, ours, and
    ``threads`` intra-op threads unless the user set ``OMP_NUM_THREADS``."""
    env = dict(os.environ)
    env[ENV_ERRORS] = str(errors)
    env.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(count),
        LOCAL_WORLD_SIZE=str(count), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    env[ENV_PROCESSES] = str(count)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def start(
    rank: int, count: int, port: int, threads: int, argv: Sequence[str], errors: Path
) -> subprocess.Popen:
    """Start process ``rank``: ``python -m mtkit.train`` with the same arguments."""
    parent = os.getpid()
    return subprocess.Popen(
        [sys.executable, "-m", "mtkit.train", *argv],
        env=child_environment(rank, count, port, threads, errors),
        preexec_fn=lambda: own_group_and_die_with_parent(parent),
    )


def run_processes(count: int, argv: Sequence[str], cores: int) -> int:
    """Train with ``count`` processes of ``max(1, cores // count)`` threads each; returns
    the exit status for the command (0, or that of the first process that failed)."""
    port, threads = free_port(), max(1, cores // count)
    supervisor = Supervisor()
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, supervisor.forward) for number in stops}
    with tempfile.TemporaryDirectory(prefix="mtkit-errors-") as folder:
        errors = Path(folder)
        try:
            supervisor.children.extend(
                start(rank, count, port, threads, argv, errors) for rank in range(count)
            )
            status = supervisor.wait()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            supervisor.stop()
        report_errors(errors, count)
    return status


def report_errors(folder: Path, count: int) -> None:
    """Print the other processes' one-line errors when rank 0 printed none of its own
    (it printed none, or only that another process stopped)."""
    first = folder / "0.txt"
    if first.is_file() and LOST_PEER not in first.read_text(encoding="utf-8"):
        return
    for rank in range(1, count):
        path = folder / f"{rank}.txt"
        if path.is_file():
            print(path.read_text(encoding="utf-8").rstrip("\n"), file=sys.stderr)


class Supervisor:
    """The started processes: signals forwarded once, the others stopped after a failure."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []
        self.signalled = False  # a stop signal was forwarded: every process is stopping

    def forward(self, number: int, _frame: FrameType | None) -> None:
        """Signal handler: pass SIGINT/SIGTERM on to every process still running."""
        self.signalled = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(number)

    def wait(self) -> int:
        """Wait for every process. The first failure (not one that a forwarded signal
        caused) stops the others: killed at once when rank 0 failed (it printed the
        error, and the others write nothing; one may be waiting to join rank 0's group,
        in C++, where no signal handler runs), else after they had time to notice by
        themselves. The status is rank 0's after a signal, else the first failure's,
        else 0."""
        running, failure = list(self.children), 0
        while running:
            time.sleep(0.1)
            for child in [c for c in running if c.poll() is not None]:
                running.remove(child)
                code = _exit_status(child.returncode)
                if code and not failure and not self.signalled:
                    failure = code
                    rank = self.children.index(child)
                    self._report(rank, child.returncode)
                    if rank == 0:
                        self.kill()
                    else:
                        self.stop(after=PEER_NOTICE_S)
        return _exit_status(self.children[0].returncode) if self.signalled else failure

    def _report(self, rank: int, code: int) -> None:
        """One line for a process killed by a signal (the processes print their own errors)."""
        if code < 0:
            name = signal.Signals(-code).name
            print(
                f"mtkit-train: error: training process {rank} of {len(self.children)} was "
                f"killed by {name}; the run stopped",
                file=sys.stderr,
            )

    def kill(self) -> None:
        """Kill the processes still running (they print nothing more)."""
        for child in self.children:
            if child.poll() is None:
                child.kill()
        for child in self.children:
            child.wait()

    def stop(self, after: float = 0.0) -> None:
        """Give the processes still running ``after`` seconds to end by themselves (a
        process notices at its next collective that another one is gone), then ask them
        to stop (SIGTERM), then kill those that do not."""
        deadline = time.monotonic() + after
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _exit_status(returncode: int | None) -> int:
    """A shell's exit status for a child's return code (128 + N when killed by signal N)."""
    if returncode is None:
        return 0
    return 128 - returncode if returncode < 0 else returncode
