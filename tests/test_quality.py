"""End-to-end quality on real data (Multi30k de->en from ../shared): train, translate, score.

One slow test (``python -m pytest -m slow``, run by CI after the default run): the
Multi30k recipe (docs/training.md) for a fixed 500 steps, a greedy BLEU floor near its
measured BLEU, and the trained checkpoint's beam search through the public Translator.
It is not in the default run: training on the real corpus takes minutes however short
the run, and the default run keeps to the embedded corpus and tiny models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MULTI30K, requires_multi30k
from helpers import ROOT, run_module

from mtkit.metrics import bleu
from mtkit.search.translator import Translator

pytestmark = requires_multi30k

MULTI30K_DE_EN = ["data=multi30k", f"data.dir={MULTI30K}", "data.src_lang=de", "data.tgt_lang=en"]


def read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# The documented 20-minute command trains as many steps as the CPU manages in 20 minutes:
# ~1200 with native bf16 units (39.4 greedy), 480 to 715 on 2-core AVX2 CPUs (35.4 to
# 37.2). A wall-clock budget makes a quality floor a speed test in disguise (speed is the
# benchmarks' job), so the slow test trains the same recipe for a fixed number of steps in
# fp32, the arithmetic every x86 CPU runs: its BLEU is then a property of the recipe, not
# of the machine. Measured on a 2-core AVX2 CPU: 36.19 greedy at 500 steps with one
# process of 2 threads (22 minutes), 35.69 with the default two processes of 1 thread
# (15.4 minutes; the same updates up to floating-point order); the floor leaves about one
# seed-to-seed spread for other CPUs' kernels, whose fp32 rounding differs and sends
# training down another path.
RECIPE_STEPS = 500
BLEU_FLOOR_RECIPE = 35.0
# Beam 4 on the first 200 test sentences. These score 0.6 to 1.6 BLEU below the whole
# test set (beam 5 of reversal's committed 800-update attention models,
# docs/experiments/reversal/hypotheses/); the floor sits 5 below the greedy one, room for
# that gap and for the noise of a small set.
BLEU_FLOOR_BEAM_SUBSET = 30.0


@pytest.mark.slow
def test_default_recipe_reaches_its_bleu_floor_in_500_steps(tmp_path: Path):
    """The Multi30k recipe (default model and optimiser), 500 steps in fp32: greedy
    test2016 BLEU >= 35 (about 16 minutes on 2 AVX2 cores); its best.pt, loaded by the
    Translator, translates 200 test sentences with beam 4 at BLEU >= 30."""
    run_dir = tmp_path / "run"
    result = run_module(
        "mtkit.train",
        *MULTI30K_DE_EN,
        f"train.max_steps={RECIPE_STEPS}",
        "train.precision=fp32",
        f"hydra.run.dir={run_dir}",
        cwd=ROOT,
        timeout=2400,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == RECIPE_STEPS, summary
    assert summary["test"]["bleu_greedy"] >= BLEU_FLOOR_RECIPE, summary
    translator = Translator.from_checkpoint(run_dir / "best.pt")
    sources = read(MULTI30K / "test2016.de")[:200]
    hypotheses = translator.translate(sources, beam_size=4)
    beam_bleu = bleu(hypotheses, read(MULTI30K / "test2016.en")[:200]).score
    assert beam_bleu >= BLEU_FLOOR_BEAM_SUBSET, beam_bleu
