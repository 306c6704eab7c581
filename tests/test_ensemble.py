"""Ensembles: the same search invariants as a single model, and clear refusals of mismatches.

Also home of :func:`trained_checkpoint`, the tiny models (trained once per test session)
that the averaging and service tests share.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import tiny_pairs, write_lines
from helpers import ROOT, assert_beam_of_one_is_greedy, run_module, tiny_run

from mtkit.corpus.batching import pad_sequences
from mtkit.errors import CheckpointError, ConfigError
from mtkit.search import forced_scores
from mtkit.search.ensemble import Ensemble, load_ensemble
from mtkit.search.translator import Translator
from mtkit.training.trainer import fit

SENTENCES = [
    "red cat sleeps",
    "the big dog runs near the house",
    "a tree",
    "blue house sees small green dog under a tree",
]


def trained_checkpoint(
    factory: pytest.TempPathFactory,
    seed: int = 1,
    reverse_source: bool = True,
    vocab_size: int = 60,
    steps: int = 150,
) -> Path:
    """``best.pt`` of a tiny model trained for ``steps`` on the reversal task, once a session.

    Models that differ only in ``seed`` share the corpus, the sentencepiece model and
    the output vocabulary: they can form an ensemble and be averaged.
    """
    name = f"seed{seed}-rev{int(reverse_source)}-vocab{vocab_size}-steps{steps}"
    run_dir = factory.getbasetemp() / "trained" / name
    if (run_dir / "best.pt").is_file():
        return run_dir / "best.pt"
    corpus = factory.getbasetemp() / "trained" / "corpus"
    if not (corpus / "valid.yy").is_file():
        for split, n, data_seed in (("train", 600, 1), ("valid", 40, 2)):
            src, tgt = tiny_pairs(n, data_seed)
            write_lines(corpus / f"{split}.xx", src)
            write_lines(corpus / f"{split}.yy", tgt)
    run = tiny_run(corpus, max_steps=steps, valid_every=steps, lr=0.01, seed=seed)
    run.data.test_split = None
    run.data.batch_tokens = 300
    run.data.reverse_source = reverse_source
    run.tokenizer.vocab_size = vocab_size
    run.data.cache_dir = str(factory.getbasetemp() / "mtkit-cache")  # never ~/.cache/mtkit
    fit(run, run_dir)
    return run_dir / "best.pt"


@pytest.fixture(scope="module")
def model_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory, seed=1)


@pytest.fixture(scope="module")
def model_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory, seed=2)


@pytest.fixture(scope="module")
def pair(model_a: Path, model_b: Path) -> Translator:
    return Translator.from_checkpoints([model_a, model_b])


def _hypotheses(translator: Translator, **changes: int) -> list[list[tuple[str, float]]]:
    results = translator.translate_nbest(SENTENCES, **changes)
    return [[(h.text, h.score) for h in hyps] for hyps in results]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_an_ensemble_of_one_is_exactly_the_model(model_a: Path, beam_size: int):
    single = Translator.from_checkpoint(model_a)
    ensemble = Translator.from_checkpoints([model_a])
    assert isinstance(ensemble.model, Ensemble)
    nbest = min(beam_size, 2)
    assert _hypotheses(ensemble, beam_size=beam_size, nbest=nbest) == _hypotheses(
        single, beam_size=beam_size, nbest=nbest
    )


def test_a_model_with_itself_is_the_model(model_a: Path):
    single = _hypotheses(Translator.from_checkpoint(model_a), beam_size=3, nbest=3)
    doubled = _hypotheses(Translator.from_checkpoints([model_a, model_a]), beam_size=3, nbest=3)
    assert [[text for text, _ in hyps] for hyps in doubled] == [
        [text for text, _ in hyps] for hyps in single
    ]
    for got, want in zip(doubled, single, strict=True):
        assert [score for _, score in got] == pytest.approx([s for _, s in want], abs=1e-5)


def test_step_is_the_weighted_mean_of_the_members(model_a: Path, model_b: Path):
    loaded = load_ensemble([model_a, model_b], weights=[3.0, 1.0])
    ensemble = loaded.model
    assert ensemble.weights == (0.75, 0.25)
    src, lengths = pad_sequences(loaded.codec.encode_source(SENTENCES))
    prev = torch.full((len(SENTENCES),), 2, dtype=torch.long)  # BOS
    with torch.inference_mode():
        enc = ensemble.encode(src, lengths)
        log_probs, _, attention = ensemble.step(prev, ensemble.init_state(enc), enc)
        parts = [
            member.step(
                prev, member.init_state(member.encode(src, lengths)), member.encode(src, lengths)
            )
            for member in ensemble.members
        ]
    assert torch.allclose(log_probs, 0.75 * parts[0][0] + 0.25 * parts[1][0], atol=1e-6)
    assert attention is not None
    assert torch.allclose(attention, 0.75 * parts[0][2] + 0.25 * parts[1][2], atol=1e-6)
    assert torch.allclose(attention.sum(-1), torch.ones(len(SENTENCES)), atol=1e-5)


def test_a_member_of_weight_zero_changes_nothing(model_a: Path, model_b: Path):
    alone = _hypotheses(Translator.from_checkpoint(model_a), beam_size=3, nbest=2)
    weighted = _hypotheses(
        Translator.from_checkpoints([model_a, model_b], [1.0, 0.0]), beam_size=3, nbest=2
    )
    assert weighted == alone


def test_beam_of_one_is_greedy_for_an_ensemble(pair: Translator):
    assert_beam_of_one_is_greedy(pair, SENTENCES)


def test_a_batch_equals_one_sentence_at_a_time_for_an_ensemble(pair: Translator):
    together = pair.translate_nbest(SENTENCES, beam_size=4, nbest=3)
    for sentence, hyps in zip(SENTENCES, together, strict=True):
        [alone] = pair.translate_nbest([sentence], beam_size=4, nbest=3)
        assert [h.text for h in alone] == [h.text for h in hyps]
        assert [h.score for h in alone] == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_forced_decoding_scores_equal_search_scores(pair: Translator):
    options = pair.options(beam_size=4, nbest=3)
    results = pair.translate_nbest(SENTENCES, beam_size=4, nbest=3)
    for sentence, hyps in zip(SENTENCES, results, strict=True):
        src, lengths = pad_sequences(pair.codec.encode_source([sentence] * len(hyps)))
        with torch.inference_mode():
            forced = forced_scores(pair.model, src, lengths, [h.tokens for h in hyps], options)
        assert forced == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_bf16_ensemble_keeps_exact_weights(model_a: Path, model_b: Path):
    translator = Translator.from_checkpoints([model_a, model_b], [1.0, 3.0], precision="bf16")
    assert isinstance(translator.model, Ensemble)
    assert translator.model.weights == (0.25, 0.75)
    assert len(translator.translate(SENTENCES, beam_size=2)) == len(SENTENCES)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"reverse_source": False}, "reverse_source=False"),
        ({"vocab_size": 50}, "different source sentencepiece model"),
    ],
)
def test_mismatched_members_are_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, model_a: Path, changes: dict, expected: str
):
    other = trained_checkpoint(tmp_path_factory, steps=5, **changes)
    with pytest.raises(CheckpointError) as error:
        load_ensemble([model_a, other])
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{other}: cannot join an ensemble with {model_a}")
    assert expected in message


def test_bad_weights_are_refused(model_a: Path, model_b: Path):
    with pytest.raises(ConfigError, match="expected 2 numbers"):
        load_ensemble([model_a, model_b], weights=[1.0])
    with pytest.raises(ConfigError, match="positive sum"):
        load_ensemble([model_a, model_b], weights=[0.0, 0.0])
    with pytest.raises(ConfigError, match="positive sum"):
        load_ensemble([model_a, model_b], weights=[1.0, -1.0])


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return run_module(*args, cwd=ROOT, env=env, stdin=stdin)


def test_the_clis_take_several_checkpoints(model_a: Path, model_b: Path, tmp_path: Path):
    text = "red cat sleeps\nthe big dog runs\n"
    single = _cli("mtkit.translate", str(model_a), "--beam-size", "3", stdin=text)
    itself = _cli("mtkit.translate", str(model_a), str(model_a), "--beam-size", "3", stdin=text)
    assert single.returncode == itself.returncode == 0, itself.stderr
    assert itself.stdout == single.stdout
    pair = _cli("mtkit.translate", str(model_a), str(model_b), "--weights", "1", "3", stdin=text)
    expected = Translator.from_checkpoints([model_a, model_b], [1, 3]).translate(
        text.split("\n")[:2]
    )
    assert pair.returncode == 0 and pair.stdout.splitlines() == expected
    src, ref = (
        write_lines(tmp_path / "s.xx", text.split("\n")[:2]),
        write_lines(tmp_path / "r.yy", expected),
    )
    scored = _cli("mtkit.evaluate", str(model_a), str(model_b), "--weights", "1", "3",
                  "--src", str(src), "--ref", str(ref))  # fmt: skip
    assert scored.returncode == 0 and "TER = 0.00" in scored.stdout  # identical to the references


def test_the_cli_names_a_wrong_number_of_weights(model_a: Path, model_b: Path):
    result = _cli("mtkit.translate", str(model_a), str(model_b), "--weights", "1", stdin="red\n")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("mtkit-translate: error: --weights")
