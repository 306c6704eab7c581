"""``python -m mtkit.experiment NAME [overrides...]``: run one experiment of conf/experiment/.

Exit status: 0 when every run finished, 1 when a run crashed (the others still ran
and are reported), 2 for a mistake in the experiment file or the command line (one
line naming the file and key), 130/143 when SIGINT/SIGTERM stopped it (the current
run saved its last.pt; the same command continues).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mtkit.errors import ConfigError, run_cli
from mtkit.experiment.overrides import override_key
from mtkit.experiment.parallel import CHILD_FLAG
from mtkit.experiment.runner import Options, SignalGuard, StopRequested
from mtkit.experiment.spec import RESERVED_KEYS
from mtkit.runtime import prefer_passive_wait

PROG = "mtkit-experiment"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the training runs of one experiment (conf/experiment/NAME.yaml), "
        "evaluate them and write results.csv, table.md and PNG plots. Interrupted "
        "experiments continue where they stopped.",
    )
    parser.add_argument("name", metavar="NAME", help="an experiment name or a YAML file")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="training overrides for every run"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the ETA")
    parser.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="updates per run (the cap with --converge); replaces the file's budget",
    )
    parser.add_argument(
        "--converge",
        action="store_true",
        help="stop each run when its validation loss stops improving (cap: --steps or the file's)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        metavar="MINUTES",
        help="wall-clock minutes per run instead of updates (a speed comparison, not a verdict)",
    )
    parser.add_argument("--seeds", type=int, metavar="N", help="seeds per condition")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="train N runs at once, each pinned to its share of the cores "
        "(on a GPU: all share the card); default 1",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (default experiments/NAME)")
    parser.add_argument("--corpora", metavar="DIR", help="what ${corpora} stands for")
    parser.add_argument(
        "--runs",
        metavar="NAMES",
        help="comma-separated run names to train and evaluate (e.g. full-seed1,k128-seed2); "
        "default: every run. Runners started with disjoint --runs can share one folder",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: evaluate finished runs and rewrite the report",
    )
    parser.add_argument(CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_intermixed_args(argv)
    if args.budget is not None and not 0 < args.budget < math.inf:
        parser.error(f"--budget must be a finite number of minutes > 0, not {args.budget:g}")
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be an integer >= 1")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be an integer >= 1, not {args.steps}")
    if args.steps is not None and args.budget is not None:
        parser.error("give --steps (updates) or --budget (minutes), not both")
    if args.converge and args.budget is not None:
        parser.error("--converge needs an update cap (--steps), not --budget")
    if args.parallel < 1:
        parser.error(f"--parallel must be an integer >= 1, not {args.parallel}")
    return args


def options_from(args: argparse.Namespace, name: str) -> Options:
    """Options from the command line; ``hydra.run.dir=DIR`` is taken as ``--out DIR``."""
    out = args.out
    overrides = []
    for override in args.overrides:
        if "=" not in override:
            raise ConfigError(f"command line: expected key=value, got {override!r}")
        if override_key(override) == "hydra.run.dir":
            out = override.split("=", 1)[1]
        else:
            overrides.append(override)
    for override in overrides:
        key = override_key(override)
        if key in RESERVED_KEYS or key.startswith("hydra"):
            hints = {"train.max_minutes": " (use --budget)", "train.max_steps": " (use --steps)"}
            hint = hints.get(key, "")
            raise ConfigError(f"command line: '{key}' is set by the experiment runner{hint}")
    return Options(
        out=Path(out or Path("experiments") / name),
        overrides=overrides,
        steps=args.steps,
        minutes=args.budget,
        converge=args.converge,
        parallel=args.parallel,
        seeds=args.seeds,
        dry_run=args.dry_run,
        report_only=args.report_only,
        only=[n.strip() for n in args.runs.split(",") if n.strip()] if args.runs else None,
        corpora=args.corpora,
        child=args.child,
    )


def run(args: argparse.Namespace, guard: SignalGuard) -> int:
    from mtkit.experiment.load import load_spec
    from mtkit.experiment.pipeline import run_experiment

    spec = load_spec(args.name, args.corpora)
    return run_experiment(spec, options_from(args, spec.name), guard)


def main(argv: Sequence[str] | None = None) -> None:
    prefer_passive_wait()  # before torch loads; the training children inherit it
    args = parse_args(argv)
    guard = SignalGuard()
    try:
        with guard.installed():
            status = run_cli(lambda: run(args, guard), PROG)
    except StopRequested as stop:
        name = signal.Signals(stop.signum).name
        print(
            f"{PROG}: stopped by {name}; run the same command again to continue",
            file=sys.stderr,
        )
        raise SystemExit(128 + stop.signum) from None
    raise SystemExit(status)


if __name__ == "__main__":
    main()
