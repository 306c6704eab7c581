"""End-to-end quality on real data (Multi30k de->en from ../shared): train, translate, score.

The default run trains the default model for 200 steps and checks a BLEU floor; the slow test runs
the README's 20-minute command and checks the project's published figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MULTI30K, requires_multi30k
from helpers import ROOT, run_module

from mtkit.metrics import bleu
from mtkit.runtime import fast_bf16_cpu
from mtkit.translator import Translator

pytestmark = requires_multi30k

MULTI30K_DE_EN = ["data=multi30k", f"data.dir={MULTI30K}", "data.src_lang=de", "data.tgt_lang=en"]


def read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_short_multi30k_run_clears_a_bleu_floor(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_module(
        "mtkit.train",
        *MULTI30K_DE_EN,
        "train.max_steps=200",
        "train.valid_every=100",
        "train.seed=1",
        f"hydra.run.dir={run_dir}",
        cwd=ROOT,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["bleu_greedy"] >= 15.0, summary
    translator = Translator.from_checkpoint(run_dir / "best.pt")
    sources = read(MULTI30K / "test2016.de")[:200]
    hypotheses = translator.translate(sources, beam_size=4)
    assert bleu(hypotheses, read(MULTI30K / "test2016.en")[:200]).score >= 15.0


# What the README's 20-minute command reaches on 2 CPU cores depends on the CPU: with
# native bf16 (AVX512-BF16/AMX, where train.precision=auto trains in bf16) it ran ~1200
# steps and reached 39.4 greedy; on an AVX2-only CPU (fp32) 715 steps and 37.2.
BLEU_FLOOR_20_MIN = 38.0 if fast_bf16_cpu() else 35.5


@pytest.mark.slow
def test_twenty_minute_multi30k_run_reaches_bleu_38(tmp_path: Path):
    """The README's 20-minute command: greedy test2016 BLEU >= 38 on 2 CPU cores with bf16
    units (>= 35.5 on an fp32-only CPU, which trains about 40% fewer steps)."""
    run_dir = tmp_path / "run"
    result = run_module(
        "mtkit.train",
        *MULTI30K_DE_EN,
        "train.max_minutes=20",
        f"hydra.run.dir={run_dir}",
        cwd=ROOT,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["bleu_greedy"] >= BLEU_FLOOR_20_MIN, summary
