"""mtkit-translate's --format, --alignment and search flags on the tiny trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_pairs, write_lines
from helpers import ROOT, run_module, tiny_run
from test_translator import SENTENCES, checkpoint, translator  # noqa: F401 - shared model

from mtkit.cli.alignment import attention_grid, links
from mtkit.search.translator import Translator
from mtkit.training.trainer import fit

LINES = [SENTENCES[0], "", SENTENCES[2], SENTENCES[1]]


def translate(model: Path, source: Path, *args: str) -> list[str]:
    result = run_module("mtkit.translate", str(model), "-i", str(source), *args, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "in.xx", LINES)


def test_tsv_and_jsonl(checkpoint: Path, translator: Translator, source: Path):  # noqa: F811
    hyps = translator.translate_nbest(LINES, beam_size=3, nbest=2)
    tsv = translate(checkpoint, source, "--format", "tsv", "--scores", "--beam-size", "3")
    assert [row.split("\t") for row in tsv] == [
        [line, h[0].text, f"{h[0].score:.4f}"] for line, h in zip(LINES, hyps, strict=True)
    ]
    jsonl = translate(checkpoint, source, "--format", "jsonl", "--beam-size", "3", "--nbest", "2")
    records = [json.loads(row) for row in jsonl]
    assert len(records) == len(LINES)
    for record, nbest in zip(records, hyps, strict=True):
        assert set(record) == {"text", "score", "nbest"}  # the service's Translation fields
        assert record["text"] == nbest[0].text
        assert record["score"] == pytest.approx(nbest[0].score, abs=1e-6)
        assert [c["text"] for c in record["nbest"]] == [h.text for h in nbest]
    assert records[1] == {"text": "", "score": 0.0, "nbest": [{"text": "", "score": 0.0}]}


def test_marian_nbest_parses_and_equals_the_scores(checkpoint: Path, source: Path):  # noqa: F811
    marian = translate(checkpoint, source, "--format", "marian", "--beam-size", "4", "--nbest", "3")
    native = translate(checkpoint, source, "--beam-size", "4", "--nbest", "3")
    assert len(marian) == len(native)
    for line, row in zip(marian, native, strict=True):
        index, text, features, total = line.split(" ||| ")
        number, _, score, expected_text = row.split("\t")
        name, value = features.split()
        assert (index, text, name) == (number, expected_text, "F0=")
        assert float(value) == float(total) == float(score)
    best = translate(checkpoint, source, "--scores", "--beam-size", "4")
    first = {line.split(" ||| ")[0]: line for line in reversed(marian)}  # rank 0 of each
    for number, row in enumerate(best):
        assert float(first[str(number)].split(" ||| ")[-1]) == float(row.split("\t")[0])


def test_hard_and_threshold_alignments_follow_the_attention(
    checkpoint: Path,  # noqa: F811
    translator: Translator,  # noqa: F811
    source: Path,
):
    [hyps] = translator.translate_nbest([SENTENCES[1]], beam_size=1, return_attention=True)
    grid = attention_grid(translator, SENTENCES[1], hyps[0])
    assert grid is not None
    weights = grid.weights[: len(hyps[0].tokens), :-1]  # target pieces x source pieces
    hard = sorted((int(weights[t].argmax()), t) for t in range(weights.size(0)))
    assert links(grid, "hard") == hard
    loose = sorted((s, t) for t, s in (weights >= 0.2).nonzero().tolist())
    assert links(grid, 0.2) == loose and loose != hard

    lines = translate(checkpoint, source, "--beam-size", "1", "--alignment", "hard")
    text, pairs = lines[3].split(" ||| ")
    assert text == hyps[0].text
    assert pairs == " ".join(f"{s}-{t}" for s, t in hard)
    assert lines[1] == " ||| "  # an empty line: an empty translation, no links
    threshold = translate(checkpoint, source, "--beam-size", "1", "--alignment", "0.2",
                          "--format", "jsonl")  # fmt: skip
    assert json.loads(threshold[3])["alignment"] == [list(pair) for pair in loose]
    soft = translate(checkpoint, source, "--beam-size", "1", "--alignment", "soft")
    rows = [[float(w) for w in row.split(",")] for row in soft[3].split(" ||| ")[1].split()]
    assert len(rows) == len(grid.target) and all(len(r) == len(grid.source) for r in rows)
    flat = [w for row in grid.weights.tolist() for w in row]
    assert [w for row in rows for w in row] == pytest.approx(flat, abs=1e-5)
    attention = json.loads(
        translate(
            checkpoint, source, "--beam-size", "1", "--alignment", "soft", "--format", "jsonl"
        )[3]
    )["attention"]
    assert attention["source"] == grid.source and attention["target"] == grid.target


def test_search_flags_reach_the_search(
    checkpoint: Path,  # noqa: F811
    translator: Translator,  # noqa: F811
    source: Path,
):
    assert len(translator.translate_nbest(["a tree"], beam_size=1)[0][0].tokens) < 12
    forced = translator.translate_nbest(LINES, beam_size=1, min_len=12)
    assert all(len(h[0].tokens) >= 12 for line, h in zip(LINES, forced, strict=True) if line)
    long = translate(checkpoint, source, "--beam-size", "1", "--min-len", "12")
    assert long == [h[0].text for h in forced]
    flags = {
        "--no-repeat-ngram": ("2", "no_repeat_ngram", 2),
        "--coverage-penalty": ("0.4", "coverage_penalty", 0.4),
        "--length-norm": ("average", "length_norm", "average"),
        "--max-len-a": ("0.5", "max_len_a", 0.5),
        "--max-len-b": ("2", "max_len_b", 2),
    }
    for flag, (value, name, parsed) in flags.items():
        cli = translate(checkpoint, source, "--beam-size", "3", "--scores", flag, value)
        api = translator.translate_nbest(LINES, beam_size=3, **{name: parsed})
        assert cli == [f"{h[0].score:.4f}\t{h[0].text}" for h in api], flag


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (
            ["--alignment", "1.5"],
            "--alignment must be hard, soft or a threshold in (0, 1], not '1.5'",
        ),
        (["--alignment", "0"], "--alignment must be hard, soft or a threshold in (0, 1], not '0'"),
        (["--alignment", "nan"], "not 'nan'"),
        (["--min-len", "-1"], "--min-len: decode.min_len=-1 is not valid"),
        (["--no-repeat-ngram", "-2"], "--no-repeat-ngram: decode.no_repeat_ngram=-2 is not valid"),
        (["--coverage-penalty", "inf"], "--coverage-penalty: decode.coverage_penalty=inf"),
        (["--length-norm", "max"], "--length-norm: decode.length_norm='max' is not valid"),
        (["--max-len-a", "-1"], "--max-len-a: decode.max_len_a=-1.0 is not valid"),
        (["--max-len-b", "0"], "--max-len-b: decode.max_len_b=0 is not valid"),
        (["--max-len-a", "1", "--max-len-ratio", "1"], "--max-len-ratio is the old name"),
    ],
)
def test_bad_values_are_one_line(tmp_path: Path, args: list[str], message: str):
    result = run_module(
        "mtkit.translate", str(tmp_path / "missing.pt"), *args, cwd=tmp_path, stdin="red cat\n"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mtkit-translate: error:") and message in last, result.stderr


def test_alignment_needs_attention(tmp_path: Path):
    corpus = tmp_path / "corpus"
    for split, n, seed in (("train", 60, 1), ("valid", 10, 2), ("test", 10, 3)):
        src, tgt = tiny_pairs(n, seed)
        write_lines(corpus / f"{split}.xx", src)
        write_lines(corpus / f"{split}.yy", tgt)
    run = tiny_run(corpus, max_steps=2, valid_every=2)
    run.model.attention = "none"
    fit(run, tmp_path / "run")
    result = run_module(
        "mtkit.translate", str(tmp_path / "run" / "best.pt"), "--alignment", "hard",
        cwd=tmp_path, stdin="red cat\n",
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "mtkit-translate: error: --alignment needs a model with attention; this one has "
        "model.attention=none"
    )
