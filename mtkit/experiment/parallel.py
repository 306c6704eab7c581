"""``--parallel N``: train N runs of an experiment at once, each on its own share of the machine.

A run is a child runner (``python -m mtkit.experiment ... --runs NAME``) that trains and
evaluates that one run, so everything a single runner guarantees (resume, clean stops,
one-line errors, cached evaluations) holds for each. The parent keeps N children alive,
hands each a slot, and writes the report once all have finished.

On a CPU each slot is a disjoint set of cores (the usable cores split N ways) that the
child is pinned to, with as many training threads: two runs on two cores then never
fight over one. On a GPU every child shares the one card and no pinning happens; a small
model leaves the card mostly idle, so several runs at once use it better.

Pinning rather than sharing matters for the figures: a run's tokens/s is measured on its
own cores. Concurrent runs still share memory bandwidth, so their speeds are lower than
a lone run's; the report says how many ran at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mtkit.config import RunConfig
from mtkit.errors import ConfigError
from mtkit.experiment import progress
from mtkit.experiment.overrides import override_key
from mtkit.experiment.runner import DONE, WAITING, Options, Run, SignalGuard, selected
from mtkit.experiment.spec import ExperimentSpec
from mtkit.runtime import usable_cpus

CHILD_FLAG = "--child"  # hidden: a runner started by this module (no report, quiet)
STOPPED = (130, 143)  # a child runner stopped by SIGINT / SIGTERM (last.pt saved)


@dataclass
class Slot:
    """Where one child runs: the cores it is pinned to (None: not pinned, a GPU)."""

    index: int
    cores: list[int] | None

    @property
    def threads(self) -> int | None:
        return len(self.cores) if self.cores else None


def slots(count: int, on_gpu: bool) -> list[Slot]:
    """``count`` slots: disjoint equal core sets on a CPU, unpinned slots on a GPU."""
    if count < 1:
        raise ConfigError(f"--parallel: expected an integer >= 1, got {count}")
    if on_gpu:
        return [Slot(k, None) for k in range(count)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = cores or list(range(usable_cpus()))
    if count > len(cores):
        raise ConfigError(
            f"--parallel {count}: this process may use {len(cores)} core(s); "
            f"give at most {len(cores)} (each run needs a core of its own)"
        )
    share = len(cores) // count
    return [Slot(k, cores[k * share : (k + 1) * share]) for k in range(count)]


def child_command(base: Sequence[str], run: Run, slot: Slot, user_threads: bool) -> list[str]:
    """The child runner's command: the parent's own arguments, one run, the slot's threads."""
    command = [sys.executable, "-m", "mtkit.experiment", *base, "--runs", run.run_dir.name]
    command.append(CHILD_FLAG)
    if slot.threads is not None and not user_threads:
        command += [f"train.threads={slot.threads}", "train.processes=1"]
    return command


def _pin(cores: list[int] | None) -> None:
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)


def _copy_lines(stream: IO[bytes], lock: threading.Lock) -> None:
    """A child's progress lines, passed on whole (never interleaved mid-line)."""
    for raw in iter(stream.readline, b""):
        with lock:
            sys.stdout.write(raw.decode("utf-8", "replace"))
            sys.stdout.flush()


@dataclass
class _Child:
    run: Run
    slot: Slot
    process: subprocess.Popen[bytes]
    reader: threading.Thread


def run_all(
    runs: Sequence[Run],
    statuses: Sequence[str],
    base: Sequence[str],
    pool: list[Slot],
    user_threads: bool,
    guard: SignalGuard,
    minutes_per_run: float,
) -> list[str]:
    """Train and evaluate every run not done, at most ``len(pool)`` at once; the failures."""
    queue = [r for r, status in zip(runs, statuses, strict=True) if status not in (DONE, WAITING)]
    free, alive, failures = list(pool), list[_Child](), list[str]()
    lock = threading.Lock()
    total, finished = len(queue), 0
    print(f"training {total} run(s), {len(pool)} at a time", flush=True)
    guard.training = True  # signals are forwarded to the children, not raised here
    try:
        while queue or alive:
            while queue and free and guard.signum is None:
                alive.append(_start(queue.pop(0), free.pop(0), base, user_threads, lock))
            guard.children = [child.process for child in alive]
            time.sleep(0.2)
            for child in [c for c in alive if c.process.poll() is not None]:
                alive.remove(child)
                child.reader.join()
                free.append(child.slot)
                code = child.process.returncode
                if code in STOPPED:
                    print(f"{child.run.label}: stopped", flush=True)
                    continue
                finished += 1
                if code != 0:
                    failures.append(f"{child.run.label}: its runner exited with status {code}")
                left = minutes_per_run * (len(queue) + len(alive)) / len(pool)
                outcome = "finished" if code == 0 else f"failed (status {code})"
                print(
                    f"[{finished}/{total} runs] {child.run.label} {outcome}; {progress.eta(left)}",
                    flush=True,
                )
            if guard.signum is not None and not alive:
                break
    finally:
        guard.training, guard.children = False, []
    guard.check()
    return failures


def _start(
    run: Run, slot: Slot, base: Sequence[str], user_threads: bool, lock: threading.Lock
) -> _Child:
    command = child_command(base, run, slot, user_threads)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C reaches the parent, which passes it on once
        preexec_fn=lambda: _pin(slot.cores),
        cwd=Path.cwd(),
    )
    assert process.stdout is not None
    reader = threading.Thread(target=_copy_lines, args=(process.stdout, lock), daemon=True)
    reader.start()
    return _Child(run, slot, process, reader)


def train_in_parallel(
    spec: ExperimentSpec,
    options: Options,
    guard: SignalGuard,
    runs: list[Run],
    statuses: list[str],
    shared: RunConfig,
    per_run: float,
) -> list[str]:
    """``--parallel N``: child runners, one per run, N at a time; the failures.

    ``per_run``: the minutes one run should take, for the ETA lines.
    """
    on_gpu = shared.train.device.startswith("cuda") or (
        shared.train.device == "auto" and cuda_available()
    )
    pool = slots(options.parallel, on_gpu)
    user_threads = any(override_key(o) == "train.threads" for o in options.overrides)
    todo = [s if selected(r, options.only) else DONE for r, s in zip(runs, statuses, strict=True)]
    return run_all(runs, todo, child_arguments(spec, options), pool, user_threads, guard, per_run)


def child_arguments(spec: ExperimentSpec, options: Options) -> list[str]:
    """The parent's command line as a child runner gets it (without --parallel and --runs)."""
    found = [str(spec.path.absolute()), *options.overrides, "--out", str(options.out.absolute())]
    if options.steps is not None:
        found += ["--steps", str(options.steps)]
    if options.minutes is not None:
        found += ["--budget", f"{options.minutes:g}"]
    if options.converge:
        found.append("--converge")
    if options.seeds is not None:
        found += ["--seeds", str(options.seeds)]
    if options.corpora is not None:
        found += ["--corpora", options.corpora]
    return found


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
