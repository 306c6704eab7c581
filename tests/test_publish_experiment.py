"""scripts/publish_experiment.py: the report is copied, stale report files removed, runs left.

A fake experiment of 2 conditions x 2 seeds; its runner folder holds the report, a run
folder and a length-split corpus; the manual's folder holds an older report with a plot
and a hypothesis file the runner no longer writes, and a note of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_script

SPEC = """\
description: A fake experiment to publish.
paper: {citation: "Someone (2020).", claim: "b beats a."}
data: [data=synth]
budget_steps: 10
seeds: 2
conditions:
  a: [model.attention=none]
  b: [model.attention=bahdanau]
"""
HEADER = "experiment,condition,seed,steps,test_bleu_beam5\n"
ROWS = ["fake,a,1234,10,1.0\n", "fake,a,1235,10,2.0\n", "fake,b,1234,10,3.0\n"]


publish = load_script("publish_experiment")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(the spec file, the runner's experiments folder, the manual's experiments folder)."""
    spec = tmp_path / "fake.yaml"
    write(spec, SPEC)
    runner = tmp_path / "experiments"
    report = runner / "fake"
    write(report / "results.csv", HEADER + "".join(ROWS) + "fake,b,1235,10,4.0\n")
    write(report / "table.md", "# new table\n")
    write(report / "curves.png", "new curves")
    for run in ("a-seed1", "a-seed2", "b-seed1", "b-seed2"):
        write(report / "hypotheses" / f"{run}.beam5.txt", f"{run} output\n")
        write(report / "runs" / run / "best.pt", "weights")
    write(report / "data" / "length-split" / "train.de", "a corpus\n")
    manual = tmp_path / "docs"
    old = manual / "fake"
    write(old / "results.csv", HEADER + ROWS[0])
    write(old / "beam.png", "a plot the runner no longer draws")
    write(old / "hypotheses" / "c-seed1.beam5.txt", "a condition that is gone\n")
    write(old / "notes.txt", "the page's own note\n")
    return spec, runner, manual


def run(spec: Path, runner: Path, manual: Path, *flags: str) -> None:
    publish.main([str(spec), "--source", str(runner), "--target", str(manual), *flags])


def test_copies_the_report_and_removes_stale_report_files(folders, capsys):
    spec, runner, manual = folders
    run(spec, runner, manual)
    published = sorted(
        str(p.relative_to(manual / "fake")) for p in manual.rglob("*") if p.is_file()
    )
    assert published == [
        "curves.png",
        "hypotheses/a-seed1.beam5.txt",
        "hypotheses/a-seed2.beam5.txt",
        "hypotheses/b-seed1.beam5.txt",
        "hypotheses/b-seed2.beam5.txt",
        "notes.txt",  # not a file the runner writes: kept
        "results.csv",
        "table.md",
    ]
    assert (manual / "fake" / "results.csv").read_text() == (
        runner / "fake" / "results.csv"
    ).read_text()
    printed = capsys.readouterr().out
    assert f"remove {manual / 'fake' / 'beam.png'}" in printed
    assert f"remove {manual / 'fake' / 'hypotheses' / 'c-seed1.beam5.txt'}" in printed
    assert "copy 7 file(s)" in printed


def test_an_unfinished_experiment_is_refused_in_one_line(folders, capsys):
    spec, runner, manual = folders
    write(runner / "fake" / "results.csv", HEADER + "".join(ROWS))
    before = (manual / "fake" / "results.csv").read_text()
    with pytest.raises(SystemExit) as stopped:
        publish.run_cli(lambda: run(spec, runner, manual), "publish_experiment")
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "1 run(s) of fake have no row (b seed 2)" in error and "--partial" in error
    assert (manual / "fake" / "results.csv").read_text() == before  # nothing changed


def test_partial_publishes_and_names_the_missing_runs(folders, capsys):
    spec, runner, manual = folders
    write(runner / "fake" / "results.csv", HEADER + "".join(ROWS))
    run(spec, runner, manual, "--partial")
    assert "partial: no results for b seed 2" in capsys.readouterr().out
    assert (manual / "fake" / "results.csv").read_text() == HEADER + "".join(ROWS)


def test_dry_run_changes_nothing(folders, capsys):
    spec, runner, manual = folders
    before = {p: p.read_bytes() for p in manual.rglob("*") if p.is_file()}
    run(spec, runner, manual, "--dry-run")
    assert {p: p.read_bytes() for p in manual.rglob("*") if p.is_file()} == before
    assert "remove" in capsys.readouterr().out


def test_no_results_is_one_line(tmp_path: Path, capsys):
    spec = tmp_path / "fake.yaml"
    write(spec, SPEC)
    with pytest.raises(SystemExit):
        publish.run_cli(
            lambda: run(spec, tmp_path / "none", tmp_path / "docs"), "publish_experiment"
        )
    assert (
        "results.csv: not found (run: python -m mtkit.experiment fake)" in capsys.readouterr().err
    )
