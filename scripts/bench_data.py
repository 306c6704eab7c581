#!/usr/bin/env python
"""Data pipeline benchmark: corpus preparation time, cache reuse, padding and memory.

Measures, each in a fresh Python process so imports and caches are honest:

- Multi30k de-en with the default tokenizer (sentencepiece unigram, joint, vocabulary
  8000): reading + sentencepiece training + tokenizing on a cold cache, then the same
  call again served from the cache. Both the ``load_corpus`` call and the whole process
  (start-up and imports included) are timed.
- The padding overhead of the default sampler (``batch_tokens=4000``, default pool) on
  Multi30k train, averaged over a few epochs.
- Tatoeba en-fr: load + tokenize (cold cache) + build every batch of one epoch (index
  batches, then padded tensors), with the peak resident memory of that process.

Usage::

    python scripts/bench_data.py [--corpus-root ../shared/corpora] [--cache-dir DIR] [--epochs 5]

Output: a header line, then one line per measurement,
``name  value unit  target ...  ok|MISS``; lines starting with ``#`` are context.
The format is stable for comparing runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPORA = REPO.parent / "shared" / "corpora"

TARGET_COLD_S = 60.0
TARGET_CACHED_S = 5.0
TARGET_PADDING_PCT = 10.0
TARGET_RSS_MB = 1500.0  # 1.5 GB
SEED = 1234  # train.seed default
BATCH_TOKENS = 4000  # data.batch_tokens default

CORPORA: dict[str, dict[str, Any]] = {
    "multi30k": {
        "folder": "multi30k",
        "src_lang": "de",
        "tgt_lang": "en",
        "valid_split": "val",
        "test_split": "test2016",
    },
    "tatoeba": {
        "folder": "tatoeba-en-fr",
        "src_lang": "en",
        "tgt_lang": "fr",
        "valid_split": "dev",
        "test_split": "test",
    },
}


# ----------------------------------------------------------------------------- children


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return peak * scale / 1e6


def timed_load(corpus: str, root: Path, cache_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Run ``load_corpus`` with the default tokenizer; say whether it built or reused."""
    import mtkit.data
    from mtkit.config import DataConfig, TokenizerConfig

    built = []
    real_build = mtkit.data._build

    def build(*args: Any, **kwargs: Any) -> None:
        built.append(True)
        real_build(*args, **kwargs)

    mtkit.data._build = build  # type: ignore[assignment]
    spec = CORPORA[corpus]
    cfg = DataConfig(
        format="dir",
        dir=str(root / spec["folder"]),
        src_lang=spec["src_lang"],
        tgt_lang=spec["tgt_lang"],
        valid_split=spec["valid_split"],
        test_split=spec["test_split"],
        batch_tokens=BATCH_TOKENS,
    )
    start = time.perf_counter()
    loaded = mtkit.data.load_corpus(cfg, TokenizerConfig(), cache_dir)
    seconds = time.perf_counter() - start
    stats = loaded.stats
    info = {
        "load_s": seconds,
        "built": bool(built),
        "train_pairs": stats["train_pairs"],
        "valid_pairs": stats["valid_pairs"],
        "test_pairs": stats.get("test_pairs", 0),
        "long_dropped": stats.get("train_long_dropped", 0),
        "empty_dropped": stats.get("train_empty_dropped", 0),
        "vocab": stats["src_vocab"],
    }
    return loaded, info


def child_load(args: argparse.Namespace) -> dict[str, Any]:
    _, info = timed_load(args.child_corpus, args.corpus_root, args.cache_dir)
    info["peak_rss_mb"] = peak_rss_mb()
    return info


def child_padding(args: argparse.Namespace) -> dict[str, Any]:
    from mtkit.batching import TokenBatchSampler, padding_overhead

    loaded, info = timed_load("multi30k", args.corpus_root, args.cache_dir)
    train = loaded.splits["train"]
    sampler = TokenBatchSampler(train.src_lengths, train.tgt_lengths, BATCH_TOKENS, seed=SEED)
    overheads, counts = [], []
    for epoch in range(args.epochs):
        batches = sampler.batches(epoch)
        overheads.append(padding_overhead(batches, train.src_lengths, train.tgt_lengths))
        counts.append(len(batches))
    info.update(
        padding_pct=100 * sum(overheads) / len(overheads),
        padding_min_pct=100 * min(overheads),
        padding_max_pct=100 * max(overheads),
        batches_per_epoch=sum(counts) / len(counts),
    )
    return info


def child_epoch(args: argparse.Namespace) -> dict[str, Any]:
    from mtkit.batching import TokenBatchSampler, collate, padding_overhead

    loaded, info = timed_load("tatoeba", args.corpus_root, args.cache_dir)
    train = loaded.splits["train"]
    start = time.perf_counter()
    sampler = TokenBatchSampler(train.src_lengths, train.tgt_lengths, BATCH_TOKENS, seed=SEED)
    batches = sampler.batches(0)
    info["sample_s"] = time.perf_counter() - start
    start = time.perf_counter()
    tokens = 0
    for indices in batches:
        batch = collate(
            [train.source(i) for i in indices], [train.target(i) for i in indices], indices
        )
        tokens += batch.n_tgt_tokens
    info["collate_s"] = time.perf_counter() - start
    info["batches"] = len(batches)
    info["tgt_tokens"] = tokens
    info["padding_pct"] = 100 * padding_overhead(batches, train.src_lengths, train.tgt_lengths)
    info["peak_rss_mb"] = peak_rss_mb()
    return info


