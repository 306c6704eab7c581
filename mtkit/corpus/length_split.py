"""A length-stratified Multi30k-style corpus: train on short sentences, test on every length.

Bahdanau et al. (2015, Fig. 2) train on sentences of up to 30 or 50 words and plot test
BLEU by source length up to 60+ words. Multi30k's captions are short (test2016 has 35
German sentences of 20+ words), so :func:`build_length_split` writes a ``dir``-format
folder (``{split}.{lang}`` files, ``conf/data/multi30k_long.yaml``) where:

* ``train`` and ``val`` keep the pairs whose source has fewer than ``max_words`` words
  (words: whitespace-separated tokens of the source line);
* ``test`` holds natural sentences of every length: all of the test split, then the
  held-out long pairs of train and val (>= ``max_words`` words), which are in no
  training or validation file;
* ``concat`` joins consecutive, non-overlapping groups of k test pairs (k = 1 ..
  ``concat``; sources with a space, targets likewise) to reach 50+ words; their clause
  boundaries are artificial, and the manifest says so.

The folder is written into a temporary sibling and renamed into place; its
``manifest.json`` records the settings, the inputs' sha256 and the outputs' line counts,
hashes and source-length histograms, so rebuilding with the same inputs and settings
does nothing. Pairs with an empty side are dropped (training drops them too).

``python -m mtkit.corpus.length_split SOURCE_DIR OUT_DIR [--src de --tgt en ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtkit.corpus.fingerprint import sha256_file
from mtkit.corpus.readers import Pair, count_lines, iter_file_pair, require_file
from mtkit.errors import ConfigError, DataError, run_cli

PROG = "mtkit-length-split"
MANIFEST = "manifest.json"
VERSION = 1
HISTOGRAM = ((1, 9), (10, 19), (20, 29), (30, 39), (40, 49), (50, None))
CONCAT_NOTE = (
    "concat: k consecutive test pairs joined with a space (k = 1..concat); the sentence "
    "boundaries inside a line are artificial, not natural long sentences"
)


def words(text: str) -> int:
    """Source length in words: whitespace-separated tokens of the raw line."""
    return len(text.split())


def histogram(pairs: Sequence[Pair]) -> dict[str, int]:
    """Source word-length counts in the buckets 1-9, 10-19, ..., 50+."""
    counts = {_label(lo, hi): 0 for lo, hi in HISTOGRAM}
    for source, _ in pairs:
        n = words(source)
        lo, hi = next((lo, hi) for lo, hi in HISTOGRAM if hi is None or n <= hi)
        counts[_label(lo, hi)] += 1
    return counts


def _label(lo: int, hi: int | None) -> str:
    return f"{lo}-{hi}" if hi is not None else f"{lo}+"


def concatenations(pairs: Sequence[Pair], concat: int) -> tuple[list[Pair], dict[str, int]]:
    """Groups of k consecutive pairs joined, for k = 1..concat, and the group count per k.

    Groups do not overlap within one k; a remainder shorter than k is left out, so there
    are ``len(pairs) // k`` lines for each k, in the order k = 1, 2, ...
    """
    joined: list[Pair] = []
    counts: dict[str, int] = {}
    for k in range(1, concat + 1):
        groups = [pairs[start : start + k] for start in range(0, len(pairs) - k + 1, k)]
        joined += [(" ".join(s for s, _ in g), " ".join(t for _, t in g)) for g in groups]
        counts[str(k)] = len(groups)
    return joined, counts


def _read_pairs(folder: Path, split: str, src: str, tgt: str) -> tuple[list[Pair], int]:
    """A split's non-empty pairs and how many empty ones were dropped; one-line errors."""
    paths = [require_file(folder / f"{split}.{lang}", f"the {split} split") for lang in (src, tgt)]
    pairs = list(iter_file_pair(*paths))
    kept = [(s, t) for s, t in pairs if s and t]
    return kept, len(pairs) - len(kept)


def _plan(
    source_dir: Path, settings: dict[str, Any]
) -> tuple[dict[str, list[Pair]], dict[str, Any]]:
    """The output splits (name -> pairs) and what the manifest says about how they came."""
    src, tgt, bound = settings["src_lang"], settings["tgt_lang"], settings["max_words"]
    names = settings["splits"]
    read = {role: _read_pairs(source_dir, names[role], src, tgt) for role in names}
    short = {r: [p for p in read[r][0] if words(p[0]) < bound] for r in ("train", "val")}
    long = {r: [p for p in read[r][0] if words(p[0]) >= bound] for r in ("train", "val")}
    natural = read["test"][0]
    concat, groups = concatenations(natural, settings["concat"])
    outputs = {
        "train": short["train"],
        "val": short["val"],
        "test": natural + long["train"] + long["val"],
        "concat": concat,
    }
    for name, role in (("train", "train"), ("val", "val"), ("test", "test")):
        if not outputs[name]:
            where = source_dir / f"{names[role]}.{src}"
            wanted = "no sentence pairs" if name == "test" else f"no pair under {bound} words"
            raise DataError(f"{where}: {wanted} (the {name} split would be empty)")
    details = {
        "test_parts": {
            names["test"]: len(natural),
            f"{names['train']} >= {bound} words": len(long["train"]),
            f"{names['val']} >= {bound} words": len(long["val"]),
        },
        "concat_groups": groups,
        "empty_pairs_dropped": {names[r]: read[r][1] for r in names},
    }
    return outputs, details


