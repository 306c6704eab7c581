"""Planning, running and resuming the training runs of one experiment.

Each run is ``python -m mtkit.train OVERRIDES hydra.run.dir=OUT/runs/<condition>-seed<k>``
in a child process, so a crash or a signal never takes the runner down with it. What a
run directory holds decides what happens to it:

* ``summary.json`` and ``eval.json``: done, kept as it is;
* ``summary.json`` only: trained, still to be evaluated;
* ``last.pt`` without ``summary.json``: interrupted, resumed with ``train.resume``
  (the trainer keeps its elapsed time in ``last.pt``, so the budget still holds);
* nothing: a new run.

Runs go seed by seed (every condition's first seed, then every second seed), so an
experiment stopped half way already has one run of each condition.
"""

from __future__ import annotations

import csv
import json
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import FrameType

from mtkit.cli.io import check_output, write_text
from mtkit.errors import ConfigError, MtkitError
from mtkit.experiment.budget import Budget, choose
from mtkit.experiment.overrides import hydra_value, merge, runner_overrides
from mtkit.experiment.spec import ExperimentSpec

DONE, EVALUATE, RESUME, NEW = "done", "evaluate", "resume", "new"
WAITING = "waiting"  # a base_from model its own experiment has not finished training
SKIPPED = "skipped"  # --dry-run: an unfinished run that --runs leaves to another runner
PID_FILE = "train.pid"  # the training child's process id, while it runs
# What a run trained further (a raised update budget) must not keep from its earlier end.
EXTENDED_FILES = ("summary.json", "eval.json")


class StopRequested(BaseException):
    """SIGINT/SIGTERM reached the runner; it stops after the current run has saved."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SignalGuard:
    """Forwards SIGINT/SIGTERM to the training child exactly once per signal received.

    The child runs in its own session, so a Ctrl-C in the terminal reaches only the
    runner, which passes it on: the child then finishes its step, saves ``last.pt`` and
    exits, and a second signal makes it abort at once (mtkit.train's own convention).
    Outside training (evaluation, reports) the first signal stops the runner directly.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.children: list[subprocess.Popen[bytes]] = []  # child runners of --parallel
        self.training = False

    @contextmanager
    def installed(self) -> Iterator[SignalGuard]:
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, self._handle) for s in signals}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        first = self.signum is None
        self.signum = signum
        if self.training:
            name = signal.Signals(signum).name
            for child in [self.child, *self.children]:
                if child is not None and child.poll() is None:
                    child.send_signal(signum)
            note = "saving last.pt" if first else "aborting the run without saving"
            print(f"\nmtkit-experiment: {name} received; {note}", file=sys.stderr, flush=True)
            return
        if first:
            raise StopRequested(signum)

    def attach(self, child: subprocess.Popen[bytes]) -> None:
        """Track the child; a signal that came while it was starting is passed on now."""
        self.child = child
        if self.signum is not None:
            child.send_signal(self.signum)

    def check(self) -> None:
        if self.signum is not None:
            raise StopRequested(self.signum)


@dataclass
class Options:
    """The command line's choices."""

    out: Path
    overrides: list[str] = field(default_factory=list)
    steps: int | None = None  # --steps: updates per run
    minutes: float | None = None  # --budget: wall-clock minutes per run
    converge: bool = False  # --converge: early stopping on the validation loss
    parallel: int = 1  # --parallel: runs trained at once
    seeds: int | None = None
    dry_run: bool = False
    report_only: bool = False
    only: list[str] | None = None  # run names (``<condition>-seed<k>``) to run, or all
    corpora: str | None = None  # --corpora, passed on to --parallel's child runners
    child: bool = False  # a child runner of --parallel: quiet about other runs, no report


@dataclass
class Run:
    """One training run: a condition (``base`` in decoding-only experiments) and a seed."""

    condition: str
    index: int  # k in <condition>-seed<k>, from 1
    seed: int  # train.seed
    overrides: list[str]
    run_dir: Path
    trained_in: Path | None = None  # the run of another experiment (base_from) that trains it

    @property
    def label(self) -> str:
        return f"{self.condition} seed {self.index}"

    @property
    def model_dir(self) -> Path:
        """Where the model's best.pt, summary and metrics are: here or in ``trained_in``."""
        return self.trained_in or self.run_dir


def budget_of(spec: ExperimentSpec, options: Options) -> Budget:
    """The file's budget, or the command line's ``--steps``/``--budget``/``--converge``."""
    return choose(spec.budget, options.steps, options.minutes, options.converge)


def plan_runs(spec: ExperimentSpec, options: Options) -> list[Run]:
    """Every training run, seed-major; none when a decoding-only experiment reuses a file."""
    if spec.checkpoint is not None:
        return []
    conditions = {"base": spec.base} if spec.decode_only else spec.conditions
    budget = budget_of(spec, options)
    runs = []
    for index in range(1, (options.seeds or spec.seeds) + 1):
        seed = spec.seed + index - 1
        for name, overrides in conditions.items():
            merged = merge(
                runner_defaults(),
                spec.data,
                spec.common,
                overrides,
                options.overrides,
                runner_overrides(budget.overrides(), seed),
            )
            run_dir = (options.out / "runs" / f"{name}-seed{index}").absolute()
            runs.append(Run(name, index, seed, merged, run_dir))
    return runs


