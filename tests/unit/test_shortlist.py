"""Lexical shortlists: the counts, the step wrapper's search invariants, checkpoints, CLIs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import tiny_pairs, write_lines
from helpers import tiny_run

import mtkit.search.shortlist.step as shortlist_step
import mtkit.search.shortlist.table as shortlist_table
from mtkit.config import RunConfig
from mtkit.corpus.batching import pad_sequences
from mtkit.corpus.cache import Corpus, load_corpus
from mtkit.corpus.tokenizer import BOS_ID, EOS_ID, UNK_ID
from mtkit.errors import CheckpointError
from mtkit.model.checkpoint import build_payload, save_checkpoint
from mtkit.model.seq2seq import Seq2Seq, build_model
from mtkit.search import beam_search, greedy_search
from mtkit.search.shortlist import Shortlist, Shortlisted, build_shortlist
from mtkit.search.translator import Translator

SENTENCES = [
    "red cat sleeps",
    "the big dog runs near the house",
    "a tree",
    "blue house sees small green dog under a tree",
    "green green tree",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Corpus, Seq2Seq]:
    """The tiny reversal corpus (300 training pairs) and an untrained, seeded model."""
    folder = tmp_path_factory.mktemp("corpus")
    for split, n, seed in (("train", 300, 1), ("valid", 40, 2), ("test", 40, 3)):
        src, tgt = tiny_pairs(n, seed)
        write_lines(folder / f"{split}.xx", src)
        write_lines(folder / f"{split}.yy", tgt)
    run = tiny_run(folder)
    corpus = load_corpus(run.data, run.tokenizer)
    torch.manual_seed(0)
    train = corpus.splits["train"]
    model = build_model(run.model, corpus.codec.src, corpus.codec.tgt, train.tgt_values)
    return run, corpus, model.eval()


def translator(setup: tuple[RunConfig, Corpus, Seq2Seq], table: Shortlist | None) -> Translator:
    run, corpus, model = setup
    stepper = model if table is None else Shortlisted(model, table)
    return Translator(stepper, corpus.codec, run.decode)


def allowed_ids(table: Shortlist, source: list[int]) -> set[int]:
    """A sentence's allowed target ids, straight from the table."""
    ids = {EOS_ID, UNK_ID, *table.frequent.tolist()}
    for piece in source:
        ids |= {c for c in table.candidates[piece].tolist() if c >= 0} if piece >= 4 else set()
    return ids


def test_the_table_equals_a_plain_count(setup, monkeypatch: pytest.MonkeyPatch):
    """Dice over pairs, counted naively, picks the same candidates (chunks merged)."""
    _, corpus, model = setup
    monkeypatch.setattr(shortlist_table, "CHUNK", 7)  # many chunks, many merges
    table = build_shortlist(corpus.splits["train"], model, k=3, frequent=4)
    train = corpus.splits["train"]
    column = model.column_of.tolist()
    ids = model.output_ids.tolist()
    together: Counter[tuple[int, int]] = Counter()
    in_pairs_src: Counter[int] = Counter()
    in_pairs_tgt: Counter[int] = Counter()
    tokens: Counter[int] = Counter()
    for i in range(len(train)):
        src = {s for s in train.source(i).tolist() if s >= 4}
        targets = [column[t] for t in train.target(i).tolist()]
        tokens.update(targets)
        in_pairs_src.update(src)
        in_pairs_tgt.update(set(targets))
        together.update((s, t) for s in src for t in set(targets))
    frequent = [c for c, _ in sorted(tokens.items(), key=lambda item: (-item[1], item[0]))[:4]]
    assert table.frequent.tolist() == [ids[c] for c in frequent]
    for s in range(table.candidates.size(0)):
        scored = [
            (-2.0 * n / (in_pairs_src[s] + in_pairs_tgt[t]), t)
            for (source, t), n in together.items()
            if source == s and n >= shortlist_table.MIN_COUNT and t not in frequent
        ]
        expected = [ids[t] for _, t in sorted(scored)[:3]]
        assert table.candidates[s].tolist() == expected + [-1] * (3 - len(expected))
    assert table.pairs == len(train)
    assert build_shortlist(train, model, k=3, frequent=4, max_pairs=10).pairs == 10


