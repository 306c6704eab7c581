"""The experiment runner: results, table and plots; continuing; signals; one-line errors.

One tiny experiment (2 conditions x 2 seeds, 3 training steps each on the embedded
corpus) is run once per module; the other tests work on copies of it.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, run_module

from mtkit.experiment import __main__ as cli
from mtkit.experiment.figures import length_buckets
from mtkit.experiment.load import load_spec
from mtkit.experiment.overrides import hydra_value, merge
from mtkit.experiment.report import RunResult, comparisons, mean_std
from mtkit.experiment.runner import Options, plan_runs
from mtkit.experiment.spec import DECODE_COLUMNS, TRAIN_COLUMNS

PNG = b"\x89PNG\r\n\x1a\n"
TINY = """\
description: Two cells on the embedded corpus, a few steps each.
paper:
  citation: "Nobody (2024). A test."
  claim: "Nothing to reproduce."
data: [data=synth]
budget_steps: {steps}
seeds: 2
common: [model=small, train.valid_every=2, train.log_every=1,
         train.device=cpu, train.precision=fp32, train.threads=1, train.test_at_end=true,
         decode.max_len_a=0.5, decode.max_len_b=3]
conditions:
  gru: [model.cell=gru]
  lstm: [model.cell=lstm]
length_buckets: [5, 10]
plots:
  - {{name: speed_vs_bleu, kind: scatter, x: tokens_per_s, y: test_bleu_beam5}}
"""


def write_spec(folder: Path, text: str, name: str = "tiny.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def run_main(*argv: str) -> int:
    """``python -m mtkit.experiment ARGV`` in this process; returns the exit status."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    return int(exit_info.value.code or 0)


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The session's test corpus cache, also for the training children."""
    cache = str(tmp_path_factory.getbasetemp() / "mtkit-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MTKIT_CACHE_DIR", cache)
        yield {**os.environ, "MTKIT_CACHE_DIR": cache}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory, cache_env: dict[str, str]) -> Path:
    """The finished tiny experiment's output folder."""
    root = tmp_path_factory.mktemp("experiment")
    spec = write_spec(root, TINY.format(steps=2))
    assert run_main(str(spec), "--out", str(root / "out")) == 0
    return root / "out"


def plan_statuses(printed: str) -> dict[tuple[str, str], str]:
    """(condition, seed index) -> status, from the lines of a --dry-run plan."""
    statuses = {}
    for line in printed.splitlines():
        if line.startswith("  ["):
            _, condition, _, index, status, *_ = line.split()
            statuses[(condition, index)] = status
    return statuses


