"""The data pipeline: readers, cleaning, subword encoding, formats and the corpus cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import torch
from conftest import tiny_pairs, write_lines

import mtkit.corpus.cache
from mtkit import runtime
from mtkit.config import DATA_DIR, DataConfig, TokenizerConfig
from mtkit.corpus.batching import collate
from mtkit.corpus.cache import Corpus, load_corpus
from mtkit.corpus.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    SubwordModel,
    TextCodec,
    source_ids,
    train_subword_model,
)
from mtkit.errors import ConfigError, DataError

TOK = TokenizerConfig(vocab_size=100)


def dir_cfg(directory: Path, **overrides: object) -> DataConfig:
    values: dict[str, object] = {"dir": str(directory), "src_lang": "xx", "tgt_lang": "yy"}
    values.update(overrides)
    return DataConfig(**values)  # type: ignore[arg-type]


def split_ids(corpus: Corpus, role: str) -> list[tuple[list[int], list[int]]]:
    split = corpus.splits[role]
    return [(split.source(i).tolist(), split.target(i).tolist()) for i in range(len(split))]


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------------------
# source reversal, EOS, BOS


def test_source_ids_reverses_pieces_before_eos() -> None:
    assert source_ids([10, 11, 12], reverse=True) == [12, 11, 10, EOS_ID]
    assert source_ids([10, 11, 12], reverse=False) == [10, 11, 12, EOS_ID]
    assert source_ids([], reverse=True) == [EOS_ID]


@pytest.mark.parametrize("reverse", [True, False])
def test_load_corpus_source_reversed_and_target_untouched(
    tiny_corpus_dir: Path, tmp_path: Path, reverse: bool
) -> None:
    corpus = load_corpus(dir_cfg(tiny_corpus_dir, reverse_source=reverse), TOK, tmp_path / "cache")
    assert corpus.stats["reverse_source"] is reverse
    assert corpus.codec.reverse_source is reverse
    for role in ("train", "valid", "test"):
        src_text = read_lines(tiny_corpus_dir / f"{role}.xx")
        tgt_text = read_lines(tiny_corpus_dir / f"{role}.yy")
        src_pieces = corpus.codec.src.encode(src_text)
        tgt_pieces = corpus.codec.tgt.encode(tgt_text)
        stored = split_ids(corpus, role)
        assert len(stored) == len(src_text)
        for (src, tgt), pieces, target in zip(stored, src_pieces, tgt_pieces, strict=True):
            assert len(pieces) >= 2  # every tiny sentence has >= 2 words: order matters
            body = pieces[::-1] if reverse else pieces
            assert src == [*body, EOS_ID]
            assert tgt == target
            assert EOS_ID not in tgt and BOS_ID not in tgt


def test_reversal_changes_only_the_source(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    forward = load_corpus(dir_cfg(tiny_corpus_dir, reverse_source=False), TOK, tmp_path / "c")
    backward = load_corpus(dir_cfg(tiny_corpus_dir, reverse_source=True), TOK, tmp_path / "c")
    for (fs, ft), (bs, bt) in zip(
        split_ids(forward, "train"), split_ids(backward, "train"), strict=True
    ):
        assert ft == bt
        assert bs == [*fs[-2::-1], EOS_ID]


def test_encode_source_matches_stored_ids(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    """Translation encodes text the way training stored it."""
    corpus = load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    text = read_lines(tiny_corpus_dir / "valid.xx")
    assert corpus.codec.encode_source(text) == [s for s, _ in split_ids(corpus, "valid")]


def test_small_and_large_batches_encode_and_decode_alike() -> None:
    """Below SERIAL_BELOW texts are encoded one by one: the ids and texts are the same."""
    from mtkit.corpus.tokenizer import SERIAL_BELOW

    sentences = [f"the cat {i} sees the dog number {i * 7}" for i in range(2 * SERIAL_BELOW)]
    model = SubwordModel(train_subword_model(sentences, TokenizerConfig(vocab_size=60)))
    batched = model.encode(sentences)  # the threaded batch API
    assert len(sentences) >= SERIAL_BELOW
    one_by_one = [model.encode([text])[0] for text in sentences]
    assert one_by_one == batched
    assert model.encode(sentences[:3]) == batched[:3]
    assert model.decode(batched) == [model.decode([ids])[0] for ids in batched]
    assert model.decode(batched[:3]) == model.decode(batched)[:3]
    assert model.encode([]) == [] and model.decode([]) == []


def test_collate_places_bos_eos_and_pads() -> None:
    sources = [np.array([7, 6, 5, EOS_ID]), np.array([9, EOS_ID])]
    targets = [np.array([11, 12]), np.array([13, 14, 15, 16])]
    batch = collate(sources, targets)
    assert batch.src.tolist() == [[7, 6, 5, EOS_ID], [9, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.src_lengths.tolist() == [4, 2]
    assert batch.tgt_in.tolist() == [
        [BOS_ID, 11, 12, PAD_ID, PAD_ID],
        [BOS_ID, 13, 14, 15, 16],
    ]
    assert batch.tgt_out.tolist() == [
        [11, 12, EOS_ID, PAD_ID, PAD_ID],
        [13, 14, 15, 16, EOS_ID],
    ]
    assert batch.tgt_mask.tolist() == [[True, True, True, False, False], [True] * 5]
    assert batch.n_tgt_tokens == 8  # pieces + EOS (equivalently BOS + pieces)
    assert batch.src.dtype == batch.tgt_in.dtype == torch.int64


def test_collate_of_stored_split(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    corpus = load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    split = corpus.splits["valid"]
    indices = [0, 3, 5]
    batch = collate([split.source(i) for i in indices], [split.target(i) for i in indices])
    for row, i in enumerate(indices):
        n_tgt = len(split.target(i))
        assert batch.tgt_in[row, : n_tgt + 1].tolist() == [BOS_ID, *split.target(i).tolist()]
        assert batch.tgt_out[row, : n_tgt + 1].tolist() == [*split.target(i).tolist(), EOS_ID]
        assert int(batch.tgt_mask[row].sum()) == n_tgt + 1 == split.tgt_lengths[i]
        assert int(batch.src_lengths[row]) == split.src_lengths[i] == len(split.source(i))
    assert batch.n_tgt_tokens == int(split.tgt_lengths[indices].sum())


# --------------------------------------------------------------------------------------
# cleaning: empty pairs, whitespace, over-long pairs


def test_empty_pairs_dropped_counted_and_alignment_kept(tmp_path: Path) -> None:
    src, tgt = tiny_pairs(60, seed=5)
    vsrc = ["red cat", "", "blue dog  ", "   ", "big tree", "the house\t", "a cat"]
    vtgt = ["CAT RED", "DOG BLUE", "", "\t ", "TREE BIG", "  HOUSE THE", "CAT A"]
    write_lines(tmp_path / "valid.xx", vsrc)
    write_lines(tmp_path / "valid.yy", vtgt)
    # an empty line in the middle of the training data, on the target side only
    tsrc, ttgt = list(src), list(tgt)
    tsrc.insert(10, "green tree sees")
    ttgt.insert(10, "   ")
    write_lines(tmp_path / "train.xx", tsrc)
    write_lines(tmp_path / "train.yy", ttgt)

    corpus = load_corpus(dir_cfg(tmp_path, test_split=None), TOK, tmp_path / "cache")
    assert corpus.stats["valid_empty_dropped"] == 3
    assert corpus.stats["train_empty_dropped"] == 1
    assert corpus.stats["valid_pairs"] == 4
    assert corpus.stats["train_pairs"] == 60
    assert "test" not in corpus.splits
    valid = corpus.splits["valid"]
    assert valid.texts("src") == ["red cat", "big tree", "the house", "a cat"]
    assert valid.texts("tgt") == ["CAT RED", "TREE BIG", "HOUSE THE", "CAT A"]
    # the training pairs after the dropped line are still aligned
    train = corpus.splits["train"]
    expected_tgt = corpus.codec.tgt.encode(tgt)
    expected_src = corpus.codec.encode_source(src)
    assert [train.target(i).tolist() for i in range(len(train))] == expected_tgt
    assert [train.source(i).tolist() for i in range(len(train))] == expected_src


def test_trailing_whitespace_and_crlf_stripped(tmp_path: Path) -> None:
    src, tgt = tiny_pairs(40, seed=6)
    write_lines(tmp_path / "train.xx", src)
    write_lines(tmp_path / "train.yy", tgt)
    (tmp_path / "valid.xx").write_bytes(b"red cat  \r\n  blue dog\t\r\n")
    (tmp_path / "valid.yy").write_bytes(b"CAT RED\r\nDOG BLUE \n")
    corpus = load_corpus(dir_cfg(tmp_path, test_split=None), TOK, tmp_path / "cache")
    valid = corpus.splits["valid"]
    assert valid.texts("src") == ["red cat", "blue dog"]
    assert valid.texts("tgt") == ["CAT RED", "DOG BLUE"]
    assert corpus.stats["valid_empty_dropped"] == 0


def test_long_pairs_dropped_from_train_only(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    max_len = 5
    corpus = load_corpus(dir_cfg(tiny_corpus_dir, max_len=max_len), TOK, tmp_path / "cache")
    src = corpus.codec.src.encode(read_lines(tiny_corpus_dir / "train.xx"))
    tgt = corpus.codec.tgt.encode(read_lines(tiny_corpus_dir / "train.yy"))
    keep = [
        (source_ids(s, True), t)
        for s, t in zip(src, tgt, strict=True)
        if len(s) <= max_len and len(t) <= max_len
    ]
    n_long = len(src) - len(keep)
    assert 0 < n_long < len(src)
    assert corpus.stats["train_long_dropped"] == n_long
    assert corpus.stats["train_pairs"] == len(keep) == len(corpus.splits["train"])
    assert split_ids(corpus, "train") == keep
    train = corpus.splits["train"]
    assert int(train.src_lengths.max()) <= max_len + 1  # + EOS
    assert int(train.tgt_lengths.max()) <= max_len + 1
    # validation keeps everything, long pairs included
    valid = corpus.splits["valid"]
    assert len(valid) == 40
    assert int(valid.src_lengths.max()) > max_len + 1


def test_pairs_exactly_at_max_len_are_kept(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    corpus = load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    longest = int(
        max(
            corpus.splits["train"].src_lengths.max() - 1,
            corpus.splits["train"].tgt_lengths.max() - 1,
        )
    )
    at_limit = load_corpus(dir_cfg(tiny_corpus_dir, max_len=longest), TOK, tmp_path / "cache")
    assert at_limit.stats["train_long_dropped"] == 0
    below = load_corpus(dir_cfg(tiny_corpus_dir, max_len=longest - 1), TOK, tmp_path / "cache")
    assert below.stats["train_long_dropped"] > 0


# --------------------------------------------------------------------------------------
# errors


def test_line_count_mismatch_names_both_files_and_counts(
    tiny_corpus_dir: Path, tmp_path: Path
) -> None:
    write_lines(tiny_corpus_dir / "valid.yy", tiny_pairs(40, 2)[1][:37])
    with pytest.raises(DataError) as info:
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    message = str(info.value)
    assert str(tiny_corpus_dir / "valid.xx") in message
    assert str(tiny_corpus_dir / "valid.yy") in message
    assert "40" in message and "37" in message


@pytest.mark.parametrize("extra", [2, 5])
def test_line_count_mismatch_longer_source(
    tiny_corpus_dir: Path, tmp_path: Path, extra: int
) -> None:
    src = tiny_pairs(40, 2)[0]
    write_lines(tiny_corpus_dir / "valid.xx", src + src[:extra])
    with pytest.raises(DataError, match=rf"valid\.xx has {40 + extra} lines .*valid\.yy has 40"):
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")


def test_line_count_mismatch_source_one_line_longer(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    src = tiny_pairs(40, 2)[0]
    write_lines(tiny_corpus_dir / "valid.xx", [*src, "one line too many"])
    with pytest.raises(DataError, match=r"valid\.xx has 41 lines .*valid\.yy has 40"):
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")


def test_missing_file_names_the_path(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    (tiny_corpus_dir / "test.yy").unlink()
    with pytest.raises(DataError) as info:
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    assert str(tiny_corpus_dir / "test.yy") in str(info.value)
    assert "no such file" in str(info.value)


def test_missing_directory_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=str(missing)):
        load_corpus(dir_cfg(missing), TOK, tmp_path / "cache")


def test_missing_file_in_files_format_named(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    d = tiny_corpus_dir
    cfg = DataConfig(
        format="files",
        train=[str(d / "train.xx"), str(d / "train.yy")],
        valid=[str(d / "valid.xx"), str(d / "nope.yy")],
        src_lang="xx",
        tgt_lang="yy",
    )
    with pytest.raises(DataError, match=str(d / "nope.yy")):
        load_corpus(cfg, TOK, tmp_path / "cache")


@pytest.mark.parametrize("side", ["xx", "yy"])
def test_invalid_utf8_names_file_and_line(tiny_corpus_dir: Path, tmp_path: Path, side: str) -> None:
    bad = tiny_corpus_dir / f"train.{side}"
    lines = bad.read_bytes().splitlines(keepends=True)
    lines[6] = b"ok \xff\xfe bad\n"
    bad.write_bytes(b"".join(lines))
    with pytest.raises(DataError) as info:
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    message = str(info.value)
    assert f"{bad}:7:" in message
    assert "UTF-8" in message


def test_invalid_utf8_second_line(tmp_path: Path) -> None:
    (tmp_path / "train.xx").write_bytes(b"ok\n\xff\xfe bad\n")
    write_lines(tmp_path / "train.yy", ["OK", "BAD"])
    write_lines(tmp_path / "valid.xx", ["ok"])
    write_lines(tmp_path / "valid.yy", ["OK"])
    with pytest.raises(DataError, match=rf"^{tmp_path / 'train.xx'}:2: invalid UTF-8"):
        load_corpus(dir_cfg(tmp_path, test_split=None), TOK, tmp_path / "cache")


@pytest.mark.parametrize("role", ["train", "valid"])
def test_split_without_usable_pairs(tiny_corpus_dir: Path, tmp_path: Path, role: str) -> None:
    write_lines(tiny_corpus_dir / f"{role}.xx", ["red cat", "", "  ", "blue"])
    write_lines(tiny_corpus_dir / f"{role}.yy", ["", "CAT", "DOG", "\t"])
    with pytest.raises(DataError) as info:
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    message = str(info.value)
    assert f"{role} split has no usable sentence pairs" in message
    assert str(tiny_corpus_dir / f"{role}.xx") in message


def test_empty_file_is_an_unusable_split(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    (tiny_corpus_dir / "valid.xx").write_bytes(b"")
    (tiny_corpus_dir / "valid.yy").write_bytes(b"")
    with pytest.raises(DataError, match="valid split has no usable sentence pairs"):
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")


def test_no_pair_within_max_len(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    # every tiny sentence has at least two words
    with pytest.raises(DataError, match=r"data\.max_len=1"):
        load_corpus(dir_cfg(tiny_corpus_dir, max_len=1), TOK, tmp_path / "cache")


def test_tsv_line_without_tab_names_file_and_line(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "train.tsv", ["red cat\tCAT RED", "blue dog DOG BLUE"])
    valid = write_lines(tmp_path / "valid.tsv", ["red cat\tCAT RED"])
    cfg = DataConfig(
        format="tsv", train=[str(train)], valid=[str(valid)], src_lang="xx", tgt_lang="yy"
    )
    with pytest.raises(DataError, match=rf"^{train}:2: expected 'source<TAB>target'"):
        load_corpus(cfg, TOK, tmp_path / "cache")


def test_tsv_line_with_two_tabs_names_file_and_line(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "train.tsv", ["a\tA", "b\tB", "c\tC\tC"])
    valid = write_lines(tmp_path / "valid.tsv", ["a\tA"])
    cfg = DataConfig(
        format="tsv", train=[str(train)], valid=[str(valid)], src_lang="xx", tgt_lang="yy"
    )
    with pytest.raises(DataError, match=rf"^{train}:3: .*found 3"):
        load_corpus(cfg, TOK, tmp_path / "cache")


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ('{"translation": {"xx": "red cat", "yy": ', "invalid JSON"),
        ('{"translation": {"xx": "red cat"}}', "expected string values"),
        ('{"translation": {"xx": "red cat", "yy": 3}}', "expected string values"),
        ('{"xx": "red cat", "yy": "CAT RED"}', "expected an object like"),
        ('["red cat", "CAT RED"]', "expected an object like"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, bad_line: str, expected: str) -> None:
    good = json.dumps({"translation": {"xx": "blue dog", "yy": "DOG BLUE"}})
    train = write_lines(tmp_path / "train.jsonl", [good, good, bad_line, good])
    valid = write_lines(tmp_path / "valid.jsonl", [good])
    cfg = DataConfig(
        format="jsonl", train=[str(train)], valid=[str(valid)], src_lang="xx", tgt_lang="yy"
    )
    with pytest.raises(DataError) as info:
        load_corpus(cfg, TOK, tmp_path / "cache")
    assert str(info.value).startswith(f"{train}:3: ")
    assert expected in str(info.value)


def test_hf_unknown_split_lists_available(tmp_path: Path) -> None:
    path = save_hf_translation(tmp_path / "ds", {"train": 30, "validation": 5})
    cfg = DataConfig(format="hf", name=str(path), src_lang="xx", tgt_lang="yy")  # valid_split=valid
    with pytest.raises(DataError) as info:
        load_corpus(cfg, TOK, tmp_path / "cache")
    message = str(info.value)
    assert "'valid'" in message and "data.valid_split" in message
    assert "available: train, validation" in message


def test_hf_missing_language_named(tmp_path: Path) -> None:
    path = save_hf_columns(tmp_path / "ds")
    cfg = DataConfig(
        format="hf", name=str(path), src_lang="xx", tgt_lang="zz", valid_split="validation"
    )
    with pytest.raises(DataError, match="expected 'translation' or 'xx' and 'zz'"):
        load_corpus(cfg, TOK, tmp_path / "cache")


def test_files_format_needs_a_validation_pair(tiny_corpus_dir: Path) -> None:
    d = tiny_corpus_dir
    with pytest.raises(ConfigError, match=r"data\.valid=\[\] is not valid"):
        DataConfig(
            format="files",
            train=[str(d / "train.xx"), str(d / "train.yy")],
            valid=[],
            src_lang="xx",
            tgt_lang="yy",
        )


def test_a_corpus_needs_a_validation_split(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    cfg = dir_cfg(tiny_corpus_dir)
    cfg.valid_split = None  # type: ignore[assignment]
    with pytest.raises(DataError, match="validation split"):
        load_corpus(cfg, TOK, tmp_path / "cache")


def test_tsv_pair_with_one_empty_side_is_dropped(tmp_path: Path) -> None:
    src, tgt = tiny_pairs(30, 4)
    lines = [f"{s}\t{t}" for s, t in zip(src, tgt, strict=True)]
    train = write_lines(tmp_path / "train.tsv", [*lines, "\tONLY TARGET", "only source\t"])
    valid = write_lines(tmp_path / "valid.tsv", lines[:3])
    cfg = DataConfig(
        format="tsv", train=[str(train)], valid=[str(valid)], src_lang="xx", tgt_lang="yy"
    )
    corpus = load_corpus(cfg, TOK, tmp_path / "cache")
    assert corpus.stats["train_empty_dropped"] == 2


# --------------------------------------------------------------------------------------
# explicit formats give the same corpus as the dir format


def write_tsv(path: Path, src: list[str], tgt: list[str]) -> Path:
    return write_lines(path, [f"{s}\t{t}" for s, t in zip(src, tgt, strict=True)])


def write_jsonl(path: Path, src: list[str], tgt: list[str]) -> Path:
    records = [
        json.dumps({"translation": {"yy": t, "xx": s}}, ensure_ascii=False)
        for s, t in zip(src, tgt, strict=True)
    ]
    return write_lines(path, records)


def assert_same_corpus(a: Corpus, b: Corpus) -> None:
    assert a.codec.src.model_bytes == b.codec.src.model_bytes
    assert a.codec.tgt.model_bytes == b.codec.tgt.model_bytes
    assert set(a.splits) == set(b.splits)
    for role in a.splits:
        assert split_ids(a, role) == split_ids(b, role), role
        if role != "train":
            assert a.splits[role].texts("src") == b.splits[role].texts("src")
            assert a.splits[role].texts("tgt") == b.splits[role].texts("tgt")
    for key in ("train_pairs", "valid_pairs", "test_pairs", "train_empty_dropped"):
        assert a.stats[key] == b.stats[key], key


def test_files_tsv_jsonl_match_dir_format(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    d = tiny_corpus_dir
    # one empty pair and some padding whitespace, handled the same way by every reader
    for side, extra in (("xx", "  "), ("yy", "\t")):
        write_lines(d / f"train.{side}", [*read_lines(d / f"train.{side}"), extra])
    reference = load_corpus(dir_cfg(d), TOK, tmp_path / "cache")
    assert reference.stats["train_empty_dropped"] == 1

    files = DataConfig(
        format="files",
        train=[str(d / "train.xx"), str(d / "train.yy")],
        valid=[str(d / "valid.xx"), str(d / "valid.yy")],
        test=[str(d / "test.xx"), str(d / "test.yy")],
        src_lang="xx",
        tgt_lang="yy",
    )
    assert_same_corpus(reference, load_corpus(files, TOK, tmp_path / "cache"))

    listed: dict[str, dict[str, list[str]]] = {"tsv": {}, "jsonl": {}}
    for role in ("train", "valid", "test"):
        src, tgt = read_lines(d / f"{role}.xx"), read_lines(d / f"{role}.yy")
        listed["tsv"][role] = [str(write_tsv(tmp_path / "tsv" / f"{role}.tsv", src, tgt))]
        listed["jsonl"][role] = [str(write_jsonl(tmp_path / "js" / f"{role}.jsonl", src, tgt))]
    for fmt, paths in listed.items():
        cfg = DataConfig(format=fmt, src_lang="xx", tgt_lang="yy", **paths)
        assert_same_corpus(reference, load_corpus(cfg, TOK, tmp_path / "cache"))


def test_files_format_without_test_split(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    d = tiny_corpus_dir
    cfg = DataConfig(
        format="files",
        train=[str(d / "train.xx"), str(d / "train.yy")],
        valid=[str(d / "valid.xx"), str(d / "valid.yy")],
        src_lang="xx",
        tgt_lang="yy",
    )
    corpus = load_corpus(cfg, TOK, tmp_path / "cache")
    assert set(corpus.splits) == {"train", "valid"}
    assert len(corpus.splits["valid"]) == 40


# --------------------------------------------------------------------------------------
# Hugging Face datasets, offline


def hf_rows(n: int, seed: int) -> tuple[list[str], list[str]]:
    return tiny_pairs(n, seed)


def save_hf_translation(path: Path, sizes: dict[str, int]) -> Path:
    splits = {}
    for seed, (name, n) in enumerate(sizes.items()):
        src, tgt = hf_rows(n, seed)
        rows = [{"xx": s, "yy": t} for s, t in zip(src, tgt, strict=True)]
        splits[name] = datasets.Dataset.from_dict({"translation": rows})
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def save_hf_columns(path: Path) -> Path:
    splits = {}
    for seed, (name, n) in enumerate((("train", 60), ("validation", 8), ("test", 6))):
        src, tgt = hf_rows(n, seed)
        splits[name] = datasets.Dataset.from_dict({"id": list(range(n)), "xx": src, "yy": tgt})
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.usefixtures("offline")
def test_hf_translation_column_from_disk(tmp_path: Path) -> None:
    path = save_hf_translation(tmp_path / "ds", {"train": 60, "validation": 8, "test": 6})
    cfg = DataConfig(
        format="hf", name=str(path), src_lang="xx", tgt_lang="yy", valid_split="validation"
    )
    corpus = load_corpus(cfg, TOK, tmp_path / "cache")
    assert set(corpus.splits) == {"train", "valid", "test"}
    assert [len(corpus.splits[r]) for r in ("train", "valid", "test")] == [60, 8, 6]
    for role, seed in (("valid", 1), ("test", 2)):
        src, tgt = hf_rows(len(corpus.splits[role]), seed)
        assert corpus.splits[role].texts("src") == src
        assert corpus.splits[role].texts("tgt") == tgt
    src, tgt = hf_rows(60, 0)
    train = corpus.splits["train"]
    assert [train.source(i).tolist() for i in range(60)] == corpus.codec.encode_source(src)
    assert [train.target(i).tolist() for i in range(60)] == corpus.codec.encode_target(tgt)


@pytest.mark.usefixtures("offline")
def test_hf_one_column_per_language(tmp_path: Path) -> None:
    path = save_hf_columns(tmp_path / "ds")
    cfg = DataConfig(
        format="hf", name=str(path), src_lang="xx", tgt_lang="yy", valid_split="validation"
    )
    corpus = load_corpus(cfg, TOK, tmp_path / "cache")
    assert corpus.splits["valid"].texts("src") == hf_rows(8, 1)[0]
    assert corpus.splits["test"].texts("tgt") == hf_rows(6, 2)[1]
    assert len(corpus.splits["train"]) == 60


@pytest.mark.usefixtures("offline")
def test_hf_matches_dir_format(tmp_path: Path) -> None:
    path = save_hf_translation(tmp_path / "ds", {"train": 60, "validation": 8, "test": 6})
    for role, (_name, n, seed) in zip(
        ("train", "valid", "test"),
        (("train", 60, 0), ("validation", 8, 1), ("test", 6, 2)),
        strict=True,
    ):
        src, tgt = hf_rows(n, seed)
        write_lines(tmp_path / "d" / f"{role}.xx", src)
        write_lines(tmp_path / "d" / f"{role}.yy", tgt)
    from_dir = load_corpus(dir_cfg(tmp_path / "d"), TOK, tmp_path / "cache")
    cfg = DataConfig(
        format="hf", name=str(path), src_lang="xx", tgt_lang="yy", valid_split="validation"
    )
    assert_same_corpus(from_dir, load_corpus(cfg, TOK, tmp_path / "cache"))


@pytest.mark.usefixtures("offline")
def test_hf_single_split_dataset_is_an_error(tmp_path: Path) -> None:
    src, tgt = hf_rows(10, 0)
    datasets.Dataset.from_dict({"xx": src, "yy": tgt}).save_to_disk(str(tmp_path / "one"))
    cfg = DataConfig(format="hf", name=str(tmp_path / "one"), src_lang="xx", tgt_lang="yy")
    with pytest.raises(DataError, match="single split"):
        load_corpus(cfg, TOK, tmp_path / "cache")


# --------------------------------------------------------------------------------------
# cache


def cache_entries(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if (p / "meta.json").is_file()}


def forbid_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the corpus was rebuilt instead of read from the cache")

    monkeypatch.setattr(mtkit.corpus.cache, "_build_entry", fail)


def test_second_load_reuses_cache(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    entries = cache_entries(cache)
    assert len(entries) == 1
    entry = cache / next(iter(entries))
    mtimes = {p: p.stat().st_mtime_ns for p in entry.rglob("*")}
    forbid_build(monkeypatch)
    second = load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    assert_same_corpus(first, second)
    assert second.stats == first.stats
    assert cache_entries(cache) == entries
    assert {p: p.stat().st_mtime_ns for p in entry.rglob("*")} == mtimes
    assert not [p for p in cache.iterdir() if p.name.startswith("building-")]


def test_cache_dir_from_config_and_environment(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTKIT_CACHE_DIR", str(tmp_path / "env-cache"))
    load_corpus(dir_cfg(tiny_corpus_dir), TOK)
    assert len(cache_entries(tmp_path / "env-cache")) == 1
    load_corpus(dir_cfg(tiny_corpus_dir, cache_dir=str(tmp_path / "cfg-cache")), TOK, tmp_path)
    assert len(cache_entries(tmp_path / "cfg-cache")) == 1


def test_cache_reused_for_a_copy_in_another_folder(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key follows the content, not the path."""
    load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    copy = tmp_path / "copy"
    for f in tiny_corpus_dir.iterdir():
        if f.is_file():
            write_lines(copy / f.name, read_lines(f))
    forbid_build(monkeypatch)
    load_corpus(dir_cfg(copy), TOK, tmp_path / "cache")


