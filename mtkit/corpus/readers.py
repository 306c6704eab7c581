"""Readers that turn parallel text on disk into validated ``(source, target)`` string pairs.

Each reader yields pairs in file order with whitespace stripped; empty pairs are kept
here (and dropped later, with a count) so that line numbers in error messages stay true.
Files are read as bytes and split on ``\\n`` only, so a stray ``\\r`` or Unicode line
separator inside a sentence can never shift the alignment of the pairs that follow, and
a UTF-8 byte order mark at the start of a file is dropped (it is not part of the text).
:func:`read_lines` is the same UTF-8 line reader for the command-line tools
(``mtkit.translate``, ``mtkit.evaluate``), stdin and pipes included.
"""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import BinaryIO, TextIO

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
        for number, text in _decoded(handle, str(path)):
            yield number, text.strip() if strip else text


def read_lines(
    path: str | Path | None, what: str, errors: str = "strict", hint: str = ""
) -> list[str]:
    """Every line of ``path``, or of stdin when it is None, without its line end.

    Invalid UTF-8 is a DataError naming the file and line (``hint`` is appended), unless
    ``errors="replace"`` substitutes it. ``what`` names the file's role in errors. Besides
    regular files, ``path`` may be a pipe or a device (``<(command)``, ``/dev/stdin``).
    """
    if path is None:
        stream = require_stdin(what)
        return _read_all(stream.buffer, "<stdin>", errors, hint)
    file = require_readable(path, what)
    try:
        handle = file.open("rb")
    except OSError as error:
        raise DataError(f"{file}: cannot read ({error.strerror or error})") from None
    with handle:
        return _read_all(handle, str(file), errors, hint)


def require_stdin(what: str) -> TextIO:
    """``sys.stdin``, or a one-line error when the process was started with it closed."""
    if sys.stdin is None:
        raise DataError(f"no input: stdin is closed (give {what})")
    return sys.stdin


def require_readable(path: str | Path, what: str) -> Path:
    """Like :func:`require_file`, but a pipe or a device is accepted too."""
    resolved = Path(path).expanduser()
    if resolved.exists() and not resolved.is_dir():
        return resolved
    return require_file(resolved, what)


def _read_all(stream: BinaryIO, name: str, errors: str, hint: str) -> list[str]:
    try:
        return [text for _, text in _decoded(stream, name, errors, hint)]
    except OSError as error:  # e.g. stdin redirected from a folder
        raise DataError(f"{name}: cannot read ({error.strerror or error})") from None


def _decoded(
    stream: BinaryIO, name: str, errors: str = "strict", hint: str = ""
) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without its line end) for each line of a byte stream.

    A byte order mark opening the first line is dropped.
    """
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8", errors=errors)
        except UnicodeDecodeError as error:
            problem = f"invalid UTF-8 ({error.reason} at byte {error.start})"
            raise DataError(f"{name}:{number}: {problem}{hint}") from None
        yield number, text.rstrip("\r\n")


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