def check_selection(runs: list[Run], only: list[str] | None, where: str) -> None:
    """``--runs`` names planned runs (directory names such as ``full-seed2``), or one line.

    Several runners with disjoint ``--runs`` can share one experiment folder, each training
    its own runs on its own cores; each reports every run finished so far, and a last
    ``--report-only`` reports them all.
    """
    names = [run.run_dir.name for run in runs]
    for name in only or []:
        if name not in names:
            raise ConfigError(
                f"--runs: {where} plans no run named {name!r} (planned: {', '.join(names)})"
            )


def selected(run: Run, only: list[str] | None) -> bool:
    return only is None or run.run_dir.name in only


def run_status(run: Run, evaluated: bool, budget: Budget | None = None) -> str:
    """done / evaluate / resume / new, from the files in the run directory.

    A finished run that stopped at a smaller update budget than ``budget`` now asks for
    is resumed from its ``last.pt`` (raising ``budget_steps`` or ``--steps`` continues an
    experiment instead of restarting it).
    """
    if (run.run_dir / "summary.json").is_file():
        if budget is not None and falls_short(run.run_dir, budget):
            return RESUME
        return DONE if evaluated else EVALUATE
    if (run.run_dir / "last.pt").is_file():
        return RESUME
    return NEW


def forget_evaluation(run_dir: Path) -> None:
    """What a finished run trained further must not keep: its end and its evaluations."""
    for name in EXTENDED_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "decode", ignore_errors=True)  # decoding-only experiments' cache


def falls_short(run_dir: Path, budget: Budget) -> bool:
    """A finished run stopped by an update cap below the budget's, with a last.pt to go on."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        steps, reason = int(summary["steps"]), summary.get("stop_reason")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    capped = reason == "max_steps" and budget.steps is not None and steps < budget.steps
    return capped and (run_dir / "last.pt").is_file()


def trained_so_far(run_dir: Path) -> tuple[float, int]:
    """(minutes, updates) trained so far, from the last row of metrics.csv ((0, 0) if none)."""
    try:
        with (run_dir / "metrics.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        return (float(rows[-1]["elapsed_min"]), int(rows[-1]["step"])) if rows else (0.0, 0)
    except (OSError, KeyError, ValueError):
        return 0.0, 0


def _train_keys() -> set[str]:
    from mtkit.config import TrainConfig

    return {f.name for f in fields(TrainConfig)}


def runner_defaults() -> list[str]:
    """Defaults an experiment may override: keep no step-N.pt files beside best/last.pt."""
    return ["train.keep_checkpoints=0"] if "keep_checkpoints" in _train_keys() else []


def training_command(run: Run, status: str) -> list[str]:
    """The child's command line; resume from last.pt, or start afresh (overwriting strays)."""
    command = [sys.executable, "-m", "mtkit.train", *run.overrides]
    command.append(f"hydra.run.dir={hydra_value(run.run_dir)}")
    if status == RESUME:
        command.append(f"train.resume={hydra_value(run.run_dir / 'last.pt')}")
    elif any(run.run_dir.glob("*.pt")) and "overwrite" in _train_keys():
        command.append("train.overwrite=true")  # a start killed before its first last.pt
    return command


class RunFailed(MtkitError):
    """A training child exited with an error that is not the user's (a crash)."""


def train(run: Run, status: str, guard: SignalGuard) -> None:
    """Run one training child to its end; its output goes to ``console.log`` in the run dir."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    _refuse_if_still_training(run)
    command = training_command(run, status)
    if status == RESUME and (run.run_dir / "summary.json").is_file():
        forget_evaluation(run.run_dir)  # a finished run trained further
    log_path = check_output(run.run_dir / "console.log", "")  # appended to: a regular file
    pid_path = check_output(run.run_dir / PID_FILE, "")
    with log_path.open("ab") as log:
        log.write(f"$ {shlex.join(command)}\n".encode())
        log.flush()
        guard.training = True
        try:
            child = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            write_text(pid_path, f"{child.pid}\n", "")
            guard.attach(child)
            code = child.wait()
        finally:
            guard.training, guard.child = False, None
            pid_path.unlink(missing_ok=True)
    guard.check()
    if code == 2:
        raise MtkitError(f"{run.label}: {_last_error(log_path)}")
    if code != 0 or not (run.run_dir / "summary.json").is_file():
        raise RunFailed(f"{run.label}: training exited with status {code}; see {log_path}")


def _refuse_if_still_training(run: Run) -> None:
    """A runner killed outright (SIGKILL) leaves its training child running: never race it."""
    try:
        pid = int((run.run_dir / PID_FILE).read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return  # no pid file, or that process is gone (or /proc is not there to ask)
    if b"mtkit.train" in command:
        raise MtkitError(
            f"{run.label}: an earlier training process (pid {pid}) is still writing "
            f"{run.run_dir}; wait for it or stop it (kill {pid}), then run again"
        )


def _last_error(log_path: Path) -> str:
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line for line in lines if "error:" in line]
    line = errors[-1] if errors else (lines[-1] if lines else "training failed")
    return line.split("error:", 1)[-1].strip()