def test_with_every_column_allowed_search_equals_the_plain_model(setup):
    _, _, model = setup
    none = torch.full((model.encoder.embed.num_embeddings, 1), -1, dtype=torch.int32)
    everything = Shortlist(none, model.output_ids.int(), 0)
    plain, listed = translator(setup, None), translator(setup, everything)
    for beam in (1, 3):
        a = plain.translate_nbest(SENTENCES, beam_size=beam, nbest=beam)
        b = listed.translate_nbest(SENTENCES, beam_size=beam, nbest=beam)
        assert [[(h.tokens, h.score) for h in hs] for hs in a] == [
            [(h.tokens, h.score) for h in hs] for hs in b
        ]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_search_invariants_hold_with_a_shortlist(
    setup, precision: str, monkeypatch: pytest.MonkeyPatch
):
    """Beam 1 is greedy; a batch decodes as one sentence at a time; outputs stay allowed."""
    run, corpus, model = setup
    monkeypatch.setattr(shortlist_step, "GROUP_ROWS", 2)  # a batch of several row groups
    table = build_shortlist(corpus.splits["train"], model, k=2, frequent=3)
    listed = Translator(Shortlisted(model, table), corpus.codec, run.decode, precision=precision)
    src, lengths = pad_sequences(corpus.codec.encode_source(SENTENCES))
    options = listed.options(beam_size=1)
    greedy = greedy_search(listed.stepper, src, lengths, options)
    beam = beam_search(listed.stepper, src, lengths, options)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    assert [g[0].score for g in greedy] == pytest.approx([b[0].score for b in beam], abs=1e-5)
    for beam_size in (1, 3):
        together = listed.translate_nbest(SENTENCES, beam_size=beam_size, nbest=beam_size)
        for sentence, hyps in zip(SENTENCES, together, strict=True):
            [alone] = listed.translate_nbest([sentence], beam_size=beam_size, nbest=beam_size)
            assert [h.tokens for h in alone] == [h.tokens for h in hyps]
            assert [h.score for h in alone] == pytest.approx([h.score for h in hyps], abs=1e-4)
            allowed = allowed_ids(table, corpus.codec.encode_source([sentence])[0])
            assert all(set(h.tokens) <= allowed for h in hyps)
    stepper = listed.stepper
    with torch.inference_mode():  # the first step: each row is normalised over its own set
        enc = stepper.encode(src, lengths)
        log_probs, _, _ = stepper.step(
            torch.full((len(SENTENCES),), BOS_ID), stepper.init_state(enc), enc
        )
    for row, source in enumerate(corpus.codec.encode_source(SENTENCES)):
        finite = log_probs[row].isfinite().nonzero().squeeze(1)
        assert set(model.output_ids[finite].tolist()) == allowed_ids(table, source)
        assert float(log_probs[row, finite].logsumexp(0)) == pytest.approx(0.0, abs=1e-5)
    assert len(allowed_ids(table, [])) < len(model.output_ids) / 2  # it does narrow


def test_joined_encodings_step_as_one_batch(setup, monkeypatch: pytest.MonkeyPatch):
    """``cat`` (a service joining batches) gives the rows what one encoding gives them."""
    _, corpus, model = setup
    monkeypatch.setattr(shortlist_step, "GROUP_ROWS", 3)
    stepper = Shortlisted(model, build_shortlist(corpus.splits["train"], model, k=2, frequent=3))
    sources = corpus.codec.encode_source(SENTENCES)
    with torch.inference_mode():
        parts = [stepper.encode(*pad_sequences(sources[a:b])) for a, b in ((0, 2), (2, 5))]
        joined = parts[0].cat(parts[1])
        whole = stepper.encode(*pad_sequences(sources))
        prev = torch.full((len(SENTENCES),), BOS_ID)
        expected, _, _ = stepper.step(prev, stepper.init_state(whole), whole)
        got, _, _ = stepper.step(prev, stepper.init_state(joined), joined)
    assert torch.equal(got.isfinite(), expected.isfinite())
    assert torch.allclose(got[got.isfinite()], expected[expected.isfinite()], atol=1e-5)