def read_results(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_results_table_and_plots(experiment: Path):
    rows = read_results(experiment)
    assert list(rows[0]) == list(TRAIN_COLUMNS)
    assert sorted((r["condition"], r["seed"]) for r in rows) == [
        ("gru", "1234"),
        ("gru", "1235"),
        ("lstm", "1234"),
        ("lstm", "1235"),
    ]
    for row in rows:
        assert row["experiment"] == "tiny" and row["steps"] == "2"
        effective = row["overrides"].split()  # what the run got, not only its condition's
        assert {
            "data=synth",
            "model=small",
            "train.max_steps=2",
            f"train.seed={row['seed']}",
        } <= set(effective)
        assert f"model.cell={row['condition']}" in effective
        assert not any(o.startswith(("hydra.run.dir=", "train.resume=")) for o in effective)
        assert row["stop_reason"] == "max_steps"
        for column in ("test_bleu_greedy", "test_bleu_beam5", "chrf_beam5", "padding_pct"):
            assert 0.0 <= float(row[column]) <= 100.0, column
        assert float(row["tokens_per_s"]) > 0 and int(row["parameters"]) > 1000
    lstm = {int(r["parameters"]) for r in rows if r["condition"] == "lstm"}
    gru = {int(r["parameters"]) for r in rows if r["condition"] == "gru"}
    assert len(lstm) == len(gru) == 1 and lstm.pop() > gru.pop()  # an LSTM has 4 gates, not 3

    table = (experiment / "table.md").read_text()
    for name in ("gru", "lstm"):
        line = next(x for x in table.splitlines() if x.startswith(f"| `{name}` | 2 |"))
        assert " ± " in line
    assert "BLEU signature: `nrefs:1|" in table and "chrF signature: `nrefs:1|" in table
    assert "Budget: 2 updates per run" in table and "data=synth" in table
    differences = next(x for x in table.splitlines() if x.startswith("| `lstm` − `gru` |"))
    assert (
        "| test BLEU (beam 5) | 2 / 2 |" in differences
        and "| no direction claimed |" in differences
    )
    assert differences.endswith(" (step 2) |"), differences  # val ppl at matched updates
    assert "seed ranges" not in table and "no measurable difference" not in table
    with (experiment / "comparisons.csv").open(newline="") as handle:
        [compared] = list(csv.DictReader(handle))
    assert (compared["condition"], compared["baseline"]) == ("lstm", "gru")
    assert compared["verdict"] in ("not detected", "differs") and compared["val_ppl_steps"] == "2;2"
    p_values = [float(p) for p in compared["paired_p_values"].split(";")]
    assert compared["paired_seeds"] == "1234;1235" and all(0 < p <= 1 for p in p_values)
    hyps = sorted(p.name for p in (experiment / "hypotheses").iterdir())
    assert hyps == [
        "README.md",
        *(f"{c}-seed{k}.beam5.txt" for c in ("gru", "lstm") for k in (1, 2)),
    ]
    assert (
        "mtkit-evaluate --hyp hypotheses/lstm-seed1.beam5.txt"
        in (experiment / "hypotheses" / "README.md").read_text()
    )

    for name in ("bleu_by_length", "curves", "speed_vs_bleu"):
        data = (experiment / f"{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    run_dir = experiment / "runs" / "gru-seed1"
    for name in ("summary.json", "eval.json", "best.pt", "last.pt", "metrics.csv"):
        assert (run_dir / name).is_file(), name
    assert len((run_dir / "hyp.beam5.txt").read_text().splitlines()) == 500


def test_an_interrupted_experiment_continues(experiment: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    shutil.copytree(experiment, out)
    unfinished = out / "runs" / "lstm-seed2"
    (unfinished / "summary.json").unlink()
    (unfinished / "eval.json").unlink()
    kept = {
        path: path.stat().st_mtime_ns
        for run in ("gru-seed1", "lstm-seed1", "gru-seed2")
        for path in (out / "runs" / run / "best.pt", out / "runs" / run / "eval.json")
    }
    spec = write_spec(tmp_path, TINY.format(steps=2))

    assert run_main(str(spec), "--out", str(out), "--dry-run") == 0
    assert plan_statuses(capsys.readouterr().out) == {
        ("gru", "1"): "done",
        ("lstm", "1"): "done",
        ("gru", "2"): "done",
        ("lstm", "2"): "resume",
    }
    assert not (unfinished / "summary.json").exists()  # a dry run trains nothing

    assert run_main(str(spec), "--out", str(out)) == 0
    assert (unfinished / "summary.json").is_file() and (unfinished / "eval.json").is_file()
    assert "train.resume=" in (unfinished / "console.log").read_text()
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    assert len(read_results(out)) == 4


def test_report_only_evaluates_and_prints_no_eta(experiment: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    shutil.copytree(experiment, out)
    for name in ("summary.json", "eval.json"):
        (out / "runs" / "lstm-seed2" / name).unlink()
    (out / "runs" / "gru-seed2" / "eval.json").unlink()  # trained, not evaluated yet
    spec = write_spec(tmp_path, TINY.format(steps=2))
    assert run_main(str(spec), "--out", str(out), "--report-only") == 0
    printed = capsys.readouterr().out
    assert "ETA" not in printed and "min left" not in printed, printed
    assert "lstm seed 2: not trained yet; left out of the report" in printed
    assert "gru seed 2: trained; evaluating" in printed
    assert (out / "runs" / "gru-seed2" / "eval.json").is_file()
    assert not (out / "runs" / "lstm-seed2" / "summary.json").exists()  # nothing trained
    assert len(read_results(out)) == 3


@pytest.mark.parametrize("name", ["results.csv", "table.md", "curves.png"])
def test_report_files_that_are_no_regular_file_are_refused(
    experiment: Path, tmp_path: Path, capsys, name: str
):
    """A report file that is a named pipe is one line, and stays a pipe (never blocks)."""
    out = tmp_path / "out"
    shutil.copytree(experiment, out)
    (out / name).unlink()
    os.mkfifo(out / name)
    spec = write_spec(tmp_path, TINY.format(steps=2))
    assert run_main(str(spec), "--out", str(out), "--report-only") == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"mtkit-experiment: error: {(out / name).absolute()}: is a named pipe, not a regular "
        "file; give a file name"
    )
    assert stat.S_ISFIFO((out / name).lstat().st_mode)
    assert not list(out.glob(f".{name}.*")), "no temp file is left"


def test_runners_with_disjoint_runs_share_one_folder(experiment: Path, tmp_path: Path, capsys):
    """--runs trains only the named runs; the others are reported once finished."""
    out = tmp_path / "out"
    shutil.copytree(experiment, out)
    for name in ("lstm-seed2", "gru-seed2"):
        shutil.rmtree(out / "runs" / name)
    spec = write_spec(tmp_path, TINY.format(steps=2))

    assert run_main(str(spec), "--out", str(out), "--runs", "lstm-seed2", "--dry-run") == 0
    printed = capsys.readouterr().out
    statuses = plan_statuses(printed)
    assert statuses[("lstm", "2")] == "new" and statuses[("gru", "2")] == "skipped", statuses
    assert statuses[("gru", "1")] == "done"  # a finished run is done, whatever --runs says
    assert "1 of 4 runs to train, 1 skipped by --runs, " in printed

    assert run_main(str(spec), "--out", str(out), "--runs", "lstm-seed2") == 0
    printed = capsys.readouterr().out
    assert "gru seed 2: not in --runs and not finished" in printed
    assert (out / "runs" / "lstm-seed2" / "eval.json").is_file()
    assert not (out / "runs" / "gru-seed2").exists()
    assert sorted((r["condition"], r["seed"]) for r in read_results(out)) == [
        ("gru", "1234"),
        ("lstm", "1234"),
        ("lstm", "1235"),
    ]

    assert run_main(str(spec), "--out", str(out), "--runs", "gru-seed3", "--dry-run") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "--runs: " in error and "plans no run named 'gru-seed3'" in error


def test_dry_run_prints_the_plan_and_an_eta(tmp_path: Path, capsys, cache_env):
    spec = write_spec(tmp_path, TINY.format(steps=2))
    out = tmp_path / "out"
    assert run_main(str(spec), "--out", str(out), "--budget", "7", "--dry-run") == 0
    printed = capsys.readouterr().out
    assert set(plan_statuses(printed).values()) == {"new"} and len(plan_statuses(printed)) == 4
    assert "model.cell=lstm train.seed=1235" in printed
    estimate = next(line for line in printed.splitlines() if line.startswith("estimated time:"))
    assert "4 of 4 runs to train, 7 min (about 7 min)" in estimate and "ETA " in estimate
    assert not out.exists()  # nothing trained, nothing written


def test_update_budgets_become_the_runs_overrides(tmp_path: Path, capsys, cache_env):
    """budget_steps fixes train.max_steps; --steps, --converge and --budget replace it."""
    spec = write_spec(tmp_path, TINY.format(steps=40))
    options = Options(out=tmp_path / "out")
    loaded = load_spec(str(spec))
    overrides = plan_runs(loaded, options)[0].overrides
    assert "train.max_steps=40" in overrides and "train.max_minutes=null" in overrides
    converge = Options(out=tmp_path / "out", steps=900, converge=True)
    overrides = plan_runs(loaded, converge)[0].overrides
    assert {"train.max_steps=900", "train.early_stopping_metric=loss", "train.patience=3"} <= set(
        overrides
    )
    minutes = plan_runs(loaded, Options(out=tmp_path / "out", minutes=2.5))[0].overrides
    assert "train.max_minutes=2.5" in minutes and "train.max_steps=null" in minutes
    assert run_main(str(spec), "--steps", "7", "--budget", "3", "--dry-run") == 2
    assert "give --steps (updates) or --budget (minutes), not both" in capsys.readouterr().err
    assert run_main(str(spec), "--out", str(tmp_path / "o"), "--steps", "9", "--dry-run") == 0
    printed = capsys.readouterr().out
    assert "4 of 4 runs to train, 9 updates (about " in printed


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--parallel 2 needs two usable cores")
def test_parallel_runs_equal_the_serial_ones(experiment: Path, tmp_path: Path, cache_env):
    """--parallel 2: each run in its own pinned child runner; same results as one by one."""
    spec = write_spec(tmp_path, TINY.format(steps=2))
    out = tmp_path / "out"
    result = run_module(
        "mtkit.experiment", str(spec), "--out", str(out), "--parallel", "2", cwd=ROOT, env=cache_env
    )
    assert result.returncode == 0, result.stderr
    assert "training 4 run(s), 2 at a time" in result.stdout
    assert "[4/4 runs]" in result.stdout and "not in --runs" not in result.stdout
    serial = {(r["condition"], r["seed"]): r for r in read_results(experiment)}
    rows = read_results(out)
    assert len(rows) == 4
    for row in rows:
        same = serial[(row["condition"], row["seed"])]
        assert row["test_bleu_beam5"] == same["test_bleu_beam5"]
        assert row["steps"] == same["steps"] == "2"


def test_decode_only_experiment_reuses_a_checkpoint(experiment: Path, tmp_path: Path):
    checkpoint = experiment / "runs" / "gru-seed1" / "best.pt"
    spec = write_spec(
        tmp_path,
        f"""\
description: Beam sizes on one checkpoint.
paper: {{citation: "Nobody (2024).", claim: "None."}}
data: [data=synth]
common: [train.threads=1]
decode_only: true
checkpoint: {checkpoint}
conditions:
  beam1: [decode.beam_size=1, decode.length_norm=none]
  beam2_none: [decode.beam_size=2, decode.length_norm=none]
  beam2_gnmt: [decode.beam_size=2, decode.length_norm=gnmt]
plots:
  - {{name: beam, kind: sweep, x: decode.beam_size, series: decode.length_norm,
      y: [test_bleu, len_ratio], log_x: true}}
""",
    )
    out = tmp_path / "out"
    assert run_main(str(spec), "--out", str(out)) == 0
    rows = read_results(out)
    assert list(rows[0]) == list(DECODE_COLUMNS)
    assert [r["condition"] for r in rows] == ["beam1", "beam2_none", "beam2_gnmt"]
    assert all(0.0 <= float(r["test_bleu"]) <= 100.0 and float(r["len_ratio"]) > 0 for r in rows)
    assert not (out / "runs").exists()  # nothing was trained
    assert rows[1]["overrides"] == "decode.beam_size=2 decode.length_norm=none"  # no console.log
    with (out / "comparisons.csv").open(newline="") as handle:
        compared = list(csv.DictReader(handle))
    assert [(c["condition"], c["baseline"]) for c in compared] == [
        ("beam2_none", "beam1"),
        ("beam2_gnmt", "beam1"),
    ]
    for row in compared:  # one model: no interval, but a paired test of its two decodings
        assert row["verdict"] == "too few seeds for an interval" and row["ci_low"] == ""
        assert 0 < float(row["paired_p_values"]) <= 1 and row["val_ppl_condition"] == ""
    hyps = sorted(p.name for p in (out / "hypotheses").iterdir())
    assert hyps == ["README.md", "beam1.txt", "beam2_gnmt.txt", "beam2_none.txt"]
    assert (out / "beam.png").read_bytes().startswith(PNG)
    cached = out / "checkpoint" / "decode" / "beam2_gnmt.json"
    before = cached.stat().st_mtime_ns
    assert run_main(str(spec), "--out", str(out)) == 0
    assert cached.stat().st_mtime_ns == before  # decoded once, then read from the cache


BASE_FROM = """\
description: Beam sizes on the models of another experiment.
paper: {{citation: "Nobody (2024).", claim: "None."}}
data: [data=synth]
common: [train.threads=1]
decode_only: true
base_from: {{experiment: {source}, condition: gru}}
conditions:
  beam1: [decode.beam_size=1, decode.length_norm=none]
  beam2: [decode.beam_size=2, decode.length_norm=none]
"""


def test_base_from_decodes_the_models_another_experiment_trained(
    experiment: Path, tmp_path: Path, capsys
):
    source = write_spec(tmp_path, TINY.format(steps=2))  # its runs: <out>/../tiny
    shutil.copytree(experiment, tmp_path / "tiny")
    spec = write_spec(tmp_path, BASE_FROM.format(source=source), "beams.yaml")
    out = tmp_path / "beams"
    assert run_main(str(spec), "--out", str(out), "--dry-run") == 0
    assert "best.pt of" in capsys.readouterr().out
    assert run_main(str(spec), "--out", str(out)) == 0
    rows = read_results(out)
    assert [(r["condition"], r["seed"]) for r in rows] == [
        ("beam1", "1234"), ("beam2", "1234"), ("beam1", "1235"), ("beam2", "1235"),
    ]  # fmt: skip
    assert {r["steps"] for r in rows} == {"2"}  # the source runs' training, not a new one
    assert all("model.cell=gru" in r["overrides"] for r in rows)
    assert not list(out.rglob("*.pt"))  # nothing trained or copied here
    cached = out / "runs" / "base-seed1" / "decode" / "beam2.json"
    seed2 = out / "runs" / "base-seed2" / "decode" / "beam2.json"
    before, before2 = cached.stat().st_mtime_ns, seed2.stat().st_mtime_ns
    os.utime(tmp_path / "tiny" / "runs" / "gru-seed1" / "best.pt")  # trained further
    assert run_main(str(spec), "--out", str(out)) == 0
    assert cached.stat().st_mtime_ns != before  # a new checkpoint is decoded again
    assert seed2.stat().st_mtime_ns == before2  # the same one is read from the cache
    (tmp_path / "tiny" / "runs" / "gru-seed2" / "summary.json").unlink()
    capsys.readouterr()
    assert run_main(str(spec), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "base seed 2: waiting for" in printed and "python -m mtkit.experiment" in printed
    assert [r["seed"] for r in read_results(out)] == ["1234", "1234"]
    assert run_main(str(spec), "--out", str(out), "--seeds", "3") == 0
    printed = capsys.readouterr().out  # tiny trains 2 seeds: the hint asks for a third
    assert f"(python -m mtkit.experiment {source} --seeds 3)" in printed
    assert run_main(str(spec), "--out", str(out), "--steps", "5") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--steps: beams decodes the models" in error


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("condition: gru", "condition: rnn"), "base_from.condition: tiny has no condition 'rnn'"),
        (("data: [data=synth]", "data: [data=synth, data.max_len=20]"), "data: must be tiny's"),
        (("common:", "budget_steps: 3\ncommon:"), "base_from: its models keep the budget"),
        (("decode_only: true", "decode_only: true\nbase: [model=small]"), "give one of base,"),
        (("decode_only: true", "decode_only: false"), "belong to decode_only experiments"),
    ],
)
def test_base_from_mistakes_are_one_line_errors(tmp_path: Path, capsys, change, expected):
    source = write_spec(tmp_path, TINY.format(steps=2))
    spec = write_spec(tmp_path, BASE_FROM.format(source=source).replace(*change), "beams.yaml")
    assert run_main(str(spec), "--dry-run") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error, error


def test_base_from_names_an_experiment_that_trains(tmp_path: Path, capsys):
    spec = tmp_path / "beams.yaml"  # it names itself: a decoding-only experiment
    write_spec(tmp_path, BASE_FROM.format(source=spec), "beams.yaml")
    assert run_main(str(spec), "--dry-run") == 2
    assert "base_from.experiment: " in capsys.readouterr().err


def test_sigterm_stops_the_run_cleanly(tmp_path: Path, cache_env: dict[str, str], capsys):
    """SIGTERM: the training child saves last.pt, the runner exits 143; a rerun resumes."""
    spec = write_spec(tmp_path, TINY.format(steps=100000))
    out = tmp_path / "out"
    runner = subprocess.Popen(
        [sys.executable, "-m", "mtkit.experiment", str(spec), "--out", str(out), "--seeds", "1"],
        cwd=ROOT,
        env=cache_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = out / "runs" / "gru-seed1" / "last.pt"
    deadline = time.monotonic() + 90
    while not last.exists() and runner.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    runner.send_signal(signal.SIGTERM)
    stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 143, stderr
    assert "Traceback" not in stderr and "stopped by SIGTERM" in stderr
    assert "[1/2] tiny/gru seed 1: training (budget 100000 updates)" in stdout
    assert last.is_file() and not (last.parent / "summary.json").exists()
    assert run_main(str(spec), "--out", str(out), "--seeds", "1", "--dry-run") == 0
    assert plan_statuses(capsys.readouterr().out)[("gru", "1")] == "resume"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--parallel 2 needs two usable cores")
def test_sigterm_stops_parallel_runs_cleanly(tmp_path: Path, cache_env: dict[str, str], capsys):
    """SIGTERM to a --parallel runner: both children save last.pt and say they stopped
    (not finished); the runner exits 143; a rerun resumes both."""
    spec = write_spec(tmp_path, TINY.format(steps=100000))
    out = tmp_path / "out"
    command = [str(spec), "--out", str(out), "--seeds", "1", "--parallel", "2"]
    runner = subprocess.Popen(
        [sys.executable, "-m", "mtkit.experiment", *command],
        cwd=ROOT,
        env=cache_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lasts = [out / "runs" / f"{cell}-seed1" / "last.pt" for cell in ("gru", "lstm")]
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in lasts) and runner.poll() is None:
        assert time.monotonic() < deadline, "no last.pt from both children in 120 s"
        time.sleep(0.2)
    runner.send_signal(signal.SIGTERM)
    stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 143, stderr
    assert "Traceback" not in stdout + stderr and "stopped by SIGTERM" in stderr
    for cell in ("gru", "lstm"):
        assert f"{cell} seed 1: stopped" in stdout, stdout
    assert "finished" not in stdout and "runs]" not in stdout
    assert run_main(*command[:-2], "--dry-run") == 0
    statuses = plan_statuses(capsys.readouterr().out)
    assert statuses[("gru", "1")] == statuses[("lstm", "1")] == "resume"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("description: x\nconditions: [a, b\n", ["line 3", "invalid YAML"]),
        (
            TINY.format(steps=2).replace("[model.cell=lstm]", "[model.cel=lstm]"),
            ["conditions.lstm", "unknown config key 'model.cel'"],
        ),
    ],
    ids=["malformed-yaml", "unknown-override"],
)
def test_bad_experiment_files_are_one_line_errors(tmp_path: Path, text: str, expected, cache_env):
    spec = write_spec(tmp_path, text, "broken.yaml")
    result = run_module("mtkit.experiment", str(spec), "--dry-run", cwd=tmp_path, env=cache_env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtkit-experiment: error: broken.yaml:")
    for fragment in expected:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("seeds: 2", "seeds: 2\nbudjet_minutes: 5"), "tiny.yaml: budjet_minutes: unknown key"),
        (("seeds: 2", "seeds: 1"), "tiny.yaml: seeds: expected an integer >= 2"),
        (("paper:", "papers:"), "tiny.yaml: papers: unknown key"),
        (("[model.cell=gru]", "[train.seed=3]"), "conditions.gru: 'train.seed' is set by"),
        (("[model.cell=gru]", "[data.dir=x]"), "conditions.gru: 'data.dir' would change the test"),
        (("y: test_bleu_beam5", "y: bleu"), "plots[0].y: unknown column 'bleu'"),
        (
            ("name: speed_vs_bleu", "name: bleu_by_length_concat"),
            "plots[0].name: 'bleu_by_length_concat' is not a free file name",
        ),
        (
            ("budget_steps: 2", "budget_minutes: .nan"),
            "tiny.yaml: budget_minutes: expected a finite number >= 0.01, got nan",
        ),
        (
            ("budget_steps: 2", "budget_minutes: .inf"),
            "tiny.yaml: budget_minutes: expected a finite number >= 0.01, got inf",
        ),
        (("seeds: 2", "seeds: .inf"), "tiny.yaml: seeds: expected an integer >= 2, got inf"),
        (("seeds: 2", "seeds: .nan"), "tiny.yaml: seeds: expected an integer >= 2, got nan"),
        (("seeds: 2", "seeds: 2\nseed: -.inf"), "tiny.yaml: seed: expected an integer >= 0"),
        (("length_buckets: [5, 10]", "length_buckets: [5, .inf]"), "tiny.yaml: length_buckets"),
        (("budget_steps: 2", "seed: 1"), "tiny.yaml: budget_steps: give budget_steps (updates) or"),
        (
            ("budget_steps: 2", "budget_steps: 2\nbudget_minutes: 3"),
            "budget_steps: give budget_steps",
        ),
        (
            ("budget_steps: 2", "budget_steps: 0"),
            "tiny.yaml: budget_steps: expected an integer >= 1",
        ),
        (("budget_steps: 2", "budget_minutes: 3\nconverge: true"), "converge: needs budget_steps"),
        (("budget_steps: 2", "budget_steps: 2\npatience: 2"), "patience: belongs to converge"),
        (("[model.cell=gru]", "[train.max_steps=4]"), "'train.max_steps' is set by the experiment"),
        (
            ("seeds: 2", "seeds: 2\ncompare: [{condition: gru, baseline: lstm, expect: up}]"),
            "compare[0].expect: 'up' is not one of: higher, lower, either",
        ),
        (
            ("seeds: 2", "seeds: 2\ncompare: [{condition: gru, baseline: rnn}]"),
            "compare[0]: unknown condition 'rnn'",
        ),
        (
            ("seeds: 2", "seeds: 2\ncompare: [{condition: gru, baseline: lstm, metric: x}]"),
            "compare[0].metric: unknown column 'x'",
        ),
        (("[model.cell=gru]", "[train.lr=nan]"), "train.lr=nan is not valid"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path: Path, capsys, change, expected):
    spec = write_spec(tmp_path, TINY.format(steps=2).replace(*change))
    assert run_main(str(spec), "--dry-run") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error, error


