"""The experiment report's statistics on numbers with known answers: Welch's interval and
the verdict, paired tests, val ppl at matched updates, effective overrides, comparisons.csv."""

from __future__ import annotations

import csv
import io
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mtkit.experiment import differences, hypotheses
from mtkit.experiment.report import effective_overrides
from mtkit.experiment.spec import Comparison, ExperimentSpec
from mtkit.experiment.statistics import (
    DIFFERS,
    NOT_DETECTED,
    TOO_FEW,
    compare,
    judge,
    matched_val_ppl,
    paired_p_values,
    read_metrics,
)

REFERENCES = ["the cat sat on the mat", "a dog runs in the park", "hello world", "it is a test"]
WORSE = ["the cat sat on a mat", "a dog walks in a park", "hello world", "it is test"]


@dataclass
class FakeRun:
    """A run as the comparisons read it (RunResult's fields)."""

    row: dict[str, Any]
    hypotheses: list[str] = field(default_factory=list)
    run_dir: Path | None = None
    name: str = ""


def spec_for(corpora: str = "/data/corpora", decode_only: bool = False) -> ExperimentSpec:
    return ExperimentSpec(
        name="tiny",
        path=Path("tiny.yaml"),
        description="d",
        citation="c",
        claim="p",
        data=["data=synth"],
        data_display=["data=synth"],
        conditions={"a": ["model.cell=gru"], "b": ["model.cell=lstm"]},
        corpora=corpora,
        decode_only=decode_only,
    )


def test_welch_interval_by_hand_and_the_three_verdicts():
    """baseline 10, 11, 12; condition 14, 15, 16: difference 4, se = sqrt(1/3 + 1/3) = 0.8165,
    df = (2/3)² / (2 · (1/3)² / 2) = 4, t_{0.975, 4} = 2.7764 -> 4 ± 2.2670."""
    interval, said = judge([10, 11, 12], [14, 15, 16], +1)
    assert interval is not None and said == "reproduced"
    assert interval.difference == pytest.approx(4.0)  # condition − baseline, not the reverse
    assert interval.df == pytest.approx(4.0)
    assert (interval.low, interval.high) == pytest.approx((1.7330, 6.2670), abs=1e-3)
    assert judge([10, 11, 12], [14, 15, 16], -1)[1] == "contradicted"
    assert judge([14, 15, 16], [10, 11, 12], -1)[1] == "reproduced"
    assert judge([10, 11, 12], [14, 15, 16], 0)[1] == DIFFERS
    # 1..5 against 2, 4, .., 10: 3 ± 3.8877 (R: t.test) holds 0 whatever the paper said
    for expect in (1, -1, 0):
        interval, said = judge([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], expect)
        assert said == NOT_DETECTED and interval is not None
        assert interval.half_width == pytest.approx(3.8877, abs=1e-3)
    assert judge([20.0], [21.0, 22.0], 1) == (None, TOO_FEW)


def test_the_verdict_words_never_claim_equality():
    runs = (
        [FakeRun({"seed": s, "bleu": 2.0 * s}) for s in range(1, 6)],
        [FakeRun({"seed": s, "bleu": float(s)}) for s in range(1, 6)],
    )
    missed = compare("x", Comparison("b", "a", 1), "bleu", runs, [])
    assert missed is not None
    assert differences.verdict_text(missed) == (
        "not detected (this design detects differences above ±3.89)"
    )
    one = compare("x", Comparison("b", "a", 1), "bleu", (runs[0][:1], runs[1]), [])
    assert one is not None and differences.verdict_text(one) == "too few seeds for an interval"
    assert one.sd_condition is None and one.interval is None
    text = "\n".join(differences.difference_table([missed, one], {}, True)).lower()
    for word in ("no difference", "similar", " win"):
        assert word not in text


def test_paired_tests_tell_a_better_system_from_the_same_one():
    references = REFERENCES * 15
    worse = WORSE * 15
    name, (better, same) = paired_p_values(
        [(worse, references), (worse, worse)], references, samples=200
    )
    assert name == "BLEU"
    assert better < 0.05 and same == 1.0
    assert paired_p_values([(worse, references)], references, "chrf", 200)[0] == "chrF2"
    # other outputs, the same score (BLEU 0: nothing matches): no observed difference, p = 1
    nothing, other = ["zz qq"] * 60, ["yy ww xx"] * 60
    assert paired_p_values([(nothing, other)], references, samples=200)[1] == [1.0]


def write_metrics(folder: Path, rows: list[tuple[int, str]]) -> Path:
    folder.mkdir(parents=True)
    lines = ["step,val_loss,val_ppl,val_bleu"] + [f"{s},1.0,{p},3.0" for s, p in rows]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_val_ppl_at_matched_updates(tmp_path: Path):
    """The largest step both runs logged a val_ppl at: 200 (300 has no value on one side)."""
    a = write_metrics(tmp_path / "a", [(100, "50.0"), (200, "30.0"), (300, ""), (400, "20.0")])
    b = write_metrics(tmp_path / "b", [(100, "60.0"), (200, "40.0"), (250, "35.0"), (300, "33")])
    assert matched_val_ppl(read_metrics(a), read_metrics(b)) == (200, 30.0, 40.0)
    assert matched_val_ppl(read_metrics(a), read_metrics(tmp_path / "none")) is None


