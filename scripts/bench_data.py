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
  batches, then padded tensors), with the peak resident memory of that process and its
  child processes (sentencepiece training, encoding workers), summed, sampled every 50 ms.

With ``--scale N`` it measures a large corpus instead: N pairs generated from Tatoeba
en-fr train (repeated, each repetition lightly varied, written to a scratch folder), with
a 16,000-piece vocabulary. It prepares the corpus with a cold cache (time per million
pairs; peak resident memory of the whole process tree, the encoding workers included,
sampled every 50 ms), reloads it from the cache (time), and builds one epoch's batches
(resident memory on top of the loaded corpus).

Usage::

    python scripts/bench_data.py [--corpus-root ../shared/corpora] [--cache-dir DIR] [--epochs 5]
    python scripts/bench_data.py --scale 1000000 [--work-dir DIR] [--vocab 16000]

Output: a header line, then one line per measurement,
``name  value unit  target ...  ok|MISS``; lines starting with ``#`` are context.
The format is stable for comparing runs. Progress of long steps goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
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
TARGET_SCALE_S_PER_M = 25.0  # cold preparation, seconds per million pairs
TARGET_SCALE_RSS_MB = 1000.0
TARGET_SCALE_RELOAD_S = 1.0
TARGET_SCALE_EPOCH_MB = 300.0
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


SYNTHETIC = {
    "folder": "synthetic",
    "src_lang": "en",
    "tgt_lang": "fr",
    "valid_split": "dev",
    "test_split": "test",
}


# ----------------------------------------------------------------------------- children


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return peak * scale / 1e6


def timed_load(
    corpus: str, root: Path, cache_dir: Path, vocab: int = 8000, max_sentences: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """Run ``load_corpus`` (default tokenizer, ``vocab`` pieces); say whether it built."""
    from mtkit.config import DataConfig, TokenizerConfig
    from mtkit.corpus.cache import load_corpus

    spec = CORPORA.get(corpus, SYNTHETIC)
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
    tok = TokenizerConfig(vocab_size=vocab)
    if max_sentences is not None:
        tok.max_sentences = max_sentences
    loaded = load_corpus(cfg, tok, cache_dir)
    seconds = time.perf_counter() - start
    stats = loaded.stats
    info = {
        "load_s": seconds,
        "built": loaded.built,
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
    from mtkit.corpus.batching import TokenBatchSampler, padding_overhead

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
    from mtkit.corpus.batching import TokenBatchSampler, collate, padding_overhead

    loaded, info = timed_load("tatoeba", args.corpus_root, args.cache_dir)
    train = loaded.splits["train"]
    start = time.perf_counter()
    sampler = TokenBatchSampler(train.src_lengths, train.tgt_lengths, BATCH_TOKENS, seed=SEED)
    batches = sampler.batches(0)
    info["sample_s"] = time.perf_counter() - start
    start = time.perf_counter()
    tokens = 0
    for indices in batches:
        batch = collate([train.source(i) for i in indices], [train.target(i) for i in indices])
        tokens += batch.n_tgt_tokens
    info["collate_s"] = time.perf_counter() - start
    info["batches"] = len(batches)
    info["tgt_tokens"] = tokens
    info["padding_pct"] = 100 * padding_overhead(batches, train.src_lengths, train.tgt_lengths)
    info["peak_rss_mb"] = peak_rss_mb()
    return info


def child_scale_prepare(args: argparse.Namespace) -> dict[str, Any]:
    _log_progress()
    loaded, info = timed_load(
        "synthetic", args.corpus_root, args.cache_dir, args.vocab, args.max_sentences
    )
    assert loaded.folder is not None
    info["stage_s"] = json.loads((loaded.folder / "meta.json").read_text())["seconds"]
    info["peak_rss_mb"] = peak_rss_mb()
    return info


def child_scale_reload(args: argparse.Namespace) -> dict[str, Any]:
    from mtkit.corpus.batching import TokenBatchSampler

    loaded, info = timed_load(
        "synthetic", args.corpus_root, args.cache_dir, args.vocab, args.max_sentences
    )
    train = loaded.splits["train"]
    before = _status_mb("VmRSS")
    reset = _reset_peak_rss()
    start = time.perf_counter()
    sampler = TokenBatchSampler(train.src_lengths, train.tgt_lengths, BATCH_TOKENS, seed=SEED)
    batches = sampler.batches(0)
    info["sample_s"] = time.perf_counter() - start
    info["batches"] = len(batches)
    peak = _status_mb("VmHWM") if reset else peak_rss_mb()
    info["epoch_extra_mb"] = peak - before
    info["peak_is_since_load"] = reset
    return info


def _log_progress() -> None:
    """The preparation's progress lines on stderr (stdout carries the result)."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("mtkit")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB; ru_maxrss where absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return peak_rss_mb()


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux), so the next peak is the epoch's alone."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


CHILDREN = {
    "load": child_load,
    "padding": child_padding,
    "epoch": child_epoch,
    "scale-prepare": child_scale_prepare,
    "scale-reload": child_scale_reload,
}


# ----------------------------------------------------------------------------- parent


def spawn(args: argparse.Namespace, mode: str, corpus: str = "multi30k") -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; add its wall time and tree's peak RSS."""
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
        "--vocab",
        str(args.vocab),
        *(["--max-sentences", str(args.max_sentences)] if args.max_sentences else []),
    ]
    scale = mode.startswith("scale")
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=None if scale else subprocess.PIPE,  # the scale runs show their progress
        text=True,
        cwd=REPO,
    )
    tree_peak = TreeRss(process.pid)
    tree_peak.start()
    stdout, stderr = process.communicate()
    tree_peak.stop()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        sys.stderr.write(stderr or "")
        raise SystemExit(f"bench_data: the {mode}/{corpus} measurement failed")
    info = json.loads(stdout.strip().splitlines()[-1])
    info["process_s"] = seconds
    info["tree_peak_mb"] = tree_peak.peak_mb
    return info


