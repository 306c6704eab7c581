"""Translating with a trained model: search invariants, input order, entry points agreeing."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_pairs, write_lines
from helpers import ROOT, assert_beam_of_one_is_greedy, run_module, tiny_run

from mtkit.errors import ConfigError
from mtkit.search.translator import Translator
from mtkit.training.trainer import fit


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained for a few hundred steps on the tiny reversal task."""
    corpus = tmp_path_factory.mktemp("corpus")
    for split, n, seed in (("train", 600, 1), ("valid", 40, 2), ("test", 40, 3)):
        src, tgt = tiny_pairs(n, seed)
        write_lines(corpus / f"{split}.xx", src)
        write_lines(corpus / f"{split}.yy", tgt)
    run_dir = tmp_path_factory.mktemp("run")
    run = tiny_run(corpus, max_steps=400, valid_every=100, lr=0.01)
    run.model.embed_dim, run.model.encoder_hidden, run.model.decoder_hidden = 32, 32, 64
    run.data.batch_tokens = 300
    fit(run, run_dir)
    return run_dir / "best.pt"


@pytest.fixture(scope="session")
def translator(checkpoint: Path) -> Translator:
    return Translator.from_checkpoint(checkpoint)


SENTENCES = [
    "red cat sleeps",
    "the big dog runs near the house",
    "a tree",
    "blue house sees small green dog under a tree",
]


def test_the_model_learned_something(translator: Translator):
    out = translator.translate(["red cat"], beam_size=5)[0]
    assert "CAT" in out


def test_beam_of_one_is_exactly_greedy(translator: Translator):
    assert_beam_of_one_is_greedy(translator, SENTENCES)


def test_a_file_in_one_batch_equals_each_line_alone(translator: Translator):
    together = translator.translate_nbest(SENTENCES, beam_size=5, nbest=3)
    for sentence, hyps in zip(SENTENCES, together, strict=True):
        [alone] = translator.translate_nbest([sentence], beam_size=5, nbest=3)
        assert [h.text for h in alone] == [h.text for h in hyps]
        assert [h.score for h in alone] == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_reported_score_equals_forced_decoding_score(translator: Translator):
    settings: dict[str, Any] = dict(
        beam_size=5, nbest=3, length_norm="gnmt", length_penalty=0.6, max_len_a=1.5, max_len_b=12
    )
    results = translator.translate_nbest(SENTENCES, **settings)
    for sentence, hyps in zip(SENTENCES, results, strict=True):
        forced = translator.score([sentence] * len(hyps), hyps, **settings)
        assert forced == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_order_and_line_count_survive_awkward_input(
    translator: Translator, caplog: pytest.LogCaptureFixture
):
    long_line = " ".join(["red cat sleeps near the tree"] * 30)
    lines = ["red cat", "", "red cat", "   ", long_line, "Кошка спит 猫", "a tree", ""]
    with caplog.at_level(logging.WARNING, logger="mtkit.search.translator"):
        out = translator.translate(lines, beam_size=3)
    assert len(out) == len(lines)
    assert out[1] == "" and out[3] == "" and out[7] == ""
    assert out[0] == out[2]  # duplicates translate identically
    assert out[6] == translator.translate(["a tree"], beam_size=3)[0]
    assert "input(s) longer than the longest training sentence" in caplog.text


def test_search_options_are_checked_by_name(translator: Translator):
    defaults = translator.defaults
    assert translator.options() == translator.options(beam_size=None)  # None keeps the default
    assert translator.options(max_len_a=2.0).max_len_a == 2.0
    assert translator.options(beam_size=1).nbest == 1  # the default n-best follows the beam
    assert translator.options(length_penalty=0.2).beam_size == defaults.beam_size
    with pytest.raises(ConfigError, match=r"unknown search option 'max_len_ratio'; valid"):
        translator.translate(["red cat"], max_len_ratio=2.0)
    bad = [
        ({"length_penalty": float("nan")}, "decode.length_penalty=nan"),
        ({"max_len_a": -5}, "decode.max_len_a=-5"),
        ({"beam_size": 0}, "decode.beam_size=0"),
        ({"beam_size": 2, "nbest": 3}, "decode.nbest=3"),
        ({"length_norm": "max"}, "decode.length_norm='max'"),
    ]
    for changes, message in bad:
        with pytest.raises(ConfigError, match=re.escape(message)) as info:
            translator.translate_nbest(["red cat"], **changes)
        assert "\n" not in str(info.value)


