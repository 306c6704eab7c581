"""scripts/experiment_summary.py on a fake experiment with known scores.

Two seeds per condition: a = (10, 12), b = (20, 22), c = (11, 13). Each side's sample
variance is 2, so Welch's standard error of a difference is sqrt(2/2 + 2/2) = sqrt(2) with
df = (1 + 1)² / (1/1 + 1/1) = 2, and t(0.975, 2) = 4.302653: the 95% margin is
4.302653 · 1.414214 = 6.0849. So b − a = +10 in [+3.92, +16.08] (reproduced, the paper
says higher), a − b = −10 (contradicted), c − a = +1 in [−5.08, +7.08] (not detected,
half-width 6.08), and d has no rows (not run).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_script

from mtkit.errors import ConfigError

HEADER = "experiment,condition,seed,steps,minutes,stop_reason,test_bleu_beam5,overrides\n"
SPEC = """\
description: A fake experiment for the summary.
paper: {citation: "Someone (2020).", claim: "b beats a.", effect: "+1.0 BLEU"}
data: [data=multi30k, "data.dir=${corpora}/multi30k"]
budget_steps: 100
seeds: 2
conditions:
  a: [model.attention=none]
  b: [model.attention=bahdanau]
  c: [model.attention=luong_dot]
  d: [model.attention=luong_general]
compare:
  - {condition: b, baseline: a, expect: higher}
  - {condition: a, baseline: b, expect: higher}
  - {condition: c, baseline: a, expect: higher}
  - {condition: d, baseline: a, expect: higher}
"""


summary_script = load_script("experiment_summary")


def run_row(condition: str, seed: int, bleu: float, overrides: str, steps: int = 100) -> str:
    budget = "train.max_steps=100 train.max_minutes=null"
    return f"fake,{condition},{seed},{steps},4.2,,{bleu},{overrides} {budget}\n"


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """(experiments folder with fake.yaml, results folder with fake/results.csv)."""
    experiments, results = tmp_path / "conf", tmp_path / "docs"
    experiments.mkdir()
    (experiments / "fake.yaml").write_text(SPEC, encoding="utf-8")
    rows = [
        run_row("a", 1234, 10, "model.attention=none"),
        run_row("a", 1235, 12, "model.attention=none"),
        run_row("b", 1234, 20, "model.attention=bahdanau"),
        run_row("b", 1235, 22, "model.attention=bahdanau"),
        run_row("c", 1234, 11, "model.attention=luong_general"),  # an earlier c
        run_row("c", 1235, 13, "model.attention=luong_general"),
    ]
    (results / "fake").mkdir(parents=True)
    (results / "fake" / "results.csv").write_text(HEADER + "".join(rows), encoding="utf-8")
    return experiments, results


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_welch_intervals_and_verdicts_by_hand(folders: tuple[Path, Path]) -> None:
    text = summary_script.summary(["fake"], *folders)
    rows = table_rows(text)
    assert [r[1] for r in rows] == [
        "`b` − `a`, BLEU",
        "`a` − `b`, BLEU",
        "`c` − `a`, BLEU †",
        "`d` − `a`, BLEU",
    ]
    assert rows[0][:3] == ["fake", "`b` − `a`, BLEU", "+1.0 BLEU"]
    assert rows[0][3:] == ["+10.00 [+3.92, +16.08]", "reproduced", "100 updates (4 min)", "2 / 2"]
    assert rows[1][3:5] == ["-10.00 [-16.08, -3.92]", "contradicted"]
    assert rows[2][3:5] == [
        "+1.00 [-5.08, +7.08]",
        "not detected (this design detects differences above ±6.08)",
    ]
    assert rows[3][3:] == ["–", "not run (`d`)", "–", "–"]
    stale = "the committed `c` runs predate its current overrides (`model.attention=luong_dot`)"
    assert stale in text


def test_comparisons_csv_wins_over_results(folders: tuple[Path, Path]) -> None:
    experiments, results = folders
    (results / "fake" / "comparisons.csv").write_text(
        "experiment,condition,baseline,metric,n_condition,n_baseline,difference,ci_low,ci_high,"
        "verdict\nfake,b,a,test_bleu_beam5,3,3,5.0,1.0,9.0,reproduced\n",
        encoding="utf-8",
    )
    rows = table_rows(summary_script.summary(["fake"], experiments, results))
    assert rows[0][3:5] == ["+5.00 [+1.00, +9.00]", "reproduced"]
    assert rows[0][6] == "3 / 3"
    assert rows[1][3] == "-10.00 [-16.08, -3.92]"  # not in comparisons.csv: from results.csv


def test_budget_from_overrides_stop_reason_or_steps() -> None:
    budget = summary_script.budget_text
    timed = [
        {"condition": "a", "steps": "191", "minutes": "10.2", "stop_reason": "max_minutes"},
        {"condition": "a", "steps": "240", "minutes": "10.6", "stop_reason": "max_minutes"},
    ]
    assert budget(timed) == "wall-clock ~10 min (191–240 updates)"
    given = [{**timed[0], "stop_reason": "", "overrides": "x=1 train.max_minutes=12"}]
    assert budget(given) == "wall-clock 12 min (191 updates)"
    converged = [
        {"condition": "a", "steps": "900", "minutes": "30", "overrides": "train.max_steps=3000 "
         "train.early_stopping_metric=loss train.patience=3"},
        {"condition": "a", "steps": "1200", "minutes": "41", "overrides": "train.max_steps=3000"},
    ]  # fmt: skip
    assert budget(converged) == "to convergence, ≤ 3000 updates (900–1200 updates, 30–41 min)"
    unmarked = [{"condition": "a", "steps": "715", "minutes": "20.1"}] * 2
    assert budget(unmarked) == "715 updates (20 min)"
    differing = [unmarked[0], {"condition": "a", "steps": "700", "minutes": "20.3"}]
    assert budget(differing) == "wall-clock ~20 min (700–715 updates)"


def test_too_few_seeds_has_no_interval() -> None:
    effect = summary_script.judge([10.0], [11.5], 1)
    assert summary_script.effect_text(effect) == ("+1.50 (no interval)", "too few seeds")


def test_write_then_check(folders: tuple[Path, Path], tmp_path: Path) -> None:
    experiments, results = folders
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n<!-- summary:start -->\nold\n<!-- summary:end -->\n\nAfter.\n", encoding="utf-8"
    )
    where = ["fake", "--experiments", str(experiments), "--results", str(results)]
    assert summary_script.main(["--check", str(page), *where]) == 1
    assert summary_script.main(["--write", str(page), *where]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Page\n\n<!-- summary:start -->\n| experiment |")
    assert "old" not in text and text.endswith("<!-- summary:end -->\n\nAfter.\n")
    assert summary_script.main(["--check", str(page), *where]) == 0
    page.write_text(text.replace("reproduced", "contradicted", 1), encoding="utf-8")
    assert summary_script.main(["--check", str(page), *where]) == 1


def test_missing_markers_is_a_one_line_error(folders: tuple[Path, Path], tmp_path: Path) -> None:
    experiments, results = folders
    page = tmp_path / "page.md"
    page.write_text("# Page without markers\n", encoding="utf-8")
    where = ["--experiments", str(experiments), "--results", str(results)]
    with pytest.raises(ConfigError, match=r"page\.md: expected a line <!-- summary:start -->"):
        summary_script.main(["--write", str(page), *where])