def test_command_line_mistakes_are_one_line_errors(tmp_path: Path, capsys):
    spec = write_spec(tmp_path, TINY.format(steps=2))
    for budget in ("inf", "nan", "-inf", "0"):
        assert run_main(str(spec), f"--budget={budget}", "--dry-run") == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error == (
            f"mtkit-experiment: error: --budget must be a finite number of minutes > 0, "
            f"not {float(budget):g}"
        )
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    assert run_main(str(spec), "--out", str(blocker)) == 2
    assert capsys.readouterr().err.strip().endswith(": exists and is not a folder")
    assert blocker.read_text() == "not a folder\n"
    assert run_main(str(spec), "train.lrr=1", "--dry-run") == 2
    assert "command line: unknown config key 'train.lrr'" in capsys.readouterr().err
    assert run_main(str(spec), "train.max_minutes=3", "--dry-run") == 2
    assert "'train.max_minutes' is set by the experiment runner (use --budget)" in (
        capsys.readouterr().err
    )
    assert run_main("no_such_experiment", "--dry-run") == 2
    assert "unknown experiment 'no_such_experiment'; available: attention" in (
        capsys.readouterr().err
    )


def test_every_shipped_experiment_file_is_valid(tmp_path: Path, capsys):
    """The experiment YAMLs of conf/experiment/ load and compose (with a stand-in corpus)."""
    corpora = tmp_path / "corpora"
    names = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    assert names == [
        "attention",
        "attention_length",
        "batching",
        "beam",
        "cells",
        "input_feeding",
        "reversal",
        "sampled_softmax",
        "scheduled_sampling",
    ]
    corpora.mkdir()
    for name in names:
        spec = load_spec(name, str(corpora))
        assert spec.seeds >= 2 and spec.conditions and spec.claim
        code = run_main(name, "--corpora", str(corpora), "--out", str(tmp_path / name), "--dry-run")
        assert code == 0, capsys.readouterr().err
        assert "estimated time:" in capsys.readouterr().out


