"""Sampled decoding with a trained model: seeded and reproducible (the same seed gives the
same output, in any batch and any number of processes), scored as forced decoding,
greedy in the limits (top_k=1, a temperature near 0), and checked as a search option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import write_lines
from helpers import ROOT, run_module
from test_translator import SENTENCES, checkpoint, translator  # noqa: F401 - shared model

from mtkit.config import DecodeConfig
from mtkit.errors import ConfigError
from mtkit.search.translator import Translator

LINES = [*SENTENCES, "red cat", "", "green dog sees a big tree"]


def test_a_seed_gives_the_same_samples_in_any_batch_and_another_seed_others(
    translator: Translator,  # noqa: F811
):
    first = translator.translate(LINES, sampling=True, seed=5)
    assert translator.translate(LINES, sampling=True, seed=5) == first
    alone = [translator.translate([line], sampling=True, seed=5)[0] for line in LINES]
    assert alone == first
    assert translator.translate(LINES, sampling=True, seed=5, batch_tokens=8) == first
    assert first[5] == ""  # empty in, empty out
    others = [translator.translate(LINES, sampling=True, seed=s) for s in (6, 7)]
    assert others[0] != first and others[1] != first
    hot = translator.translate(LINES, sampling=True, seed=5, temperature=3.0)
    assert hot != first  # a flatter distribution, other draws


def test_samples_are_scored_as_forced_decoding_and_follow_prefixes(
    translator: Translator,  # noqa: F811
):
    found = translator.translate_nbest(SENTENCES, sampling=True, seed=1, temperature=2.0, top_k=5)
    forced = translator.score(SENTENCES, [h[0] for h in found])
    assert forced == pytest.approx([h[0].score for h in found], abs=1e-4)
    prefixed = translator.translate(SENTENCES, sampling=True, seed=1, prefix=["DOG"] * 4)
    assert all(text.startswith("DOG") for text in prefixed)


def test_top_one_and_a_cold_temperature_sample_what_greedy_search_finds(
    translator: Translator,  # noqa: F811
):
    greedy = translator.translate(LINES, beam_size=1)
    assert translator.translate(LINES, sampling=True, top_k=1, seed=9) == greedy
    assert translator.translate(LINES, sampling=True, temperature=1e-4, seed=9) == greedy


def test_helper_processes_sample_what_one_process_does(
    checkpoint: Path,  # noqa: F811
    translator: Translator,  # noqa: F811
):
    want = translator.translate(LINES, sampling=True, seed=3, top_k=10)
    with Translator.from_checkpoint(checkpoint, processes=2) as shared:
        assert shared.translate(LINES, sampling=True, seed=3, top_k=10) == want


def test_sampling_options_are_checked_by_name(translator: Translator):  # noqa: F811
    ranked = Translator(translator.model, translator.codec, DecodeConfig(coverage_penalty=0.2))
    options = ranked.options(sampling=True)  # a beam of 1 and no coverage unless given
    assert (options.beam_size, options.coverage_penalty) == (1, 0.0)
    bad = [
        ({"sampling": True, "beam_size": 4}, "decode.beam_size=4 is not valid; expected 1 with"),
        ({"sampling": True, "coverage_penalty": 0.1}, "decode.coverage_penalty=0.1 is not valid"),
        ({"sampling": True, "temperature": 0.0}, "decode.temperature=0.0 is not valid"),
        ({"sampling": True, "top_k": -2}, "decode.top_k=-2 is not valid"),
        ({"sampling": True, "seed": -1}, "decode.seed=-1 is not valid"),
        ({"sampling": "yes"}, "decode.sampling='yes' is not valid; expected true or false"),
    ]
    for changes, message in bad:
        with pytest.raises(ConfigError, match=re.escape(message)) as info:
            translator.translate(["red cat"], **changes)
        assert "\n" not in str(info.value)


def test_the_command_line_samples_as_the_translator_does(
    checkpoint: Path,  # noqa: F811
    translator: Translator,  # noqa: F811
    tmp_path: Path,
):
    source = write_lines(tmp_path / "in.xx", LINES)
    flags = ["--sampling", "--seed", "4", "--top-k", "8", "--temperature", "1.5"]
    result = run_module("mtkit.translate", str(checkpoint), "-i", str(source), *flags, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    want = translator.translate(LINES, sampling=True, seed=4, top_k=8, temperature=1.5)
    assert result.stdout.splitlines() == want
    for bad, message in (
        (["--seed", "4"], "--temperature, --top-k and --seed need --sampling"),
        (["--sampling", "--nbest", "2"], "--sampling draws one translation per line"),
        (["--sampling", "--top-k", "-1"], "--top-k: decode.top_k=-1 is not valid"),
    ):
        refused = run_module("mtkit.translate", str(checkpoint), "-i", str(source), *bad, cwd=ROOT)
        assert refused.returncode == 2 and message in refused.stderr