def _write_split(folder: Path, name: str, pairs: Sequence[Pair], src: str, tgt: str) -> None:
    for lang, side in ((src, 0), (tgt, 1)):
        text = "".join(pair[side] + "\n" for pair in pairs)
        (folder / f"{name}.{lang}").write_text(text, encoding="utf-8")


def _manifest(folder: Path, outputs: dict[str, list[Pair]], head: dict[str, Any]) -> dict[str, Any]:
    files = {
        path.name: {"lines": count_lines(path), "sha256": sha256_file(path)}
        for path in sorted(folder.iterdir())
    }
    hist = {name: histogram(pairs) for name, pairs in outputs.items()}
    return {**head, "note": CONCAT_NOTE, "files": files, "source_words": hist}


def is_current(out_dir: Path, head: dict[str, Any]) -> bool:
    """Whether ``out_dir`` was built from these inputs with these settings and is intact."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        if any(manifest.get(key) != value for key, value in head.items()):
            return False
        files = manifest["files"]
        return all(sha256_file(out_dir / name) == entry["sha256"] for name, entry in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _publish(work: Path, out_dir: Path, head: dict[str, Any]) -> None:
    """Rename ``work`` to ``out_dir``, replacing an older build; a current one stays."""
    if out_dir.exists():
        if is_current(out_dir, head):
            return  # built meanwhile by another process
        stale = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, stale / out_dir.name)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(work, out_dir)
    except OSError:
        if not is_current(out_dir, head):
            raise


def _check_target(out_dir: Path) -> None:
    """Refuse to replace anything but an earlier build (a folder with our manifest)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise ConfigError(
            f"{out_dir}: is a folder without {MANIFEST} (not a length split); choose a new one"
        )


def build_length_split(
    source_dir: str | Path,
    out_dir: str | Path,
    src_lang: str,
    tgt_lang: str,
    max_words: int = 20,
    concat: int = 5,
    train: str = "train",
    val: str = "val",
    test: str = "test2016",
) -> tuple[dict[str, Any], bool]:
    """Build (or keep) the length split of ``source_dir``; (its manifest, whether built now).

    ``train``/``val``/``test`` name the input splits (``{split}.{lang}`` files).
    """
    if max_words < 1 or concat < 1:
        raise ConfigError(f"max_words and concat must be >= 1, got {max_words} and {concat}")
    if src_lang == tgt_lang:
        raise ConfigError(f"the target language must differ from the source ({src_lang})")
    source, out = Path(source_dir).expanduser(), Path(out_dir).expanduser()
    if not source.is_dir():
        raise DataError(f"{source}: no such folder (expected {{split}}.{{lang}} files)")
    splits = {"train": train, "val": val, "test": test}
    settings = {"src_lang": src_lang, "tgt_lang": tgt_lang, "max_words": max_words}
    settings.update(concat=concat, splits=splits)
    inputs = {
        f"{name}.{lang}": sha256_file(require_file(source / f"{name}.{lang}", f"the {role} split"))
        for role, name in splits.items()
        for lang in (src_lang, tgt_lang)
    }
    head = {"version": VERSION, "settings": settings, "inputs": inputs}
    if is_current(out, head):
        return json.loads((out / MANIFEST).read_text(encoding="utf-8")), False
    _check_target(out)
    outputs, details = _plan(source, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        for name, pairs in outputs.items():
            _write_split(work, name, pairs, src_lang, tgt_lang)
        manifest = {**_manifest(work, outputs, head), **details}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _publish(work, out, head)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest, True


def summary(manifest: dict[str, Any]) -> list[str]:
    """One line per output split: its pairs and source-length histogram."""
    src = manifest["settings"]["src_lang"]
    lines = []
    for name, counts in manifest["source_words"].items():
        pairs = manifest["files"][f"{name}.{src}"]["lines"]
        shown = ", ".join(f"{label}: {n}" for label, n in counts.items())
        lines.append(f"{name}: {pairs} pairs (source words {shown})")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a length-stratified copy of a Multi30k-style folder: train and "
        "val below --max-words source words; test: the test split plus the held-out long "
        "pairs; concat: test pairs joined k = 1..--concat at a time (artificial).",
    )
    parser.add_argument("source_dir", metavar="SOURCE_DIR", help="{split}.{lang} files")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write")
    parser.add_argument("--src", default="de", help="source language (default de)")
    parser.add_argument("--tgt", default="en", help="target language (default en)")
    parser.add_argument("--max-words", type=int, default=20, help="train/val bound (default 20)")
    parser.add_argument("--concat", type=int, default=5, help="most pairs joined (default 5)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    manifest, built = build_length_split(
        args.source_dir, args.out_dir, args.src, args.tgt, args.max_words, args.concat
    )
    print(f"{args.out_dir}: {'built' if built else 'already built, unchanged'}")
    for line in summary(manifest):
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    raise SystemExit(run_cli(lambda: run(args), PROG))


if __name__ == "__main__":
    main()
