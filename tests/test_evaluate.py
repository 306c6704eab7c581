"""``mtkit.evaluate`` as sacreBLEU: several references, chosen metrics, paired tests
against a baseline, and one-line refusals of files that do not line up."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import write_lines
from helpers import ROOT, run_module
from sacrebleu.metrics import BLEU

REFS_A = ["the cat sat on the mat", "a dog runs in the park", "hello world", "it is a test"] * 15
REFS_B = ["a cat sat on the mat", "the dog is running in a park", "hi world", "this is a test"] * 15
SYSTEM = ["the cat sat on the mat", "a dog runs in a park", "hello world", "it is a test"] * 15
BASELINE = ["the cat sat on a mat", "a dog walks in a park", "hello world", "it is test"] * 15


def evaluate(tmp_path: Path, *args: str) -> dict:
    done = run_module("mtkit.evaluate", *args, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def files(tmp_path: Path) -> dict[str, str]:
    named = {"ref_a": REFS_A, "ref_b": REFS_B, "sys": SYSTEM, "base": BASELINE}
    return {
        name: str(write_lines(tmp_path / f"{name}.txt", lines)) for name, lines in named.items()
    }


def test_several_references_score_as_sacrebleu_scores_them(tmp_path: Path):
    f = files(tmp_path)
    report = evaluate(tmp_path, "--hyp", f["sys"], "--ref", f["ref_a"], f["ref_b"],
                      "--metrics", "bleu")  # fmt: skip
    [score] = report["scores"]
    want = BLEU().corpus_score(SYSTEM, [REFS_A, REFS_B]).score
    assert score["name"] == "BLEU" and score["score"] == round(want, 4)
    assert "nrefs:2" in score["signature"]
    assert report["nrefs"] == 2 and report["references"] == [f["ref_a"], f["ref_b"]]
    one = evaluate(tmp_path, "--hyp", f["sys"], "--ref", f["ref_a"], "--metrics", "bleu")
    assert one["scores"][0]["score"] < score["score"]  # a second reference only adds matches
    chosen = evaluate(tmp_path, "--hyp", f["sys"], "--ref", f["ref_a"], "--metrics", "chrf", "ter")
    assert [s["name"] for s in chosen["scores"]] == ["chrF", "TER"]


def test_a_baseline_adds_sacrebleus_paired_tests(tmp_path: Path):
    f = files(tmp_path)
    report = evaluate(tmp_path, "--hyp", f["sys"], "--ref", f["ref_a"], "--baseline", f["base"],
                      "--metrics", "bleu", "chrf", "--paired-test", "both",
                      "--paired-samples", "200")  # fmt: skip
    paired = report["paired"]
    assert [(p["test"], p["metric"]) for p in paired] == [
        ("bootstrap", "BLEU"), ("bootstrap", "chrF2"),
        ("randomization", "BLEU"), ("randomization", "chrF2"),
    ]  # fmt: skip
    assert all(p["system"] > p["baseline"] and p["p_value"] < 0.05 for p in paired)
    assert all(p["samples"] == 200 for p in paired) and "system_ci" in paired[0]
    assert "system_ci" not in paired[2]  # randomization gives a p-value only
    same = evaluate(tmp_path, "--hyp", f["sys"], "--ref", f["ref_a"], "--baseline", f["sys"],
                    "--metrics", "bleu", "--paired-samples", "100")  # fmt: skip
    assert same["paired"][0]["p_value"] == 1.0
    text = run_module("mtkit.evaluate", "--hyp", f["sys"], "--ref", f["ref_a"],
                      "--baseline", f["base"], "--metrics", "bleu", "--paired-samples", "100",
                      cwd=tmp_path)  # fmt: skip
    assert text.returncode == 0, text.stderr
    last = text.stdout.strip().splitlines()[-1]
    assert last.startswith(f"paired bootstrap (100 samples) against {f['base']}: BLEU ")
    assert "p = 0.0099" in last  # the smallest p-value of 100 samples: 1 / 101


def test_files_that_do_not_line_up_are_one_line_errors(tmp_path: Path):
    f = files(tmp_path)
    short = str(write_lines(tmp_path / "short.txt", REFS_A[:5]))
    cases = [
        (["--hyp", f["sys"], "--ref", f["ref_a"], short], f"{short} has 5 lines but"),
        (["--hyp", f["sys"], "--ref", f["ref_a"], "--baseline", short],
         f"{short} has 5 lines but {f['ref_a']} has 60"),
        (["--hyp", f["sys"], "--ref", f["ref_a"], "--paired-samples", "10"],
         "--paired-samples applies to a paired test"),
        (["--hyp", f["sys"], "--ref", f["ref_a"], "--baseline", f["base"],
          "--paired-samples", "0"], "--paired-samples"),
        (["--hyp", f["sys"], "--ref", f["ref_a"], "--metrics", "meteor"], "meteor"),
    ]  # fmt: skip
    for args, message in cases:
        done = run_module("mtkit.evaluate", *args, cwd=ROOT)
        assert done.returncode != 0, args
        assert "Traceback" not in done.stderr
        assert message in done.stderr.strip().splitlines()[-1], done.stderr