def test_length_buckets_merge_small_ones():
    lengths = [3] * 4 + [7] * 40 + [12] * 30 + [25] * 2
    buckets = length_buckets(lengths, [5, 10, 20])
    assert [label for label, _ in buckets] == ["1-10\n(n=44)", "11+\n(n=32)"]
    assert sorted(i for _, idx in buckets for i in idx) == list(range(len(lengths)))


def test_differences_get_an_interval_and_a_verdict(tmp_path: Path):
    """No compare list: each condition against the first, no direction claimed."""
    spec = load_spec(str(write_spec(tmp_path, TINY.format(steps=2))))

    def result(condition: str, score: float) -> RunResult:
        return RunResult(condition, {"test_bleu_beam5": score}, [])

    overlapping = [
        result("gru", 20.0),
        result("gru", 22.0),
        result("lstm", 21.5),
        result("lstm", 23.0),
    ]
    [found] = comparisons(spec, overlapping)
    assert (found.condition, found.baseline, found.expect) == ("lstm", "gru", 0)
    assert found.verdict == "not detected" and found.interval is not None
    # 4 ± t_{0.975, 2} · sqrt(0.5/2 + 0.5/2) = 4 ± 3.0424: excludes 0
    apart = [result("gru", 20.0), result("gru", 21.0), result("lstm", 24.0), result("lstm", 25.0)]
    [found] = comparisons(spec, apart)
    assert found.verdict == "differs" and found.difference == pytest.approx(4.0)
    assert found.interval is not None and found.interval.low == pytest.approx(0.9576, abs=1e-3)
    assert mean_std([20.0, 22.0], 1) == "21.0 ± 1.4" and mean_std([3.0], 2) == "3.00"


def test_overrides_merge_and_quote():
    assert merge(["a=1", "model=small"], ["a=2"], ["b=3"]) == ["model=small", "a=2", "b=3"]
    assert hydra_value("/tmp/run-1") == "/tmp/run-1"
    assert hydra_value("/tmp/my runs/x") == "'/tmp/my runs/x'"


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_a_run_still_trained_by_an_orphan_is_refused(tmp_path: Path):
    """A runner killed with SIGKILL leaves its child training: a new runner must not race it."""
    from mtkit.errors import MtkitError
    from mtkit.experiment.runner import PID_FILE, Run, SignalGuard, train

    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mtkit.train"])
    try:
        command_line = Path(f"/proc/{orphan.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"mtkit.train" not in command_line.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child has exec'd
        overrides = ["data=synth", "model=small", "train.max_steps=1", "train.threads=1"]
        run = Run("gru", 1, 1234, overrides, tmp_path / "gru-seed1")
        run.run_dir.mkdir()
        (run.run_dir / PID_FILE).write_text(f"{orphan.pid}\n")
        with pytest.raises(MtkitError, match=f"pid {orphan.pid}"):
            train(run, "new", SignalGuard())
    finally:
        orphan.kill()
        orphan.wait()
