"""Readers that turn parallel text on disk into validated ``(source, target)`` string pairs.

Each reader yields pairs in file order with whitespace stripped; empty pairs are kept
here (and dropped later, with a count) so that line numbers in error messages stay true.
Files are read as bytes and split on ``\\n`` only, so a stray ``\\r`` or Unicode line
separator inside a sentence can never shift the alignment of the pairs that follow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path

from mtkit.errors import DataError

Pair = tuple[str, str]


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, or raise a one-line error naming it and its role."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        problem = "is a directory" if resolved.is_dir() else "no such file"
        raise DataError(f"{resolved}: {problem} (expected {what})")
    return resolved


def iter_lines(path: Path, strip: bool = True) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded text) for each line of ``path``.

    The text is stripped of surrounding whitespace, or only of its line end if not ``strip``.
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}:{number}: invalid UTF-8 ({error.reason} at byte {error.start})"
                ) from None
            yield number, text.strip() if strip else text.rstrip("\r\n")


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def iter_file_pair(src_path: Path, tgt_path: Path) -> Iterator[Pair]:
    """Pairs from two line-aligned files; a differing line count is an error naming both."""
    for src, tgt in zip_longest(iter_lines(src_path), iter_lines(tgt_path)):
        if src is None or tgt is None:
            n_src, n_tgt = count_lines(src_path), count_lines(tgt_path)
            raise DataError(
                f"line count mismatch: {src_path} has {n_src} lines but {tgt_path} has {n_tgt}"
            )
        yield src[1], tgt[1]


def iter_tsv(path: Path) -> Iterator[Pair]:
    """Pairs from ``source<TAB>target`` lines (a blank line is an empty pair)."""
    for number, line in iter_lines(path, strip=False):
        if not line.strip():
            yield "", ""
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"{path}:{number}: expected 'source<TAB>target' (2 tab-separated fields), "
                f"found {len(fields)}"
            )
        yield fields[0].strip(), fields[1].strip()


def iter_jsonl(path: Path, src_lang: str, tgt_lang: str) -> Iterator[Pair]:
    """Pairs from lines such as ``{"translation": {"de": "...", "en": "..."}}``."""
    expected = f'{{"translation": {{"{src_lang}": "...", "{tgt_lang}": "..."}}}}'
    for number, line in iter_lines(path):
        if not line:
            yield "", ""
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: invalid JSON ({error.msg})") from None
        translation = record.get("translation") if isinstance(record, dict) else None
        if not isinstance(translation, dict):
            raise DataError(f"{path}:{number}: expected an object like {expected}")
        src, tgt = translation.get(src_lang), translation.get(tgt_lang)
        if not isinstance(src, str) or not isinstance(tgt, str):
            raise DataError(
                f"{path}:{number}: expected string values for both languages, like {expected}"
            )
        yield src.strip(), tgt.strip()