def test_effective_overrides_come_from_the_last_command(tmp_path: Path):
    spec = spec_for("/data/corpora")
    command = ["/usr/bin/python3", "-m", "mtkit.train", "data.dir=/data/corpora/m30k"]
    first = [*command, "model.cell=gru", "train.max_steps=400", "hydra.run.dir=/out/runs/a"]
    last = [*first[:5], "train.max_steps=800", "train.seed=1234", "hydra.run.dir=/out/my runs/a"]
    last += ["train.resume=/out/runs/a-seed1/last.pt", "train.overwrite=true"]
    log = f"$ {shlex.join(first)}\nstep 1 loss 3.2\n$ {shlex.join(last)}\nstep 2 loss 3.1\n"
    (tmp_path / "console.log").write_text(log, encoding="utf-8")
    assert effective_overrides(spec, tmp_path) == [
        "data.dir=${corpora}/m30k",
        "model.cell=gru",
        "train.max_steps=800",
        "train.seed=1234",
    ]
    assert effective_overrides(spec, tmp_path / "no-such-run") is None
    assert effective_overrides(spec, None) is None


def test_comparisons_csv_columns_and_values(tmp_path: Path):
    """Two seeds a side; seed 1235 of the condition has no hypotheses: one paired test."""
    references = REFERENCES * 15
    dirs = {
        (side, seed): write_metrics(tmp_path / f"{side}{seed}", [(100, ppl), (200, ppl)])
        for side, ppl in (("a", "40"), ("b", "30"))
        for seed in (1234, 1235)
    }

    def run(side: str, seed: int, score: float, hyps: list[str]) -> FakeRun:
        row = {"seed": seed, "test_bleu_beam5": score}
        return FakeRun(row, hyps, dirs[side, seed], f"{side}-seed{seed - 1233}")

    baseline = [run("a", 1234, 20.0, WORSE * 15), run("a", 1235, 21.0, WORSE * 15)]
    condition = [run("b", 1234, 24.0, references), run("b", 1235, 25.0, [])]
    pair, runs = Comparison("b", "a", 1), (condition, baseline)
    found = compare("tiny", pair, "test_bleu_beam5", runs, references, samples=200)
    assert found is not None and found.paired_runs == [("b-seed1", "a-seed1")]
    [row] = list(csv.DictReader(io.StringIO(differences.comparisons_csv([found]))))
    assert tuple(row) == differences.COLUMNS
    # 4 ± t_{0.975, 2} · sqrt(0.5/2 + 0.5/2) = 4 ± 4.3027 · 0.7071 = 4 ± 3.0424
    assert row["experiment"] == "tiny" and row["condition"] == "b" and row["baseline"] == "a"
    assert (row["n_condition"], row["n_baseline"], row["expect"]) == ("2", "2", "1")
    assert (row["mean_condition"], row["sd_condition"]) == ("24.5000", "0.7071")
    assert (row["difference"], row["verdict"]) == ("4.0000", "reproduced")
    assert float(row["ci_low"]) == pytest.approx(0.9576, abs=1e-3)
    assert float(row["detectable"]) == pytest.approx(3.0424, abs=1e-3)
    assert row["paired_metric"] == "BLEU" and row["paired_seeds"] == "1234"
    assert float(row["paired_p_values"]) < 0.05
    assert (row["val_ppl_condition"], row["val_ppl_baseline"]) == ("30.0000", "40.0000")
    assert row["val_ppl_steps"] == "200;200"
    table = differences.difference_table([found], {"test_bleu_beam5": "test BLEU (beam 5)"}, True)
    assert table[2].startswith("| `b` − `a` | test BLEU (beam 5) | 2 / 2 | 24.50 ± 0.71 |")
    assert "| +4.00 | [+0.96, +7.04] | higher | reproduced |" in table[2]
    assert table[2].endswith("| 30.00 vs. 40.00 (step 200) |")
    decoded = compare("tiny", Comparison("b", "a"), "test_bleu_beam5", runs, [], False)
    assert decoded is not None and decoded.val_ppl_condition is None and not decoded.paired_seeds


def test_hypotheses_folder_names_the_references_and_never_copies_them(tmp_path: Path):
    spec = spec_for("")
    outputs = {"a-seed1": ["x y", "z"], "b-seed1": ["x", "z z"]}
    hypotheses.write_hypotheses(tmp_path / "hypotheses", spec, outputs, ("b-seed1", "a-seed1"))
    written = sorted(p.name for p in (tmp_path / "hypotheses").iterdir())
    assert written == ["README.md", "a-seed1.beam5.txt", "b-seed1.beam5.txt"]
    assert (tmp_path / "hypotheses" / "b-seed1.beam5.txt").read_text() == "x\nz z\n"
    readme = (tmp_path / "hypotheses" / "README.md").read_text()
    reference = hypotheses.reference_file(spec)
    assert reference.endswith("synth/test.zd") and not reference.startswith("/")
    assert f"--ref {reference}" in readme and "(2 lines)" in readme
    assert "--hyp hypotheses/b-seed1.beam5.txt --baseline hypotheses/a-seed1.beam5.txt" in readme
    assert "--paired-test bootstrap" in readme


def test_hypotheses_of_runs_no_longer_reported_are_removed(tmp_path: Path):
    spec, folder = spec_for(""), tmp_path / "hypotheses"
    hypotheses.write_hypotheses(folder, spec, {"a-seed1": ["x"], "a-seed2": ["y"]}, None)
    (folder / "notes.md").write_text("kept\n")
    hypotheses.write_hypotheses(folder, spec, {"a-seed1": ["x x"]}, None)
    written = sorted(p.name for p in folder.iterdir())
    assert written == ["README.md", "a-seed1.beam5.txt", "notes.md"]
    assert (folder / "a-seed1.beam5.txt").read_text() == "x x\n"