def test_the_shortlist_round_trips_through_a_checkpoint(setup, tmp_path: Path):
    run, corpus, model = setup
    table = build_shortlist(corpus.splits["train"], model, k=2, frequent=3)
    plain_file, listed_file = tmp_path / "plain.pt", tmp_path / "listed.pt"
    payload = build_payload(model, corpus.codec, run)
    save_checkpoint(payload, plain_file)
    save_checkpoint({**payload, "shortlist": table.to_state()}, listed_file)
    loaded = Translator.from_checkpoint(listed_file, shortlist=True)
    assert isinstance(loaded.model, Shortlisted)
    assert torch.equal(loaded.model.shortlist.candidates, table.candidates)
    assert torch.equal(loaded.model.shortlist.frequent, table.frequent)
    expected = translator(setup, table).translate(SENTENCES, beam_size=3)
    assert loaded.translate(SENTENCES, beam_size=3) == expected
    old = Translator.from_checkpoint(plain_file)  # a checkpoint without one still loads
    assert old.translate(SENTENCES, beam_size=3) == translator(setup, None).translate(
        SENTENCES, beam_size=3
    )
    with pytest.raises(CheckpointError, match=r"plain\.pt: holds no shortlist.*mtkit-shortlist"):
        Translator.from_checkpoint(plain_file, shortlist=True)
    damaged = {**payload, "shortlist": {"candidates": table.candidates + 10_000}}
    save_checkpoint(damaged, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="damaged checkpoint"):
        Translator.from_checkpoint(tmp_path / "damaged.pt", shortlist=True)


def overrides(run: RunConfig) -> list[str]:
    """The data settings of ``run`` as command-line overrides."""
    return [
        "data=local",
        f"data.dir={run.data.dir}",
        "data.src_lang=xx",
        "data.tgt_lang=yy",
        f"data.max_len={run.data.max_len}",
        f"tokenizer.vocab_size={run.tokenizer.vocab_size}",
    ]


def one_line_error(capsys: pytest.CaptureFixture[str], main, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1
    return lines[0]


def test_the_command_writes_a_copy_and_refuses_bad_input(
    setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from mtkit.shortlist import main
    from mtkit.translate import main as translate_main

    run, corpus, model = setup
    source = tmp_path / "model.pt"
    save_checkpoint(build_payload(model, corpus.codec, run), source)
    out = tmp_path / "listed.pt"
    with pytest.raises(SystemExit) as done:
        main([str(source), "-o", str(out), "--k", "2", "--frequent", "3", *overrides(run)])
    assert done.value.code == 0
    report = capsys.readouterr().err
    assert "validation coverage" in report and "from all 300 training pairs" in report
    table = Translator.from_checkpoint(out, shortlist=True).model.shortlist  # type: ignore[union-attr]
    assert torch.equal(
        table.candidates, build_shortlist(corpus.splits["train"], model, 2, 3).candidates
    )
    assert "--k must be >= 1" in one_line_error(
        capsys, main, [str(source), "-o", str(out), "--k", "0"]
    )
    bad = one_line_error(capsys, main, [str(source), "-o", str(out), "--frequent", "-1"])
    assert "--frequent must be >= 0" in bad
    same = one_line_error(capsys, main, [str(source), "-o", str(source), *overrides(run)])
    assert "is the input checkpoint" in same
    missing = one_line_error(capsys, main, [str(tmp_path / "no.pt"), "-o", str(out)])
    assert "no such checkpoint file" in missing
    other = [*overrides(run)[:-1], "tokenizer.vocab_size=50"]
    assert "another sentencepiece model" in one_line_error(
        capsys, main, [str(source), "-o", str(out), *other]
    )
    text = write_lines(tmp_path / "in.txt", SENTENCES)
    refused = one_line_error(capsys, translate_main, [str(source), "--shortlist", "-i", str(text)])
    assert "holds no shortlist" in refused and "mtkit-shortlist" in refused
    ensemble = one_line_error(
        capsys, translate_main, [str(out), str(out), "--shortlist", "-i", str(text)]
    )
    assert "--shortlist works with one checkpoint" in ensemble