CHILDREN = {"load": child_load, "padding": child_padding, "epoch": child_epoch}


# ----------------------------------------------------------------------------- parent


def spawn(args: argparse.Namespace, mode: str, corpus: str = "multi30k") -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; add the whole process's wall time."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--child-corpus",
        corpus,
        "--corpus-root",
        str(args.corpus_root),
        "--cache-dir",
        str(args.cache_dir),
        "--epochs",
        str(args.epochs),
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"bench_data: the {mode}/{corpus} measurement failed")
    info = json.loads(result.stdout.strip().splitlines()[-1])
    info["process_s"] = seconds
    return info


def report(
    name: str, value: float, unit: str, target: str = "-", ok: bool | None = None, note: str = ""
) -> None:
    status = "-" if ok is None else "ok" if ok else "MISS"
    line = f"{name:<38} {value:>9.2f} {unit:<3} target {target:<10} {status}"
    print(f"{line}  {note}".rstrip(), flush=True)


def context(info: dict[str, Any]) -> str:
    return (
        f"train={info['train_pairs']} valid={info['valid_pairs']} test={info['test_pairs']} "
        f"vocab={info['vocab']} long_dropped={info['long_dropped']} "
        f"empty_dropped={info['empty_dropped']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpus-root",
        type=Path,
        default=DEFAULT_CORPORA,
        help="folder holding multi30k/ and tatoeba-en-fr/ (default: ../shared/corpora)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="corpus cache for the runs (default: a fresh temporary folder, removed at the end)",
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs to average padding over")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--child-corpus", choices=sorted(CORPORA), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.corpus_root = args.corpus_root.expanduser().resolve()

    if args.child:
        print(json.dumps(CHILDREN[args.child](args)), flush=True)
        return

    for spec in CORPORA.values():
        folder = args.corpus_root / spec["folder"]
        if not (folder / f"train.{spec['src_lang']}").is_file():
            raise SystemExit(f"bench_data: {folder}: no corpus there (see --corpus-root)")
    scratch = None
    if args.cache_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="mtkit-bench-data-")
        args.cache_dir = Path(scratch.name)
    args.cache_dir = args.cache_dir.expanduser().resolve()
    try:
        run_all(args)
    finally:
        if scratch is not None:
            scratch.cleanup()


def run_all(args: argparse.Namespace) -> None:
    print(
        f"bench_data python={platform.python_version()} cpus={os.cpu_count()} "
        f"tokenizer=unigram/8000/joint batch_tokens={BATCH_TOKENS} seed={SEED} "
        f"cache={args.cache_dir}",
        flush=True,
    )
    cold = spawn(args, "load")
    warm = spawn(args, "load")
    print(f"# multi30k de-en: {context(cold)}", flush=True)
    if not cold["built"]:
        print("# warning: the cold run found the corpus in the cache (use a new --cache-dir)")
    if warm["built"]:
        print("# warning: the cached run rebuilt the corpus")
    for label, info, target in (("cold", cold, TARGET_COLD_S), ("cached", warm, TARGET_CACHED_S)):
        for what in ("load_corpus", "process"):
            seconds = info["load_s" if what == "load_corpus" else "process_s"]
            name = f"multi30k_de_en.{label}.{what}"
            report(name, seconds, "s", f"<= {target:g} s", seconds <= target)

    padding = spawn(args, "padding")
    report(
        "multi30k_de_en.train.padding_overhead",
        padding["padding_pct"],
        "%",
        f"<= {TARGET_PADDING_PCT:g} %",
        padding["padding_pct"] <= TARGET_PADDING_PCT,
        f"(mean of {args.epochs} epochs, min {padding['padding_min_pct']:.2f}, "
        f"max {padding['padding_max_pct']:.2f}, {padding['batches_per_epoch']:.0f} batches)",
    )

    epoch = spawn(args, "epoch", "tatoeba")
    print(f"# tatoeba en-fr: {context(epoch)}", flush=True)
    total = epoch["load_s"] + epoch["sample_s"] + epoch["collate_s"]
    report("tatoeba_en_fr.cold.load_corpus", epoch["load_s"], "s")
    report("tatoeba_en_fr.epoch.sample_batches", epoch["sample_s"], "s")
    report(
        "tatoeba_en_fr.epoch.collate_batches",
        epoch["collate_s"],
        "s",
        note=f"({epoch['batches']} batches, {epoch['tgt_tokens']} target tokens, "
        f"padding {epoch['padding_pct']:.2f} %)",
    )
    report("tatoeba_en_fr.load_and_epoch", total, "s")
    report("tatoeba_en_fr.process", epoch["process_s"], "s")
    report(
        "tatoeba_en_fr.peak_rss",
        epoch["peak_rss_mb"],
        "MB",
        f"< {TARGET_RSS_MB:g} MB",
        epoch["peak_rss_mb"] < TARGET_RSS_MB,
        "(ru_maxrss of the load + epoch process)",
    )


if __name__ == "__main__":
    main()
