"""A trained peephole-LSTM model: the search invariants, save -> load, averaging, int8 and
ensembles, as for the other cells; and the configuration's one-line refusal."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import tiny_pairs, write_lines
from helpers import TINY_OVERRIDES, assert_beam_of_one_is_greedy, load_weights, run_module, tiny_run

from mtkit.search.int8 import int8_available
from mtkit.search.translator import Translator
from mtkit.training.trainer import fit

SENTENCES = [
    "red cat sleeps",
    "the big dog runs near the house",
    "a tree",
    "blue house sees small green dog under a tree",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = tmp_path_factory.mktemp("peephole-corpus")
    for split, n, seed in (("train", 600, 1), ("valid", 40, 2)):
        src, tgt = tiny_pairs(n, seed)
        write_lines(corpus / f"{split}.xx", src)
        write_lines(corpus / f"{split}.yy", tgt)
    return corpus


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """A two-layer peephole LSTM with Luong attention and input feeding, briefly trained."""
    run_dir = tmp_path_factory.mktemp("peephole-run")
    run = tiny_run(corpus, max_steps=120, valid_every=40, lr=0.01)
    run.data.test_split = None
    run.data.batch_tokens = 300
    run.model.cell, run.model.peepholes, run.model.layers = "lstm", True, 2
    run.model.attention = "luong_general"
    fit(run, run_dir)
    return run_dir / "best.pt"


@pytest.fixture(scope="module")
def translator(checkpoint: Path) -> Translator:
    return Translator.from_checkpoint(checkpoint)


def test_the_checkpoint_holds_trained_peepholes_and_learned(checkpoint: Path):
    weights = load_weights(checkpoint)
    peepholes = {k: v for k, v in weights.items() if ".weight_c" in k}
    # encoder: 2 layers x 2 directions, decoder: 2 layers; three diagonals (H,) each
    assert len(peepholes) == 3 * (2 * 2 + 2)
    assert all(v.dim() == 1 and v.abs().sum() > 0 for v in peepholes.values())
    with open(checkpoint.parent / "metrics.csv") as f:
        losses = [float(row["val_loss"]) for row in csv.DictReader(f) if row["val_loss"]]
    assert len(losses) >= 2 and losses[-1] < losses[0]


def test_beam_of_one_is_greedy(translator: Translator):
    assert_beam_of_one_is_greedy(translator, SENTENCES)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_a_batch_equals_each_sentence_alone(translator: Translator, beam_size: int):
    together = translator.translate_nbest(SENTENCES, beam_size=beam_size)
    for sentence, hyps in zip(SENTENCES, together, strict=True):
        [alone] = translator.translate_nbest([sentence], beam_size=beam_size)
        assert [h.text for h in alone] == [h.text for h in hyps]
        assert [h.score for h in alone] == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_scores_equal_forced_decoding(translator: Translator):
    results = translator.translate_nbest(SENTENCES, beam_size=4, nbest=2)
    for sentence, hyps in zip(SENTENCES, results, strict=True):
        forced = translator.score([sentence] * len(hyps), hyps, beam_size=4, nbest=2)
        assert forced == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_save_load_and_average_give_identical_translations(
    checkpoint: Path, translator: Translator, tmp_path: Path
):
    """A second load, and the average of the checkpoint with itself written by
    ``mtkit.average``, translate exactly as the first load."""
    want = translator.translate_nbest(SENTENCES, beam_size=3, nbest=2)
    averaged = tmp_path / "averaged.pt"
    done = run_module("mtkit.average", str(checkpoint), str(checkpoint), "-o", str(averaged),
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for path in (checkpoint, averaged):
        got = Translator.from_checkpoint(path).translate_nbest(SENTENCES, beam_size=3, nbest=2)
        assert [[(h.text, h.score) for h in hyps] for hyps in got] == [
            [(h.text, h.score) for h in hyps] for hyps in want
        ]


def test_an_ensemble_of_the_model_with_itself_is_the_model(
    checkpoint: Path, translator: Translator
):
    pair = Translator.from_checkpoints([checkpoint, checkpoint])
    got = pair.translate_nbest(SENTENCES, beam_size=3)
    want = translator.translate_nbest(SENTENCES, beam_size=3)
    assert [h[0].text for h in got] == [h[0].text for h in want]
    assert [h[0].score for h in got] == pytest.approx([h[0].score for h in want], abs=1e-5)


@pytest.mark.skipif(not int8_available(), reason="no int8 CPU backend in this torch")
def test_int8_decoding_keeps_the_invariants(checkpoint: Path, translator: Translator):
    int8 = Translator.from_checkpoint(checkpoint, precision="int8")
    assert int8.loaded.dtype == torch.float32
    assert_beam_of_one_is_greedy(int8, SENTENCES)
    together = int8.translate(SENTENCES, beam_size=3)
    assert together == [int8.translate([s], beam_size=3)[0] for s in SENTENCES]
    fp32 = translator.translate(SENTENCES, beam_size=3)
    assert sum(a == b for a, b in zip(together, fp32, strict=True)) >= len(SENTENCES) - 1


def test_peepholes_with_a_gru_are_a_one_line_error(corpus: Path, tmp_path: Path):
    done = run_module(
        "mtkit.train", *TINY_OVERRIDES, f"data.dir={corpus}", "model.peepholes=true",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert "model.peepholes=True" in lines[-1] and "model.cell=gru" in lines[-1]