def test_cli_translator_and_evaluate_agree(
    checkpoint: Path, translator: Translator, tmp_path: Path
):
    source = write_lines(tmp_path / "in.xx", [*SENTENCES, "", "green dog"])
    result = run_module(
        "mtkit.translate", str(checkpoint), "-i", str(source), "--beam-size", "4", cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    cli_lines = result.stdout.splitlines()
    api_lines = translator.translate([*SENTENCES, "", "green dog"], beam_size=4)
    assert cli_lines == api_lines

    stdin = run_module(
        "mtkit.translate",
        str(checkpoint),
        "--beam-size",
        "4",
        cwd=ROOT,
        stdin="".join(s + "\n" for s in SENTENCES),
    )
    assert stdin.stdout.splitlines() == api_lines[: len(SENTENCES)]

    refs = write_lines(tmp_path / "ref.yy", [s.upper() for s in [*SENTENCES, "", "green dog"]])
    hyps = write_lines(tmp_path / "hyp.yy", api_lines)
    direct = run_module(
        "mtkit.evaluate",
        str(checkpoint),
        "--src",
        str(source),
        "--ref",
        str(refs),
        "--beam-size",
        "4",
        "--json",
        cwd=ROOT,
    )
    scored = run_module(
        "mtkit.evaluate", "--hyp", str(hyps), "--ref", str(refs), "--json", cwd=ROOT
    )
    assert direct.returncode == 0 and scored.returncode == 0, direct.stderr + scored.stderr
    a, b = json.loads(direct.stdout)["scores"], json.loads(scored.stdout)["scores"]
    assert [s["name"] for s in a] == ["BLEU", "chrF", "TER"]
    assert [s["score"] for s in a] == [s["score"] for s in b]
    assert all("nrefs:1" in s["signature"] for s in a)


def test_cli_nbest_and_scores_formats(checkpoint: Path, tmp_path: Path):
    source = write_lines(tmp_path / "in.xx", ["red cat", "", "a tree"])
    nbest = run_module(
        "mtkit.translate",
        str(checkpoint),
        "-i",
        str(source),
        "--beam-size",
        "3",
        "--nbest",
        "2",
        cwd=ROOT,
    )
    rows = [line.split("\t") for line in nbest.stdout.splitlines()]
    # an empty input line gives a single row
    assert [(r[0], r[1]) for r in rows] == [
        ("0", "0"),
        ("0", "1"),
        ("1", "0"),
        ("2", "0"),
        ("2", "1"),
    ]
    assert rows[2] == ["1", "0", "0.0000", ""]
    assert float(rows[0][2]) >= float(rows[1][2])
    scores = run_module("mtkit.translate", str(checkpoint), "-i", str(source), "--scores", cwd=ROOT)
    first = scores.stdout.splitlines()[0].split("\t")
    assert len(first) == 2 and float(first[0]) <= 0.0


def test_attention_plots(checkpoint: Path, tmp_path: Path):
    pytest.importorskip("matplotlib")
    source = write_lines(tmp_path / "in.xx", ["red cat sleeps", "", "a tree"])
    result = run_module(
        "mtkit.translate",
        str(checkpoint),
        "-i",
        str(source),
        "--attention-plots",
        str(tmp_path / "plots"),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["00001.png", "00003.png"]


def test_source_axis_undoes_reversal(translator: Translator):
    import torch

    pieces = translator.codec.source_pieces("red cat sleeps")
    n = len(pieces)
    attention = torch.zeros(2, n + 1)
    attention[0, 0] = 1.0  # the model's first column is the LAST piece when reversed
    labels, columns = translator.source_axis("red cat sleeps", attention)
    assert labels == [*pieces, "</s>"]
    assert translator.codec.reverse_source
    assert columns[0, n - 1] == 1.0


@pytest.mark.parametrize("bad", ["missing.pt", "notes.txt", "truncated.pt"])
def test_cli_refuses_bad_checkpoints_in_one_line(checkpoint: Path, tmp_path: Path, bad: str):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    data = checkpoint.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 3])
    result = run_module("mtkit.translate", str(tmp_path / bad), cwd=ROOT, stdin="red cat\n")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("mtkit-translate: error:")
    assert len(result.stderr.strip().splitlines()) == 1 and bad in result.stderr


def test_cli_input_errors(checkpoint: Path, tmp_path: Path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"red cat\n\xff\xfe oops\n")
    strict = run_module("mtkit.translate", str(checkpoint), "-i", str(bad), cwd=ROOT)
    assert strict.returncode == 2 and f"{bad}:2: invalid UTF-8" in strict.stderr
    replaced = run_module(
        "mtkit.translate", str(checkpoint), "-i", str(bad), "--errors", "replace", cwd=ROOT
    )
    assert replaced.returncode == 0 and len(replaced.stdout.splitlines()) == 2
    missing = run_module("mtkit.translate", str(checkpoint), "-i", str(tmp_path / "nope"), cwd=ROOT)
    assert missing.returncode == 2 and "nope: no such file" in missing.stderr
    hyp = write_lines(tmp_path / "h", ["a", "b"])
    ref = write_lines(tmp_path / "r", ["a", "b", "c"])
    mismatch = run_module("mtkit.evaluate", "--hyp", str(hyp), "--ref", str(ref), cwd=ROOT)
    assert mismatch.returncode == 2
    assert "has 2 lines" in mismatch.stderr and "has 3" in mismatch.stderr
