"""The length-split corpus (train short, test every length), its preset and experiment,
and BLEU by length with bootstrap intervals.

The builder runs on a tiny synthetic Multi30k-style folder whose source lengths are
chosen by hand (``max_words=5``), so every count below is known in advance.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import tiny_pairs
from helpers import ROOT, run_module

from mtkit.corpus.length_split import build_length_split, concatenations, histogram
from mtkit.errors import ConfigError, DataError, MtkitError
from mtkit.experiment import __main__ as experiment_cli
from mtkit.experiment import evaluation
from mtkit.experiment.by_length import (
    LengthTest,
    bucket_bleu,
    score_by_length,
    sentence_stats,
    write_csv,
)
from mtkit.experiment.evaluation import EVAL_FILE, evaluate_run, load_test_set
from mtkit.experiment.load import load_spec
from mtkit.experiment.overrides import compose
from mtkit.experiment.spec import LENGTH_SPLIT
from mtkit.metrics import bleu

SHARED_MULTI30K = ROOT.parent / "shared" / "corpora" / "multi30k"
# source lengths in words; max_words=5 keeps those under 5 for train and val
LENGTHS = {
    "train": [1, 2, 3, 4, 5, 6, 7, 4, 12, 55],
    "val": [2, 5, 3],
    "test2016": [2, 3, 4, 5, 6, 1, 2],
}
SHORT = {"train": 5, "val": 2}
LONG = {"train": 5, "val": 1}


def sentence(split: str, index: int, words: int, side: str) -> str:
    """A unique line of ``words`` words: the first names the split, the line and the side."""
    return " ".join([f"{side}-{split}-{index}"] + [f"w{k}" for k in range(1, words)])


def write_corpus(folder: Path, lengths: dict[str, list[int]] = LENGTHS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, counts in lengths.items():
        for lang in ("de", "en"):
            lines = [sentence(split, i, n, lang) for i, n in enumerate(counts)]
            (folder / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def built(tmp_path: Path) -> Path:
    out = tmp_path / "split"
    build_length_split(write_corpus(tmp_path / "multi30k"), out, "de", "en", 5, 3)
    return out


def test_splits_counts_and_histograms(built: Path):
    manifest = json.loads((built / "manifest.json").read_text())
    tests = len(LENGTHS["test2016"]) + LONG["train"] + LONG["val"]
    concat = sum(len(LENGTHS["test2016"]) // k for k in (1, 2, 3))  # 7 + 3 + 2
    expected = {"train": SHORT["train"], "val": SHORT["val"], "test": tests, "concat": concat}
    for name, count in expected.items():
        for lang in ("de", "en"):
            assert len(lines(built / f"{name}.{lang}")) == count, (name, lang)
            assert manifest["files"][f"{name}.{lang}"]["lines"] == count
    assert manifest["source_words"]["train"] == {
        "1-9": 5, "10-19": 0, "20-29": 0, "30-39": 0, "40-49": 0, "50+": 0
    }  # fmt: skip
    assert manifest["source_words"]["test"]["10-19"] == 1
    assert manifest["source_words"]["test"]["50+"] == 1
    assert manifest["settings"]["max_words"] == 5 and manifest["settings"]["concat"] == 3
    assert manifest["concat_groups"] == {"1": 7, "2": 3, "3": 2}
    assert "artificial" in manifest["note"]
    assert sorted(manifest["inputs"]) == sorted(
        f"{s}.{lang}" for s in ("train", "val", "test2016") for lang in ("de", "en")
    )


def test_long_pairs_are_held_out_into_test(built: Path):
    train, val, test = (set(lines(built / f"{name}.de")) for name in ("train", "val", "test"))
    assert not (train | val) & test
    assert all(len(s.split()) < 5 for s in train | val)
    for split in ("train", "val"):
        for i, n in enumerate(LENGTHS[split]):
            line = sentence(split, i, n, "de")
            assert (line in test) == (n >= 5), line
    natural = [sentence("test2016", i, n, "de") for i, n in enumerate(LENGTHS["test2016"])]
    assert lines(built / "test.de")[: len(natural)] == natural  # all of test2016, in order
    pairs = dict(zip(lines(built / "test.de"), lines(built / "test.en"), strict=True))
    assert pairs[sentence("train", 9, 55, "de")] == sentence("train", 9, 55, "en")


def test_concat_lines_join_k_consecutive_pairs(built: Path):
    sources = [sentence("test2016", i, n, "de") for i, n in enumerate(LENGTHS["test2016"])]
    targets = [sentence("test2016", i, n, "en") for i, n in enumerate(LENGTHS["test2016"])]
    expected_de, expected_en = [], []
    for k in (1, 2, 3):
        for start in range(0, len(sources) - k + 1, k):
            expected_de.append(" ".join(sources[start : start + k]))
            expected_en.append(" ".join(targets[start : start + k]))
    assert lines(built / "concat.de") == expected_de
    assert lines(built / "concat.en") == expected_en
    joined, counts = concatenations([("a b", "A B"), ("c", "C"), ("d", "D")], 2)
    assert joined == [("a b", "A B"), ("c", "C"), ("d", "D"), ("a b c", "A B C")]
    assert counts == {"1": 3, "2": 1}
    assert histogram([("x " * 50, "y"), ("x", "y")]) == {
        "1-9": 1, "10-19": 0, "20-29": 0, "30-39": 0, "40-49": 0, "50+": 1
    }  # fmt: skip


def test_builds_are_deterministic_and_a_rebuild_is_a_no_op(tmp_path: Path):
    source = write_corpus(tmp_path / "multi30k")
    first, second = tmp_path / "a", tmp_path / "b"
    assert build_length_split(source, first, "de", "en", 5, 3)[1]
    assert build_length_split(source, second, "de", "en", 5, 3)[1]
    for path in sorted(first.iterdir()):
        assert path.read_bytes() == (second / path.name).read_bytes(), path.name
    stamp = (first / "train.de").stat().st_mtime_ns
    manifest, built = build_length_split(source, first, "de", "en", 5, 3)
    assert not built and (first / "train.de").stat().st_mtime_ns == stamp
    assert manifest == json.loads((first / "manifest.json").read_text())
    assert build_length_split(source, first, "de", "en", 4, 3)[1]  # another bound: rebuilt
    assert json.loads((first / "manifest.json").read_text())["settings"]["max_words"] == 4
    (source / "val.en").write_text((source / "val.en").read_text().replace("w1", "v1"))
    assert build_length_split(source, first, "de", "en", 4, 3)[1]  # another input: rebuilt
    (first / "test.en").write_text("damaged\n")
    assert build_length_split(source, first, "de", "en", 4, 3)[1]  # a damaged output too
    assert len(lines(first / "test.en")) == len(lines(first / "test.de"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "multi30k"]  # no temp left


def test_one_line_errors_name_the_file(tmp_path: Path):
    source = write_corpus(tmp_path / "multi30k")
    (source / "val.en").unlink()
    with pytest.raises(DataError, match=r"val\.en: no such file") as missing:
        build_length_split(source, tmp_path / "out", "de", "en")
    assert "\n" not in str(missing.value)
    write_corpus(source)
    (source / "train.en").write_text("one line\n")
    with pytest.raises(DataError, match=r"line count mismatch: .*train\.de has 10 lines"):
        build_length_split(source, tmp_path / "out", "de", "en")
    write_corpus(source, {"train": [8, 9], "val": [1], "test2016": [1]})
    with pytest.raises(DataError, match=r"train\.de: no pair under 5 words"):
        build_length_split(source, tmp_path / "out", "de", "en", 5)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me\n")
    write_corpus(source)
    with pytest.raises(ConfigError, match=r"without manifest\.json"):
        build_length_split(source, tmp_path / "mine", "de", "en")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me\n"
    assert not (tmp_path / "out").exists()


def test_cli_prints_the_counts_and_fails_in_one_line(tmp_path: Path):
    source = write_corpus(tmp_path / "multi30k")
    args = [str(source), str(tmp_path / "out"), "--max-words", "5", "--concat", "3"]
    done = run_module("mtkit.corpus.length_split", *args, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "built" in done.stdout and "test: 13 pairs" in done.stdout
    assert "concat: 12 pairs" in done.stdout and "train: 5 pairs" in done.stdout
    again = run_module("mtkit.corpus.length_split", *args, cwd=ROOT, timeout=120)
    assert "already built, unchanged" in again.stdout
    failed = run_module("mtkit.corpus.length_split", str(tmp_path / "none"), "x", cwd=ROOT)
    assert failed.returncode == 2
    assert failed.stderr.strip().startswith("mtkit-length-split: error: ")
    assert failed.stderr.strip().endswith("no such folder (expected {split}.{lang} files)")
    assert len(failed.stderr.strip().splitlines()) == 1


def test_the_preset_composes_with_a_built_folder(built: Path):
    run = compose(["data=multi30k_long", f"data.dir={built}"])
    assert (run.data.src_lang, run.data.tgt_lang) == ("de", "en")
    assert (run.data.train_split, run.data.valid_split, run.data.test_split) == (
        "train",
        "val",
        "test",
    )
    test = load_test_set(run)
    assert (test.name, len(test)) == ("test", 13)
    concat = load_test_set(run, "concat")
    assert (concat.name, len(concat)) == ("concat", 12)
    assert concat.sources[7] == " ".join(test.sources[:2])


def test_extra_tests_are_cached_in_eval_json(tmp_path: Path):
    """A cached extra split is not decoded again (there is no best.pt to decode with)."""
    test = evaluation.TestSet(["a"], ["A"])
    extra = evaluation.TestSet(["b", "c"], ["B", "C"], "concat")
    cached = {"test_sentences": 1, "extra_tests": {"concat": {"test_sentences": 2}}}
    (tmp_path / EVAL_FILE).write_text(json.dumps(cached))
    assert evaluate_run(tmp_path, [], test, [extra]) == cached
    shorter = evaluation.TestSet(
        ["b"], ["B"], "concat"
    )  # another size: decoded again, so best.pt is read
    with pytest.raises(MtkitError, match=r"best\.pt"):
        evaluate_run(tmp_path, [], test, [shorter])


def test_the_experiment_file_loads_and_dry_runs(tmp_path: Path, capsys):
    corpora = tmp_path / "corpora"
    write_corpus(corpora / "multi30k", {**LENGTHS, "train": [3] * 30 + [25] * 3})
    spec = load_spec("attention_length", str(corpora))
    assert spec.length_split is not None and spec.length_split.source == corpora / "multi30k"
    assert (spec.length_split.max_words, spec.length_split.concat) == (20, 5)
    assert spec.extra_tests == ["concat"] and f"data.dir={LENGTH_SPLIT}" in spec.data
    assert list(spec.conditions) == ["none", "bahdanau"] and spec.budget.steps == 3000
    assert spec.budget.converge and spec.budget.patience == 3
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        experiment_cli.main(
            ["attention_length", "--corpora", str(corpora), "--out", str(out), "--dry-run"]
        )
    printed = capsys.readouterr().out
    assert exit_info.value.code in (0, None), printed
    assert "data.dir=${length_split}" in printed and "estimated time:" in printed
    built = out / "data" / "length-split"
    assert len(lines(built / "train.de")) == 30 and len(lines(built / "test.de")) == 7 + 3


def test_length_split_keys_are_checked(tmp_path: Path):
    head = (
        "description: d\npaper: {citation: c, claim: c}\nbudget_steps: 1\n"
        "conditions: {a: [model.cell=gru]}\n"
    )
    cases = {
        'data: [data=multi30k_long, "data.dir=${length_split}"]\n': "data: ${length_split} needs",
        "data: [data=synth]\nlength_split: {max_words: 3}\n": "length_split: expected a mapping",
        "data: [data=synth]\nlength_split: {from: x, words: 3}\n": "length_split.words: unknown",
        "data: [data=synth]\nlength_split: {from: x, concat: 0}\n": "length_split.concat: expected",
        "data: [data=synth]\nextra_tests: concat\n": "extra_tests: expected a list",
        "data: [data=synth]\nextra_tests: [a, a]\n": "extra_tests: a split is named twice",
        'data: [data=synth]\nlength_split: {from: x}\ncommon: ["data.max_len=${length_split}"]\n': (
            "common: ${length_split} belongs in data"
        ),
    }
    for number, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"case{number}.yaml"
        path.write_text(head + text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_spec(str(path))


REFERENCES = [
    "the cat sits on the mat",
    "a dog runs in the park",
    "two men play football on a green field",
    "a woman reads a book",
    "children are playing in the water",
    "a man rides a red bicycle down the street",
]
SEEDS = [
    ["the cat sits on a mat", "a dog runs in a park", "two men play soccer on a field",
     "a woman reads a book", "kids play in the water", "a man rides a bike down the street"],
    ["the cat is on the mat", "the dog runs in the park", "two men play football on grass",
     "a woman is reading", "children are playing in water", "a man rides a red bicycle"],
]  # fmt: skip


def test_bucket_bootstrap_contains_the_point_and_repeats_with_its_seed():
    stats = sentence_stats(SEEDS, REFERENCES)
    indices = [0, 2, 3, 5]
    point, low, high = bucket_bleu(stats, indices, resamples=300, seed=7)
    expected = sum(
        bleu([h[i] for i in indices], [REFERENCES[i] for i in indices]).score for h in SEEDS
    ) / len(SEEDS)
    assert point == pytest.approx(expected)
    assert low <= point <= high and low < high
    assert bucket_bleu(stats, indices, resamples=300, seed=7) == (point, low, high)


def test_scores_by_length_and_their_csv(tmp_path: Path):
    spec = load_spec("attention_length", str(tmp_path))  # conditions: none, bahdanau
    spec.length_buckets = [5]
    sources = ["a b c", "a b c d e f", "a b", "a b c d e f g", "a", "a b c d e f g h"]
    test = LengthTest("test", sources, REFERENCES, [("none", SEEDS[0])])
    test.outputs.append(("none", SEEDS[1]))
    test.outputs.append(("bahdanau", SEEDS[1][:3]))  # unfinished: left out
    labels, scores = score_by_length(spec, test, resamples=100)
    assert labels == ["1-5\n(n=3)", "6+\n(n=3)"]
    assert [(s.condition, s.bucket, s.sentences, s.runs) for s in scores] == [
        ("none", "1-5", 3, 2),
        ("none", "6+", 3, 2),
    ]
    write_csv(tmp_path / "by_length.csv", scores)
    rows = lines(tmp_path / "by_length.csv")
    assert rows[0] == "test_set,bucket,sentences,condition,runs,bleu,low,high"
    assert rows[1].startswith("test,1-5,3,none,2,") and len(rows) == 3


@pytest.mark.skipif(not SHARED_MULTI30K.is_dir(), reason="needs the shared Multi30k corpus")
def test_the_real_multi30k_split(tmp_path: Path):
    manifest, _ = build_length_split(SHARED_MULTI30K, tmp_path / "split", "de", "en")
    counts = {name: manifest["files"][f"{name}.de"]["lines"] for name in ("train", "val", "test")}
    # 921 training sources have 20+ words: 919 split at ASCII whitespace, and two more whose
    # words are also separated by no-break spaces (Python's split(), as the figures count)
    assert counts == {"train": 29000 - 921, "val": 1014 - 35, "test": 1000 + 921 + 35}
    assert manifest["files"]["concat.de"]["lines"] == 1000 + 500 + 333 + 250 + 200
    assert manifest["source_words"]["concat"]["50+"] > 100
    assert manifest["source_words"]["train"]["20-29"] == 0


TINY_LENGTH_EXPERIMENT = """\
description: One tiny model on a length split, with the concatenations as a second test set.
paper: {citation: "Nobody (2024). A test.", claim: "Nothing to reproduce."}
data: [data=multi30k_long, "data.dir=${length_split}", data.src_lang=de, data.tgt_lang=en]
length_split: {from: "${corpora}/m30k", max_words: 7, concat: 2}
extra_tests: [concat]
budget_steps: 2
seeds: 2
common: [model=small, tokenizer.vocab_size=60, data.batch_tokens=120, train.valid_every=2,
         train.log_every=1, train.device=cpu, train.precision=fp32, train.threads=1,
         decode.max_len_a=0.5, decode.max_len_b=3]