def test_changed_content_gives_new_cache_entry(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    before = load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    valid_xx = tiny_corpus_dir / "valid.xx"
    lines = read_lines(valid_xx)
    lines[0] = "green house under the tree"
    write_lines(valid_xx, lines)
    os.utime(valid_xx, ns=(0, 0))  # a changed mtime is not what the key follows
    after = load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    assert len(cache_entries(cache)) == 2
    assert after.splits["valid"].texts("src")[0] == "green house under the tree"
    assert before.splits["valid"].texts("src")[0] != "green house under the tree"


@pytest.mark.parametrize(
    ("tok", "data"),
    [
        (TokenizerConfig(vocab_size=90), {}),
        (TokenizerConfig(vocab_size=100, type="bpe"), {}),
        (TokenizerConfig(vocab_size=100, joint=False), {}),
        (TokenizerConfig(vocab_size=100, character_coverage=0.99), {}),
        (TOK, {"reverse_source": False}),
        (TOK, {"max_len": 6}),
    ],
    ids=["vocab", "bpe", "not-joint", "coverage", "no-reverse", "max-len"],
)
def test_changed_settings_give_new_cache_entry(
    tiny_corpus_dir: Path, tmp_path: Path, tok: TokenizerConfig, data: dict[str, object]
) -> None:
    cache = tmp_path / "cache"
    load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    load_corpus(dir_cfg(tiny_corpus_dir, **data), tok, cache)
    assert len(cache_entries(cache)) == 2


def test_batching_settings_share_the_cache(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    forbid_build(monkeypatch)
    load_corpus(dir_cfg(tiny_corpus_dir, batch_tokens=123, pool_batches=7), TOK, tmp_path / "cache")


def test_failed_build_leaves_no_cache_entry(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    write_lines(tiny_corpus_dir / "test.yy", ["ONE"])
    with pytest.raises(DataError):
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    assert list(cache.iterdir()) == []


def test_jsonl_direction_is_part_of_the_cache_key(tmp_path: Path) -> None:
    src, tgt = tiny_pairs(60, 1)
    paths = {
        "train": [str(write_jsonl(tmp_path / "train.jsonl", src, tgt))],
        "valid": [str(write_jsonl(tmp_path / "valid.jsonl", src[:5], tgt[:5]))],
    }
    load_corpus(DataConfig(format="jsonl", src_lang="xx", tgt_lang="yy", **paths), TOK, tmp_path)
    swapped = load_corpus(
        DataConfig(format="jsonl", src_lang="yy", tgt_lang="xx", **paths), TOK, tmp_path
    )
    assert swapped.splits["valid"].texts("src") == tgt[:5]


@pytest.mark.usefixtures("offline")
def test_hf_direction_is_part_of_the_cache_key(tmp_path: Path) -> None:
    path = save_hf_translation(tmp_path / "ds", {"train": 30, "validation": 5})
    common: dict[str, Any] = {
        "format": "hf",
        "name": str(path),
        "valid_split": "validation",
        "test_split": None,
    }
    load_corpus(DataConfig(src_lang="xx", tgt_lang="yy", **common), TOK, tmp_path)
    swapped = load_corpus(DataConfig(src_lang="yy", tgt_lang="xx", **common), TOK, tmp_path)
    assert swapped.splits["valid"].texts("src") == hf_rows(5, 1)[1]


# --------------------------------------------------------------------------------------
# tokenizer


def test_special_ids_fixed(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    corpus = load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    model = corpus.codec.src
    assert [model.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert model.piece_to_id("<pad>") == PAD_ID
    assert model.piece_to_id("</s>") == EOS_ID
    ids = {i for seq in model.encode(read_lines(tiny_corpus_dir / "train.xx")) for i in seq}
    assert min(ids) > EOS_ID  # known words never map to a special id
    assert UNK_ID in model.encode(["red § cat"])[0]


def test_vocab_size_is_a_soft_limit(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    corpus = load_corpus(dir_cfg(tiny_corpus_dir), TokenizerConfig(), tmp_path / "cache")
    assert 16 < corpus.codec.src.vocab_size < 8000
    assert corpus.stats["src_vocab"] == corpus.codec.src.vocab_size


def test_bpe_tokenizer(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    bpe = load_corpus(
        dir_cfg(tiny_corpus_dir), TokenizerConfig(vocab_size=60, type="bpe"), tmp_path / "c"
    )
    unigram = load_corpus(dir_cfg(tiny_corpus_dir), TokenizerConfig(vocab_size=60), tmp_path / "c")
    assert bpe.codec.src.model_bytes != unigram.codec.src.model_bytes
    assert bpe.codec.src.vocab_size == 60
    # sentencepiece scores BPE merges by rank (0, -1, -2, ...), unigram pieces by log-probability
    sp = bpe.codec.src._sp
    scores = [sp.get_score(i) for i in range(4, 14)]
    assert scores == [-float(i) for i in range(10)]
    unigram_scores = [unigram.codec.src._sp.get_score(i) for i in range(4, 14)]
    assert any(s != int(s) for s in unigram_scores)
    # lossless round trip
    text = read_lines(tiny_corpus_dir / "valid.yy")
    assert bpe.codec.decode_target(bpe.codec.encode_target(text)) == text
    assert [i for seq in bpe.codec.encode_source(text[:3]) for i in seq if i == UNK_ID] == []


def test_separate_models_when_not_joint(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    corpus = load_corpus(
        dir_cfg(tiny_corpus_dir), TokenizerConfig(vocab_size=60, joint=False), tmp_path / "c"
    )
    codec = corpus.codec
    assert not codec.joint
    assert codec.src is not codec.tgt
    assert codec.src.model_bytes != codec.tgt.model_bytes
    for model in (codec.src, codec.tgt):
        assert [model.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    # each side's model knows its own language's words only
    assert codec.src.piece_to_id("▁cat") > EOS_ID
    assert codec.src.piece_to_id("▁CAT") == UNK_ID
    assert codec.tgt.piece_to_id("▁CAT") > EOS_ID
    assert codec.tgt.piece_to_id("▁cat") == UNK_ID
    assert corpus.stats["src_vocab"] == codec.src.vocab_size
    assert corpus.stats["tgt_vocab"] == codec.tgt.vocab_size
    # reloading from the cache keeps the two models apart
    again = load_corpus(
        dir_cfg(tiny_corpus_dir), TokenizerConfig(vocab_size=60, joint=False), tmp_path / "c"
    )
    assert again.codec.tgt.model_bytes == codec.tgt.model_bytes
    assert not again.codec.joint


def test_joint_model_is_shared(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    corpus = load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    assert corpus.codec.joint and corpus.codec.src is corpus.codec.tgt
    assert corpus.codec.src.piece_to_id("▁cat") > EOS_ID
    assert corpus.codec.src.piece_to_id("▁CAT") > EOS_ID


def test_codec_state_round_trip(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    codec = load_corpus(
        dir_cfg(tiny_corpus_dir, reverse_source=False),
        TokenizerConfig(vocab_size=60, joint=False),
        tmp_path / "cache",
    ).codec
    rebuilt = TextCodec.from_state(codec.to_state())
    text = read_lines(tiny_corpus_dir / "valid.xx")
    assert rebuilt.encode_source(text) == codec.encode_source(text)
    assert rebuilt.reverse_source is False and not rebuilt.joint


def test_train_subword_model_is_deterministic() -> None:
    src, tgt = tiny_pairs(100, 9)
    first = train_subword_model(src + tgt, TOK)
    assert train_subword_model(iter(src + tgt), TOK) == first
    assert SubwordModel(first).vocab_size > 16


def test_subword_model_is_the_same_whatever_the_number_of_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sentencepiece's statistics depend on its thread count, never on the machine's cores."""
    lines = [
        line
        for name in ("train.en", "train.zd")
        for line in (DATA_DIR / "synth" / name).read_text(encoding="utf-8").splitlines()
    ]
    models = []
    for cores in (1, 2, 8):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        models.append(train_subword_model(lines, TokenizerConfig()))
    assert models[0] == models[1] == models[2]


# --------------------------------------------------------------------------------------
# streaming preparation: same content as an in-memory build, in any number of processes


def in_memory_build(
    directory: Path, tok: TokenizerConfig, max_len: int, reverse: bool = True
) -> dict[str, Any]:
    """What preparation did before it streamed: every split in memory, one process.

    Pairs with an empty side dropped; sentencepiece fed blocks of 10,000 training pairs
    (their sources, then their targets); codec encoding; long training pairs dropped.
    """
    from mtkit.corpus.readers import iter_file_pair

    roles = [r for r in ("train", "valid", "test") if (directory / f"{r}.xx").is_file()]
    pairs, empty = {}, {}
    for role in roles:
        read = list(iter_file_pair(directory / f"{role}.xx", directory / f"{role}.yy"))
        pairs[role] = [(s, t) for s, t in read if s and t]
        empty[role] = len(read) - len(pairs[role])
    train = pairs["train"]

    def sentences(columns: tuple[int, ...]) -> list[str]:
        out = []
        for start in range(0, len(train), 10_000):
            for column in columns:
                out += [pair[column] for pair in train[start : start + 10_000]]
        return out

    if tok.joint:
        src_model = tgt_model = train_subword_model(sentences((0, 1)), tok)
    else:
        src_model, tgt_model = (train_subword_model(sentences((c,)), tok) for c in (0, 1))
    src = SubwordModel(src_model)
    codec = TextCodec(src, src if tok.joint else SubwordModel(tgt_model), reverse)
    result: dict[str, Any] = {"models": (src_model, tgt_model), "stats": {}}
    for role in roles:
        ids = list(
            zip(
                codec.encode_source([s for s, _ in pairs[role]]),
                codec.encode_target([t for _, t in pairs[role]]),
                strict=True,
            )
        )
        if role == "train":
            kept = [(s, t) for s, t in ids if len(s) - 1 <= max_len and len(t) <= max_len]
            result["stats"]["train_long_dropped"] = len(ids) - len(kept)
            ids = kept
        result[role] = ids
        result[f"{role}_texts"] = pairs[role]
        result["stats"][f"{role}_pairs"] = len(ids)
        result["stats"][f"{role}_empty_dropped"] = empty[role]
    return result


def awkward_corpus(directory: Path, n_train: int = 300) -> Path:
    """A corpus with empty sides, whitespace, CRLF and pairs of every length."""
    src, tgt = tiny_pairs(n_train, seed=11)
    src[17], tgt[40], src[99] = "  ", "", ""
    src[5] = "red cat " * 12  # longer than a small max_len
    write_lines(directory / "train.xx", src)
    (directory / "train.yy").write_bytes(b"".join(t.encode() + b"\r\n" for t in tgt))
    for role, seed in (("valid", 2), ("test", 3)):
        vsrc, vtgt = tiny_pairs(30, seed)
        vsrc[3] = ""
        write_lines(directory / f"{role}.xx", vsrc)
        write_lines(directory / f"{role}.yy", vtgt)
    return directory


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 64 pairs, so a tiny corpus takes many (and a partial last one)."""
    import mtkit.corpus.prepare

    monkeypatch.setattr(mtkit.corpus.prepare, "CHUNK_PAIRS", 64)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("joint", [True, False])
def test_streaming_build_equals_the_in_memory_build(tmp_path: Path, joint: bool) -> None:
    directory = awkward_corpus(tmp_path / "corpus")
    tok = TokenizerConfig(vocab_size=60, joint=joint)
    corpus = load_corpus(dir_cfg(directory, max_len=12), tok, tmp_path / "cache")
    expected = in_memory_build(directory, tok, max_len=12)
    assert corpus.codec.src.model_bytes == expected["models"][0]
    assert corpus.codec.tgt.model_bytes == expected["models"][1]
    for role in ("train", "valid", "test"):
        assert split_ids(corpus, role) == expected[role], role
    for role in ("valid", "test"):
        split = corpus.splits[role]
        assert (
            list(zip(split.texts("src"), split.texts("tgt"), strict=True))
            == expected[f"{role}_texts"]
        )
    stats = {k: corpus.stats[k] for k in expected["stats"]}
    assert stats == expected["stats"]
    assert stats["train_long_dropped"] > 0 and stats["train_empty_dropped"] == 3
    assert corpus.stats["valid_empty_dropped"] == 1


def entry_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.*")}


@pytest.mark.usefixtures("small_chunks")
def test_two_worker_processes_build_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = awkward_corpus(tmp_path / "corpus", n_train=700)
    built = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("MTKIT_DATA_WORKERS", workers)
        corpus = load_corpus(dir_cfg(directory, max_len=12), TOK, tmp_path / workers)
        assert corpus.built and corpus.folder is not None
        built[workers] = entry_files(corpus.folder)
    one, two = built["1"], built["2"]
    meta_one, meta_two = json.loads(one.pop("meta.json")), json.loads(two.pop("meta.json"))
    assert one == two  # every array, text and model file, byte for byte
    assert meta_one["stats"] == meta_two["stats"] and meta_one["files"] == meta_two["files"]
    assert len(one["train/src_ids.npy"]) > 2 * 64 * 4  # many chunks were encoded


def test_worker_count_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtkit.corpus.prepare import MIN_POOL_CHUNKS, worker_count

    monkeypatch.delenv("MTKIT_DATA_WORKERS", raising=False)
    assert worker_count(MIN_POOL_CHUNKS - 1) == 1  # a small corpus: no worker processes
    assert 1 <= worker_count(1000) <= 8
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 4)
    monkeypatch.setenv("MTKIT_DATA_WORKERS", "3")
    assert worker_count(1) == 3
    for bad in ("two", "0", "5"):  # 5: more than the 4 usable cores
        monkeypatch.setenv("MTKIT_DATA_WORKERS", bad)
        with pytest.raises(ConfigError, match=f"MTKIT_DATA_WORKERS='{bad}' is not valid; "
                           "expected an integer from 1 to 4"):  # fmt: skip
            worker_count(10)


def test_sentencepiece_reads_blocks_of_pairs_in_the_earlier_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 7 pairs re-cut into blocks of 10: 10 sources, their 10 targets, ..."""
    import mtkit.corpus.subwords as subwords
    from mtkit.corpus.layout import TextWriter

    src = [f"s{i}" for i in range(23)]
    tgt = [f"t{i}" for i in range(23)]
    writer = TextWriter(tmp_path / "text.arrow")
    for start in range(0, 23, 7):
        writer.write(src[start : start + 7], tgt[start : start + 7])
    writer.close()
    monkeypatch.setattr(subwords, "SP_BLOCK", 10)
    job = subwords.SubwordJob(str(tmp_path / "text.arrow"), ("src", "tgt"), 46, 100, 50, TOK)
    fed: list[int] = []
    order = list(subwords.job_sentences(job, fed.append))
    assert order == src[:10] + tgt[:10] + src[10:20] + tgt[10:20] + src[20:] + tgt[20:]
    assert fed == [10, 20, 30, 40, 46]
    assert list(subwords.block_sentences(tmp_path / "text.arrow", ("tgt",))) == tgt


def test_a_corpus_over_the_sample_feeds_a_uniform_sample_of_exactly_that_size(
    tmp_path: Path,
) -> None:
    from mtkit.corpus.layout import TextWriter
    from mtkit.corpus.subwords import SubwordJob, UniformSample, job_sentences

    draw = UniformSample(100, 30, seed=4)
    parts = [draw.take(size) for size in (7, 40, 0, 53)]
    assert sum(len(p) for p in parts) == 30 and draw.items_left == draw.sample_left == 0
    for part, size in zip(parts, (7, 40, 0, 53), strict=True):
        assert list(part) == sorted(set(part)) and (part < size).all()
    # every item is as likely to be drawn: 2000 draws of 10 of 40, about 500 each
    hits = np.zeros(40)
    for seed in range(2000):
        draw = UniformSample(40, 10, seed)
        hits[np.concatenate([draw.take(15), 15 + draw.take(25)])] += 1
    assert hits.sum() == 20_000 and hits.min() > 400 and hits.max() < 600

    src, tgt = [f"s{i}" for i in range(50)], [f"t{i}" for i in range(50)]
    writer = TextWriter(tmp_path / "text.arrow")
    for start in range(0, 50, 16):
        writer.write(src[start : start + 16], tgt[start : start + 16])
    writer.close()
    job = SubwordJob(str(tmp_path / "text.arrow"), ("src", "tgt"), 100, 300, 12, TOK)
    fed: list[int] = []
    sample = list(job_sentences(job, fed.append))
    assert len(set(sample)) == 12 and set(sample) <= set(src + tgt) and fed == [12]
    assert list(job_sentences(job, fed.append)) == sample  # the seed is fixed
    keys = [(int(s[1:]) // 16, s[0] == "t", int(s[1:])) for s in sample]
    assert keys == sorted(keys)  # chunk by chunk, sources before targets


def test_a_failed_sentencepiece_training_is_one_line_from_its_process(tmp_path: Path) -> None:
    from mtkit.corpus.layout import TextWriter
    from mtkit.corpus.subwords import SubwordJob, SubwordTrainers

    writer = TextWriter(tmp_path / "text.arrow")
    writer.write(["red cat", "a dog"], ["CAT RED", "DOG A"])
    writer.close()
    text = str(tmp_path / "text.arrow")
    with SubwordTrainers(1) as trainers:
        with pytest.raises(DataError, match=r"^sentencepiece training failed: .*input_sentence"):
            trainers.train([SubwordJob(text, ("src",), 2, 12, 50, TOK)], together=False)
        missing = SubwordJob(str(tmp_path / "gone.arrow"), ("src",), 2, 12, 1000, TOK)
        with pytest.raises(DataError, match=r"^FileNotFoundError: .*gone\.arrow"):
            trainers.train([missing], together=False)
        job = SubwordJob(text, ("src", "tgt"), 4, 24, 1000, TOK)
        assert trainers.train([job], together=False) == [
            train_subword_model(["red cat", "a dog", "CAT RED", "DOG A"], TOK, 1000)
        ]  # the process serves the next job after a failure
        assert trainers.fed() == 4


def test_a_bad_line_deep_in_a_big_file_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mtkit.corpus.prepare

    monkeypatch.setattr(mtkit.corpus.prepare, "CHUNK_PAIRS", 1000)  # many chunks written before
    src, tgt = tiny_pairs(30_000, seed=4)
    lines = [s.encode() for s in src]
    lines[23_455] = b"ok \xff bad"
    (tmp_path / "train.xx").write_bytes(b"\n".join(lines) + b"\n")
    write_lines(tmp_path / "train.yy", tgt)
    write_lines(tmp_path / "valid.xx", src[:5])
    write_lines(tmp_path / "valid.yy", tgt[:5])
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=rf"^{tmp_path / 'train.xx'}:23456: invalid UTF-8"):
        load_corpus(dir_cfg(tmp_path, test_split=None), TOK, cache)
    assert list(cache.iterdir()) == []  # the half-read build is gone
    tsv = write_lines(tmp_path / "train.tsv", [f"{s}\t{t}" for s, t in zip(src, tgt, strict=True)])
    with tsv.open("a") as handle:
        handle.write("no tab here\n")
    cfg = DataConfig(format="tsv", train=[str(tsv)], valid=[str(tsv)], src_lang="xx", tgt_lang="yy")
    with pytest.raises(DataError, match=rf"^{tsv}:30001: expected 'source<TAB>target'"):
        load_corpus(cfg, TOK, cache)


def test_split_files_on_disk(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    """Memory-mapped .npy arrays with compact lengths; text kept for valid/test only."""
    corpus = load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    assert corpus.folder is not None
    train, valid = corpus.splits["train"], corpus.splits["valid"]
    assert isinstance(train.src_values, np.memmap) and train.src_values.dtype == np.int32
    assert train.src_offsets.dtype == np.int64
    assert train.src_lengths.dtype == train.tgt_lengths.dtype == np.int16  # max_len 100
    assert valid.src_lengths.dtype == np.int32  # validation lengths are not bounded
    assert train.src_lengths.tolist() == np.diff(train.src_offsets).tolist()
    assert train.tgt_lengths.tolist() == (np.diff(train.tgt_offsets) + 1).tolist()
    assert not (corpus.folder / "train" / "text.arrow").exists()
    assert (corpus.folder / "valid" / "text.arrow").is_file()
    with pytest.raises(KeyError, match="keeps no text"):
        train.texts("src")
    with (corpus.folder / "train" / "src_ids.npy").open("rb") as handle:
        assert np.lib.format.read_magic(handle) == (1, 0)
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    assert shape == (int(train.src_offsets[-1]),) and dtype == np.int32


def test_preparation_logs_progress_with_time_left(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    import mtkit.corpus.prepare
    import mtkit.corpus.progress

    monkeypatch.setattr(mtkit.corpus.progress, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(mtkit.corpus.prepare, "CHUNK_PAIRS", 50)
    caplog.set_level("INFO", logger="mtkit")
    load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    lines = [r.getMessage() for r in caplog.records]
    reading = [line for line in lines if line.startswith("reading train (")]
    assert reading and all("left" in line and "bytes/s" in line for line in reading)
    assert any(line.startswith("encoding train: ") and "pairs" in line for line in lines)
    assert any(line.startswith("corpus prepared in ") for line in lines)


def test_sentencepiece_sample_is_bounded(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    import mtkit.corpus.tokenizer
    from mtkit.corpus.tokenizer import sample_size

    cfg = TokenizerConfig(max_sentences=1000)
    budget = mtkit.corpus.tokenizer.SAMPLE_CHARACTERS
    assert sample_size(cfg, 500, 500 * 40) == 1000  # the whole corpus fits
    assert sample_size(cfg, 5000, 5000 * 40) == 1000  # max_sentences of it fit
    assert sample_size(cfg, 10**8, 10**8 * (budget // 100)) == 100  # only 100 sentences fit
    monkeypatch.setattr(mtkit.corpus.tokenizer, "SAMPLE_CHARACTERS", 200 * 30)
    caplog.set_level("INFO", logger="mtkit")
    corpus = load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    assert any("random sample of" in r.getMessage() for r in caplog.records)
    assert corpus.codec.src.vocab_size > 16
    # the model is sentencepiece's on exactly the sampled sentences (one chunk here)
    from mtkit.corpus.subwords import SAMPLE_SEED, UniformSample

    src, tgt = (read_lines(tiny_corpus_dir / f"train.{lang}") for lang in ("xx", "yy"))
    sentences = len(src) + len(tgt)
    sample = sample_size(TOK, sentences, sum(map(len, src + tgt)))
    assert sample < sentences
    draw = UniformSample(sentences, sample, SAMPLE_SEED)
    fed = [src[i] for i in draw.take(len(src))] + [tgt[i] for i in draw.take(len(tgt))]
    assert corpus.codec.src.model_bytes == train_subword_model(fed, TOK, sample)


# --------------------------------------------------------------------------------------
# a damaged cache entry is noticed and rebuilt; a rank that may not build says where


def built_entry(tiny_corpus_dir: Path, cache: Path) -> tuple[Corpus, Path]:
    corpus = load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    assert corpus.folder is not None
    return corpus, corpus.folder


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def same_size_other_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def old_layout(path: Path) -> None:
    path.write_text(json.dumps(json.loads(path.read_text())["stats"]))


DAMAGE = {
    "meta-not-json": ("meta.json", lambda p: p.write_text('{"layout": 2, "sta'), "not valid JSON"),
    "meta-missing": ("meta.json", Path.unlink, "meta.json is missing"),
    "meta-earlier-version": ("meta.json", old_layout, "another version of mtkit"),
    "ids-truncated": ("train/src_ids.npy", truncate, "train/src_ids.npy is truncated"),
    "text-truncated": ("valid/text.arrow", truncate, "valid/text.arrow is truncated"),
    "model-missing": ("src.model", Path.unlink, "src.model is missing"),
    "lengths-missing": ("train/tgt_lengths.npy", Path.unlink, "is missing"),
    "offsets-changed": ("test/tgt_offsets.npy", same_size_other_bytes, "checksum"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_entry_is_rebuilt_with_one_warning(
    tiny_corpus_dir: Path, tmp_path: Path, caplog: Any, case: str
) -> None:
    _, folder = built_entry(tiny_corpus_dir, tmp_path / "cache")
    reference = load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "reference")
    name, damage, reason = DAMAGE[case]
    damage(folder / name)
    caplog.set_level("INFO", logger="mtkit")
    rebuilt = load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(folder) in warnings[0] and reason in warnings[0]
    assert "rebuilding" in warnings[0]
    assert rebuilt.built and rebuilt.folder == folder
    assert_same_corpus(reference, rebuilt)
    caplog.clear()
    again = load_corpus(dir_cfg(tiny_corpus_dir), TOK, tmp_path / "cache")
    assert not again.built and not [r for r in caplog.records if r.levelname == "WARNING"]


def test_big_files_are_checked_at_both_ends(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files over SMALL_FILE: size + checksum of the first and last ENDS bytes."""
    import mtkit.corpus.integrity as integrity

    monkeypatch.setattr(integrity, "SMALL_FILE", 600)
    monkeypatch.setattr(integrity, "ENDS", 200)
    _, folder = built_entry(tiny_corpus_dir, tmp_path / "cache")
    meta = json.loads((folder / "meta.json").read_text())
    ids = folder / "train" / "src_ids.npy"
    assert ids.stat().st_size > 600 and "sha256_ends" in meta["files"]["train/src_ids.npy"]
    assert "sha256" in meta["files"]["valid/src_lengths.npy"]  # 40 int32 lengths: small
    data = bytearray(ids.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the middle of a big file is not read
    ids.write_bytes(bytes(data))
    assert integrity.check_files(folder, meta["files"]) == ""
    data[-3] ^= 0xFF  # its end is
    ids.write_bytes(bytes(data))
    assert "checksum" in integrity.check_files(folder, meta["files"])


def test_a_rank_that_may_not_build_names_the_folder(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache, build=False)
    message = str(info.value)
    assert message.startswith(str(cache) + "/") and "no corpus cache there" in message
    assert "data.cache_dir" in message and "\n" not in message
    monkeypatch.setenv("RANK", "1")  # under torchrun, ranks other than 0 never build
    with pytest.raises(DataError, match=r"data\.cache_dir"):
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    monkeypatch.setenv("RANK", "0")
    _, folder = built_entry(tiny_corpus_dir, cache)
    monkeypatch.setenv("RANK", "1")
    assert not load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache).built  # it can see it
    truncate(folder / "train" / "tgt_ids.npy")
    with pytest.raises(DataError, match=r"train/tgt_ids\.npy is truncated; rank 0 prepares"):
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)


def test_a_cache_that_cannot_be_written_is_one_error(
    tiny_corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mtkit.corpus.cache

    cache = tmp_path / "cache"

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device", str(cache / "x" / "train" / "src_ids.npy"))

    monkeypatch.setattr(mtkit.corpus.cache, "prepare", disk_full)
    with pytest.raises(DataError) as info:
        load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    message = str(info.value)
    assert "No space left on device" in message and "data.cache_dir" in message
    assert list(cache.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match=rf"^{blocker}: cannot write the corpus cache there"):
        load_corpus(dir_cfg(tiny_corpus_dir, cache_dir=str(blocker)), TOK)


# --------------------------------------------------------------------------------------
# building-* folders left by killed runs


def fake_build(root: Path, name: str, owner: dict[str, Any] | None, age_s: float = 0) -> Path:
    folder = root / f"building-{name}"
    (folder / "train").mkdir(parents=True)
    if owner is not None:
        (folder / "owner.json").write_text(json.dumps(owner))
    if age_s:
        old = folder.stat().st_mtime - age_s
        os.utime(folder, (old, old))
    return folder


def test_builds_of_killed_runs_are_removed(
    tiny_corpus_dir: Path, tmp_path: Path, caplog: Any
) -> None:
    import socket
    import subprocess
    import sys

    from mtkit.corpus.integrity import _this_process

    cache = tmp_path / "cache"
    me = _this_process()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = fake_build(cache, "dead", {**me, "pid": int(gone.stdout)})
    reused = fake_build(cache, "reused", {**me, "started": "1"})  # our pid, another start
    mine = fake_build(cache, "live", me)
    other_host = fake_build(cache, "remote", {**me, "host": socket.gethostname() + "-x", "pid": 1})
    starting = fake_build(cache, "starting", None)
    abandoned = fake_build(cache, "abandoned", None, age_s=3600)
    caplog.set_level("INFO", logger="mtkit")
    load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    assert not dead.exists() and not reused.exists() and not abandoned.exists()
    assert mine.exists() and other_host.exists() and starting.exists()
    assert any("removed 3 unfinished corpus build(s)" in r.getMessage() for r in caplog.records)


def test_a_build_killed_with_sigkill_is_cleaned_up_by_the_next_run(
    tiny_corpus_dir: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    cache = tmp_path / "cache"
    script = f"""
import os, signal
from pathlib import Path
import mtkit.corpus.prepare as prepare
from mtkit.config import DATA_DIR, DataConfig, TokenizerConfig
from mtkit.corpus.cache import load_corpus

def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)

prepare.train_codec = killed  # dies after the text of every split was written
cfg = DataConfig(dir={str(tiny_corpus_dir)!r}, src_lang="xx", tgt_lang="yy")
load_corpus(cfg, TokenizerConfig(vocab_size=100), Path({str(cache)!r}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    (left,) = cache.glob("building-*")
    assert (left / "valid" / "text.arrow").is_file()
    corpus = load_corpus(dir_cfg(tiny_corpus_dir), TOK, cache)
    assert corpus.built and not list(cache.glob("building-*"))


def test_the_prepare_command_prints_the_entry_to_copy(
    tiny_corpus_dir: Path, tmp_path: Path
) -> None:
    """``python -m mtkit.data`` takes the training options and prepares the cache only."""
    import subprocess
    import sys

    options = [
        "data=local",
        f"data.dir={tiny_corpus_dir}",
        "data.src_lang=xx",
        "data.tgt_lang=yy",
        "tokenizer.vocab_size=100",
    ]
    env = {**os.environ, "MTKIT_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "mtkit.data"]
    result = subprocess.run(
        [*command, *options], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    folder = Path(result.stdout.strip())
    assert folder.parent == tmp_path / "cache" and (folder / "meta.json").is_file()
    assert "preparing corpus" in result.stderr
    bad = subprocess.run(
        [*command, *options[:-1], "tokenizer.vocab_size=3"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("mtkit-data: error: ") and "tokenizer.vocab_size" in bad.stderr


def test_ctrl_c_is_not_held_up_by_a_long_silent_stage(
    monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Sentencepiece training does not return to Python until done: it runs in a thread."""
    import signal
    import time

    import mtkit.corpus.progress as progress

    def interrupt(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.05)
    caplog.set_level("INFO", logger="mtkit")
    assert progress.run_with_heartbeat("quick", lambda: "busy", lambda: 42) == 42
    previous = signal.signal(signal.SIGALRM, interrupt)
    start = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(KeyboardInterrupt):
            progress.run_with_heartbeat("slow stage", lambda: "busy", lambda: time.sleep(10))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < 2
    assert any(r.getMessage().startswith("slow stage: busy (") for r in caplog.records)

    def fail() -> None:
        raise DataError("raised in the thread")

    with pytest.raises(DataError, match="raised in the thread"):
        progress.run_with_heartbeat("failing", str, fail)


def test_a_worker_that_dies_is_an_error_not_a_hang(tmp_path: Path) -> None:
    from mtkit.corpus.encode import ChunkEncoder
    from mtkit.corpus.layout import TextWriter

    writer = TextWriter(tmp_path / "text.arrow")
    for _ in range(3):
        writer.write(["red cat"], ["CAT RED"])
    writer.close()
    model = SubwordModel(train_subword_model(tiny_pairs(50)[0], TOK))
    encoder = ChunkEncoder(TextCodec(model, model, True), 2, (tmp_path / "missing.model", None))
    with pytest.raises(RuntimeError, match="worker process exited"), encoder:
        list(encoder.encode(tmp_path / "text.arrow", None))


def test_fingerprints_of_big_files_are_remembered_until_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big corpus is not hashed again on every run; a changed file always is."""
    import mtkit.corpus.fingerprint as fingerprint

    monkeypatch.setenv("MTKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fingerprint, "MEMO_MIN_BYTES", 10)
    path = write_lines(tmp_path / "train.xx", ["red cat"] * 50)
    expected = fingerprint.sha256_file(path)
    monkeypatch.setattr(fingerprint, "RACY_S", 3600.0)  # just written: not remembered yet
    assert fingerprint.file_digest(path) == expected
    assert not (tmp_path / "cache" / fingerprint.MEMO_FILE).exists()
    monkeypatch.setattr(fingerprint, "RACY_S", -1.0)
    assert fingerprint.file_digest(path) == expected
    assert (tmp_path / "cache" / fingerprint.MEMO_FILE).is_file()
    hashed = []
    real = fingerprint.sha256_file
    monkeypatch.setattr(fingerprint, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert fingerprint.file_digest(path) == expected and hashed == []  # remembered
    write_lines(path, ["big cat"] * 50)  # same size, new content
    assert fingerprint.file_digest(path) == real(path) != expected and hashed == [path]
    monkeypatch.setattr(fingerprint, "MEMO_MIN_BYTES", 10**9)
    assert fingerprint.file_digest(path) == real(path)  # small files: always hashed


def test_the_data_command_answers_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mtkit-data --help`` says how to call it (the overrides are Hydra's, not argparse's)."""
    from mtkit.data import main

    monkeypatch.setattr("sys.argv", ["mtkit-data", "--help"])
    main()
    out = capsys.readouterr().out
    assert out.startswith("usage: mtkit-data [KEY=VALUE ...]") and "data.*" in out
