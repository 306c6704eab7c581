"""The speed table: pace and updates/minutes to a common validation BLEU, from metrics.csv."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtkit.experiment.speed import RunCurve, speed_table, target_bleu

HEADER = (
    "step,epoch,train_loss,train_ppl,val_loss,val_ppl,val_bleu,tokens_per_s,lr,"
    "teacher_forcing,elapsed_min\n"
)


def run_dir(root: Path, name: str, rows: list[tuple[int, float, float, float]]) -> Path:
    """A run folder whose metrics.csv has (step, val_bleu, tokens/s, minutes) rows."""
    folder = root / name
    folder.mkdir()
    lines = [f"{s},1,3.0,20.0,2.5,12.2,{b},{t},0.002,1.0,{m}\n" for s, b, t, m in rows]
    (folder / "metrics.csv").write_text(HEADER + "".join(lines))
    return folder


@pytest.fixture
def curves(tmp_path: Path) -> list[RunCurve]:
    fast = [(100, 10.0, 3000, 1.0), (200, 20.0, 3000, 2.0), (300, 24.0, 3000, 3.0)]
    fast2 = [(100, 12.0, 2800, 1.1), (200, 19.0, 2800, 2.2), (300, 26.0, 2800, 3.3)]
    slow = [(100, 5.0, 1000, 3.0), (200, 15.0, 1000, 6.0), (300, 20.0, 1000, 9.0)]
    slow2 = [(100, 4.0, 1200, 2.5), (200, 10.0, 1200, 5.0), (300, 16.0, 1200, 7.5)]
    return [
        RunCurve.read("fast", run_dir(tmp_path, "f1", fast)),
        RunCurve.read("fast", run_dir(tmp_path, "f2", fast2)),
        RunCurve.read("slow", run_dir(tmp_path, "s1", slow)),
        RunCurve.read("slow", run_dir(tmp_path, "s2", slow2)),
    ]


def test_the_target_is_a_share_of_the_weakest_conditions_best(curves):
    assert target_bleu(curves) == pytest.approx(round(0.9 * (20.0 + 16.0) / 2, 1))  # 16.2


def test_updates_and_minutes_to_the_target(curves):
    assert curves[0].reached(16.2) == (200, 2.0)
    assert curves[3].reached(16.2) is None
    assert curves[2].seconds_per_update == pytest.approx(60 * 9.0 / 300)
    rows = {line.split("|")[1].strip(): line for line in speed_table(curves) if "`" in line}
    fast = [cell.strip() for cell in rows["`fast`"].split("|")[1:-1]]
    assert fast == ["`fast`", "2900", "0.63", "200", "2.1"]
    slow = [cell.strip() for cell in rows["`slow`"].split("|")[1:-1]]
    assert slow[3] == "300 (1 of 2 runs never reached it)"
    assert slow[4] == "9.0 (1 of 2 runs never reached it)"


def test_no_runs_no_table():
    assert speed_table([]) == []