conditions:
  gru: [model.cell=gru]
length_buckets: [3, 5]
"""


def test_an_experiment_builds_its_split_and_scores_the_extra_test(tmp_path: Path, capsys):
    for split, n, seed in (("train", 300, 1), ("val", 40, 2), ("test2016", 40, 3)):
        src, tgt = tiny_pairs(n, seed)  # 2-8 words: 7 and 8 are held out into test
        for lang, text in (("de", src), ("en", tgt)):
            path = tmp_path / "corpora" / "m30k" / f"{split}.{lang}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(text) + "\n", encoding="utf-8")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_LENGTH_EXPERIMENT, encoding="utf-8")
    out = tmp_path / "out"
    argv = [str(spec), "--corpora", str(tmp_path / "corpora"), "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        experiment_cli.main(argv)
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    data = out / "data" / "length-split"
    concat = len(lines(data / "concat.de"))
    assert concat == 40 + 20 and "length split: built" in capsys.readouterr().out
    run_dir = out / "runs" / "gru-seed1"
    assert len(lines(run_dir / "hyp.concat.beam5.txt")) == concat
    evaluated = json.loads((run_dir / EVAL_FILE).read_text())
    assert evaluated["test_sentences"] == len(lines(data / "test.de"))
    assert evaluated["extra_tests"]["concat"]["test_sentences"] == concat
    for name in ("bleu_by_length.png", "bleu_by_length_concat.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    rows = lines(out / "bleu_by_length.csv")
    assert {row.split(",")[0] for row in rows[1:]} == {"test", "concat"}
    assert "data.dir=${length_split}" in (out / "table.md").read_text()
    stamp = (run_dir / EVAL_FILE).stat().st_mtime_ns
    with pytest.raises(SystemExit):
        experiment_cli.main([*argv, "--report-only"])
    assert (run_dir / EVAL_FILE).stat().st_mtime_ns == stamp  # nothing decoded again
    assert "length split: built" not in capsys.readouterr().out  # kept as it was