class TreeRss:
    """Samples the summed RSS of a process and its descendants every 50 ms (Linux)."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid, self.peak_mb = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, sum(map(_rss_mb, _tree(self.pid))))


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from the parent ids in /proc/*/stat."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return 0.0


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
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        metavar="N",
        help="measure a synthetic corpus of N pairs made from Tatoeba en-fr train instead",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where --scale writes its corpus and cache (default: a temporary folder; "
        "10M pairs need about 4 GB)",
    )
    parser.add_argument(
        "--vocab", type=int, default=None, help="vocabulary size (default 8000; --scale 16000)"
    )
    parser.add_argument(
        "--max-sentences",
        type=int,
        default=None,
        help="tokenizer.max_sentences (default: the tokenizer's default)",
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument(
        "--child-corpus", choices=[*sorted(CORPORA), "synthetic"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    args.corpus_root = args.corpus_root.expanduser().resolve()

    if args.vocab is None:
        args.vocab = 16000 if args.scale or args.child_corpus == "synthetic" else 8000
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)), flush=True)
        return
    if args.scale is not None:
        run_scale(args)
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
    peak = max(epoch["tree_peak_mb"], epoch["peak_rss_mb"])
    report(
        "tatoeba_en_fr.peak_rss",
        peak,
        "MB",
        f"< {TARGET_RSS_MB:g} MB",
        peak < TARGET_RSS_MB,
        f"(the load + epoch process and its sentencepiece/encoding children, summed; "
        f"the process alone {epoch['peak_rss_mb']:.0f} MB)",
    )


# ----------------------------------------------------------------------------- --scale N


def make_synthetic(source: Path, target: Path, pairs: int) -> None:
    """``pairs`` training pairs from ``source``'s train split, repeated; dev/test as they are.

    Repetition k > 0 inserts `` k`` before each sentence's final character on both sides
    (``Tom left.`` -> ``Tom left 3.``): every pair differs, lengths barely change.
    """
    target.mkdir(parents=True, exist_ok=True)
    for split in ("dev", "test"):
        for lang in ("en", "fr"):
            (target / f"{split}.{lang}").write_bytes((source / f"{split}.{lang}").read_bytes())
    lines = {
        lang: (source / f"train.{lang}").read_text(encoding="utf-8").splitlines()
        for lang in ("en", "fr")
    }
    with (
        (target / "train.en").open("w", encoding="utf-8") as en,
        (target / "train.fr").open("w", encoding="utf-8") as fr,
    ):
        written, repetition = 0, 0
        while written < pairs:
            take = min(pairs - written, len(lines["en"]))
            for out, lang in ((en, "en"), (fr, "fr")):
                part = lines[lang][:take]
                if repetition:
                    part = [f"{x[:-1]} {repetition}{x[-1:]}" for x in part]
                out.write("\n".join(part) + "\n")
            written += take
            repetition += 1


def run_scale(args: argparse.Namespace) -> None:
    source = args.corpus_root / "tatoeba-en-fr"
    if not (source / "train.en").is_file():
        raise SystemExit(f"bench_data: {source}: no corpus there (see --corpus-root)")
    scratch = None
    if args.work_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="mtkit-bench-scale-")
        args.work_dir = Path(scratch.name)
    work = args.work_dir.expanduser().resolve()
    try:
        run_scale_in(args, source, work)
    finally:
        if scratch is not None:
            scratch.cleanup()


def run_scale_in(args: argparse.Namespace, source: Path, work: Path) -> None:
    n = args.scale
    print(
        f"bench_data scale={n} python={platform.python_version()} cpus={os.cpu_count()} "
        f"tokenizer=unigram/{args.vocab}/joint"
        f"{f'/max_sentences={args.max_sentences}' if args.max_sentences else ''} "
        f"batch_tokens={BATCH_TOKENS} seed={SEED} work={work}",
        flush=True,
    )
    start = time.perf_counter()
    make_synthetic(source, work / SYNTHETIC["folder"], n)
    print(
        f"# synthetic corpus: {n} pairs from {source.name} train, repeated with variation "
        f"(written in {time.perf_counter() - start:.1f} s)",
        flush=True,
    )
    args.corpus_root, args.cache_dir = work, work / "cache"
    if args.cache_dir.exists():
        shutil.rmtree(args.cache_dir)  # a cold cache
    cold = spawn(args, "scale-prepare", "synthetic")
    warm = spawn(args, "scale-reload", "synthetic")
    name = f"synthetic_{n}"
    print(f"# {context(cold)}", flush=True)
    stages = cold["stage_s"]
    print(
        f"# stages: read {stages['read']:.1f} s, sentencepiece {stages['sentencepiece']:.1f} s, "
        f"encode {stages['encode']:.1f} s",
        flush=True,
    )
    if not cold["built"] or warm["built"]:
        print("# warning: the cold run did not build, or the cached run rebuilt", flush=True)
    per_million = cold["load_s"] / (n / 1e6)
    report(f"{name}.cold.load_corpus", cold["load_s"], "s")
    report(
        f"{name}.cold.seconds_per_million",
        per_million,
        "s",
        f"<= {TARGET_SCALE_S_PER_M:g} s",
        per_million <= TARGET_SCALE_S_PER_M,
    )
    report(
        f"{name}.cold.peak_rss",
        cold["tree_peak_mb"],
        "MB",
        f"<= {TARGET_SCALE_RSS_MB:g} MB",
        cold["tree_peak_mb"] <= TARGET_SCALE_RSS_MB,
        f"(the process and its encoding workers, summed; the process alone "
        f"{cold['peak_rss_mb']:.0f} MB)",
    )
    report(
        f"{name}.cached.load_corpus",
        warm["load_s"],
        "s",
        f"<= {TARGET_SCALE_RELOAD_S:g} s",
        warm["load_s"] <= TARGET_SCALE_RELOAD_S,
    )
    report(
        f"{name}.epoch.sample_batches", warm["sample_s"], "s", note=f"({warm['batches']} batches)"
    )
    report(
        f"{name}.epoch.extra_rss",
        warm["epoch_extra_mb"],
        "MB",
        f"<= {TARGET_SCALE_EPOCH_MB:g} MB",
        warm["epoch_extra_mb"] <= TARGET_SCALE_EPOCH_MB,
        "(peak RSS while batching minus RSS of the loaded corpus)"
        if warm["peak_is_since_load"]
        else "(peak RSS of the process minus RSS before batching)",
    )


if __name__ == "__main__":
    main()
