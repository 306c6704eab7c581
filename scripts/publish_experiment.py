#!/usr/bin/env python
"""Copy an experiment's report into the manual: ``experiments/NAME`` -> ``docs/experiments/NAME``.

Usage::

    python scripts/publish_experiment.py NAME [--partial] [--dry-run]
    python scripts/experiment_summary.py --write docs/experiments.md   # then the summary

What the runner writes beside its ``runs/`` is the report: ``results.csv``,
``comparisons.csv``, ``table.md``, ``bleu_by_length*.csv``, the plots and ``hypotheses/``
(one test output per run). This copies exactly that, so the committed pages show what one
command made, and removes from the manual's folder the report files the runner no longer
writes (a renamed plot, the hypotheses of a condition that is gone), naming each. The run
folders (checkpoints, logs) and a length-split corpus (``data/``) stay behind.

It refuses an unfinished experiment, one whose ``results.csv`` lacks a run of the file's
conditions and seeds, unless ``--partial`` says that is meant (the page must then say
which runs it has).
"""

from __future__ import annotations

import argparse
import csv
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import DataError, run_cli
from mtkit.experiment.load import load_spec
from mtkit.experiment.spec import ExperimentSpec

ROOT = Path(__file__).resolve().parent.parent
REPORT_SUFFIXES = (".csv", ".md", ".png")  # what the runner writes at the top of its folder
HYPOTHESES = "hypotheses"


@dataclass
class Plan:
    """What publishing does: files to copy (source -> destination) and files to remove."""

    copies: list[tuple[Path, Path]]
    removals: list[Path]


def missing_runs(spec: ExperimentSpec, results: Path) -> list[str]:
    """The ``<condition> seed <k>`` runs of the file (its conditions x seeds) without a row."""
    if not results.is_file():
        raise DataError(f"{results}: not found (run: python -m mtkit.experiment {spec.name})")
    with results.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"condition", "seed"} <= set(reader.fieldnames or ()):
            raise DataError(f"{results}: expected a results.csv with condition and seed columns")
        present = {(row["condition"], row["seed"]) for row in reader}
    return [
        f"{condition} seed {k + 1}"
        for condition in spec.conditions
        for k in range(spec.seeds)
        if (condition, str(spec.seed + k)) not in present
    ]


def report_files(folder: Path) -> list[Path]:
    """The report in ``folder``, relative to it: top-level report files and hypotheses/."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix in REPORT_SUFFIXES]
    hypotheses = folder / HYPOTHESES
    if hypotheses.is_dir():
        found += [p for p in hypotheses.iterdir() if p.is_file()]
    return sorted(p.relative_to(folder) for p in found)


def plan(source: Path, target: Path) -> Plan:
    """Copy every report file of ``source``; remove ``target``'s report files it lacks."""
    wanted = report_files(source)
    copies = [(source / name, target / name) for name in wanted]
    removals = [target / name for name in sorted(set(report_files(target)) - set(wanted))]
    return Plan(copies, removals)


def apply(work: Plan) -> None:
    for path in work.removals:
        path.unlink()
    for source, target in work.copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    add = parser.add_argument
    add("name", help="the experiment (conf/experiment/NAME.yaml)")
    add("--source", type=Path, default=Path("experiments"), help="the runner's folders")
    add("--target", type=Path, default=ROOT / "docs" / "experiments", help="the manual's")
    add("--partial", action="store_true", help="publish although runs have no results yet")
    add("--dry-run", action="store_true", help="say what would change, change nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    spec = load_spec(args.name, follow=False)
    source, target = args.source / spec.name, args.target / spec.name
    missing = missing_runs(spec, source / "results.csv")
    if missing and not args.partial:
        raise DataError(
            f"{source / 'results.csv'}: {len(missing)} run(s) of {spec.name} have no row "
            f"({', '.join(missing)}); finish them (python -m mtkit.experiment {spec.name}) "
            "or give --partial"
        )
    work = plan(source, target)
    for path in work.removals:
        print(f"remove {path}")
    print(f"copy {len(work.copies)} file(s) from {source} to {target}")
    if missing:
        print(f"partial: no results for {', '.join(missing)}")
    if args.dry_run:
        print("dry run: nothing changed")
        return
    apply(work)
    print("next: python scripts/experiment_summary.py --write docs/experiments.md")


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "publish_experiment"))
