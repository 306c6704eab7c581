"""Prefix-forced decoding with a trained model: translations continue the given target
prefix, with the invariants of the other searches (beam 1 is greedy, a batch is each line
alone, the score is forced decoding's), for ensembles, int8 and shortlists too, and bad
prefixes are one-line errors naming the line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import write_lines
from helpers import ROOT, run_module
from test_translator import SENTENCES, checkpoint, translator  # noqa: F401 - shared model

from mtkit.config import ModelConfig
from mtkit.corpus.batching import pad_sequences
from mtkit.errors import ConfigError
from mtkit.model.checkpoint import load_checkpoint, model_from_payload, save_checkpoint
from mtkit.model.seq2seq import Seq2Seq
from mtkit.search import beam_search
from mtkit.search.int8 import int8_available
from mtkit.search.translator import Translator

# The task reverses and upper-cases: "red cat sleeps" -> "SLEEPS CAT RED".
PREFIXES = ["SLEEPS CAT", "", "TREE A", None]
WRONG = ["HOUSE", "DOG", "", "GREEN"]  # prefixes the model would not choose


def assert_prefixed(texts: list[str], prefixes: list[str | None]) -> None:
    for text, prefix in zip(texts, prefixes, strict=True):
        assert text.startswith(prefix or ""), (text, prefix)


@pytest.mark.parametrize("beam", [1, 4])
def test_translations_continue_their_prefix_and_score_as_forced_decoding(
    translator: Translator,  # noqa: F811
    beam: int,
):
    plain = translator.translate(SENTENCES, beam_size=beam)
    assert translator.translate(SENTENCES, beam_size=beam, prefix=PREFIXES) == plain  # chosen
    nbest = min(beam, 3)
    found = translator.translate_nbest(SENTENCES, beam_size=beam, nbest=nbest, prefix=WRONG)
    for sentence, hyps, prefix in zip(SENTENCES, found, WRONG, strict=True):
        assert_prefixed([h.text for h in hyps], [prefix] * len(hyps))
        forced = translator.score([sentence] * len(hyps), hyps, beam_size=beam)
        assert forced == pytest.approx([h.score for h in hyps], abs=1e-4)
    assert found[2][0].text == plain[2]  # an empty prefix is none


def test_with_prefixes_beam_of_one_is_greedy_and_a_batch_is_each_line_alone(
    translator: Translator,  # noqa: F811
):
    greedy = translator.translate_nbest(SENTENCES, beam_size=1, prefix=WRONG)
    src, lengths = pad_sequences(translator.codec.encode_source(SENTENCES))
    prefixes = translator.codec.encode_target(WRONG)
    with translator.inference():
        beam = beam_search(
            translator.stepper, src, lengths, translator.options(beam_size=1), prefixes=prefixes
        )
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    assert [g[0].score for g in greedy] == pytest.approx([b[0].score for b in beam], abs=1e-5)
    together = translator.translate_nbest(SENTENCES, beam_size=4, nbest=2, prefix=WRONG)
    for sentence, prefix, hyps in zip(SENTENCES, WRONG, together, strict=True):
        [alone] = translator.translate_nbest([sentence], beam_size=4, nbest=2, prefix=[prefix])
        assert [h.text for h in alone] == [h.text for h in hyps]
        assert [h.score for h in alone] == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_a_prefix_beyond_the_length_limit_is_the_translation_and_empty_lines_stay_empty(
    translator: Translator,  # noqa: F811
):
    long = " ".join(["GREEN DOG"] * 12)  # more pieces than the cap of 6
    out = translator.translate(["red cat", "", "a tree"], prefix=[long, "RED", None], max_len_cap=6)
    assert out == [long, "", translator.translate(["a tree"], max_len_cap=6)[0]]


def test_bad_prefixes_are_one_line_errors_naming_the_line(
    translator: Translator,  # noqa: F811
):
    cases = [
        (["RED"], "prefix: expected one per text (2), got 1"),
        ("RED", "prefix: expected one per text (2), got a string"),
        (["RED", "CAT 猫"], "prefix of line 2 ('CAT 猫'): the target sentencepiece model does not"),
    ]
    for prefix, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)) as info:
            translator.translate(["red cat", "a tree"], prefix=prefix)
        assert "\n" not in str(info.value)
    # A model whose output layer lacks pieces (model.output_vocab=observed) cannot write them.
    codec = translator.codec
    writes = torch.tensor(sorted({0, 1, 2, 3, *codec.encode_target(["RED CAT"])[0]}))
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=8, encoder_hidden=8, decoder_hidden=8)
    narrow = Seq2Seq(cfg, codec.src.vocab_size, codec.tgt.vocab_size, writes).eval()
    small = Translator(narrow, codec)
    assert small.translate(["red cat"], beam_size=1, prefix=["RED CAT"])[0].startswith("RED CAT")
    with pytest.raises(ConfigError, match=r"prefix of line 1 \('TREE'\): the model never writes"):
        small.translate(["red cat"], beam_size=1, prefix=["TREE"])


def test_a_prefix_outside_a_sentences_shortlist_is_an_error_before_searching(
    checkpoint: Path,  # noqa: F811
    tmp_path: Path,
):
    payload = load_checkpoint(checkpoint)
    model, codec = model_from_payload(payload, str(checkpoint))
    sources, targets = model.encoder.embed.num_embeddings, model.decoder.embed.num_embeddings
    frequent = codec.encode_target(["RED CAT"])[0]  # every sentence may write these, no more
    table = {
        "candidates": torch.full((sources, 1), frequent[0], dtype=torch.int32),
        "frequent": torch.tensor(frequent, dtype=torch.int32),
        "pairs": 0,
    }
    listed = tmp_path / "listed.pt"
    save_checkpoint({**payload, "shortlist": table}, listed)
    shortlisted = Translator.from_checkpoint(listed, shortlist=True)
    assert shortlisted.translate(["cat"], prefix=["RED"])[0].startswith("RED")
    assert targets > len(frequent) + 4
    with pytest.raises(ConfigError, match=r"prefix of line 2: a piece is outside the sentence's"):
        shortlisted.translate(["cat", "red dog"], prefix=["RED", "TREE"])


def test_ensembles_int8_and_helper_processes_force_prefixes_too(
    checkpoint: Path,  # noqa: F811
    translator: Translator,  # noqa: F811
):
    want = translator.translate_nbest(SENTENCES, beam_size=3, prefix=WRONG)
    with Translator.from_checkpoints([checkpoint, checkpoint], [1.0, 2.0]) as pair:
        got = pair.translate_nbest(SENTENCES, beam_size=3, prefix=WRONG)
        assert [h[0].text for h in got] == [h[0].text for h in want]  # one model, twice
        forced = pair.score(SENTENCES, [h[0] for h in got], beam_size=3)
        assert forced == pytest.approx([h[0].score for h in got], abs=1e-4)
    with Translator.from_checkpoint(checkpoint, processes=2) as shared:
        got = shared.translate_nbest(SENTENCES, beam_size=3, prefix=WRONG)
        assert [h[0].text for h in got] == [h[0].text for h in want]
    if not int8_available():
        pytest.skip("no int8 CPU backend in this torch")
    int8 = Translator.from_checkpoint(checkpoint, precision="int8")
    texts = int8.translate(SENTENCES, prefix=WRONG)
    assert_prefixed(texts, WRONG)
    assert texts[1] == int8.translate([SENTENCES[1]], prefix=[WRONG[1]])[0]


def test_the_command_line_reads_one_prefix_per_input_line(
    checkpoint: Path,  # noqa: F811
    translator: Translator,  # noqa: F811
    tmp_path: Path,
):
    source = write_lines(tmp_path / "in.xx", SENTENCES)
    prefixes = write_lines(tmp_path / "prefix.yy", [p or "" for p in WRONG])
    args = [str(checkpoint), "-i", str(source), "--beam-size", "3", "--prefix", str(prefixes)]
    result = run_module("mtkit.translate", *args, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == translator.translate(SENTENCES, beam_size=3, prefix=WRONG)
    short = write_lines(tmp_path / "short.yy", WRONG[:3])
    kept = write_lines(tmp_path / "out.yy", ["an earlier result"])
    args = [str(checkpoint), "-i", str(source), "-o", str(kept), "--prefix", str(short)]
    refused = run_module("mtkit.translate", *args, cwd=ROOT)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert f"--prefix {short} has 3 lines but the input has 4" in refused.stderr
    assert kept.read_text() == "an earlier result\n"  # nothing written over
