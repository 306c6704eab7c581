#!/usr/bin/env python
"""Where a training step and a decoding step spend their time: self time per operator.

Usage::

    python scripts/profile_step.py CHECKPOINT [--corpus ../shared/corpora/multi30k]
        [--src ../shared/corpora/multi30k/test2016.de] [--precision fp32] [--top 15]

Two profiles with ``torch.profiler`` (CPU activities, after warm-up):

- **train**: ``--steps`` training steps of the reference model of
  ``scripts/bench_train.py`` (``ref-8k``: bidirectional GRU 2 x 256, GRU decoder 512,
  Bahdanau attention, ~4000-token Multi30k batches): forward, loss, backward, clipping,
  Adam;
- **decode**: greedy search and beam 5 with the checkpoint over the first
  ``--sentences`` source lines (``Translator.translate``, the path of ``mtkit.translate``).

For each it prints the operators by self CPU time: milliseconds, share of the total,
calls, and calls per target token (per output token for decoding), so "fewer ops per
step" can be read off directly, then the totals. The format is stable for before/after
comparisons (docs/performance.md).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

from mtkit.runtime import prefer_passive_wait

prefer_passive_wait()  # before torch loads, as the mtkit commands do

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from mtkit.config import DataConfig, LossConfig, ModelConfig, TokenizerConfig  # noqa: E402
from mtkit.corpus.batching import TokenBatchSampler, collate  # noqa: E402
from mtkit.corpus.cache import load_corpus  # noqa: E402
from mtkit.model.loss import Criterion  # noqa: E402
from mtkit.model.seq2seq import build_model  # noqa: E402
from mtkit.runtime import autocast_context, tune_process  # noqa: E402
from mtkit.search.translator import Translator  # noqa: E402
from mtkit.training.trainer import train_step  # noqa: E402

REFERENCE = ModelConfig(
    cell="gru",
    embed_dim=256,
    encoder_hidden=256,
    decoder_hidden=512,
    bidirectional=True,
    attention="bahdanau",
    input_feed=True,
)


def print_table(title: str, prof: profile, tokens: int, seconds: float, top: int) -> None:
    """Operators by self CPU time, with calls per token."""
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in events)
    calls = sum(e.count for e in events)
    print(f"\n== {title}: {tokens} tokens, {seconds:.2f} s wall, {tokens / seconds:.0f} tok/s")
    print(f"{'operator':<44} {'self ms':>9} {'share':>6} {'calls':>8} {'calls/tok':>9}")
    for event in events[:top]:
        print(
            f"{event.key[:44]:<44} {event.self_cpu_time_total / 1000:9.1f} "
            f"{100 * event.self_cpu_time_total / total_us:5.1f}% {event.count:8d} "
            f"{event.count / tokens:9.2f}"
        )
    print(
        f"{'all operators':<44} {total_us / 1000:9.1f} {100.0:5.1f}% {calls:8d} "
        f"{calls / tokens:9.2f}"
    )


def profiled(run: Callable[[], int]) -> tuple[profile, int, float]:
    """Profile one call of ``run`` (which returns the tokens it produced)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        tokens = run()
        seconds = time.perf_counter() - start
    return prof, tokens, seconds


def profile_training(corpus_dir: str, precision: str, steps: int, top: int) -> None:
    data = DataConfig(
        format="dir", dir=corpus_dir, src_lang="de", tgt_lang="en",
        valid_split="val", test_split=None, batch_tokens=4000,
    )  # fmt: skip
    corpus = load_corpus(data, TokenizerConfig(vocab_size=8000))
    split = corpus.splits["train"]
    torch.manual_seed(1)
    model = build_model(REFERENCE, corpus.codec.src, corpus.codec.tgt, split.tgt_values).train()
    counts = model.column_counts(split.tgt_values, len(split))
    criterion = Criterion(LossConfig(label_smoothing=0.1), len(model.output_ids), counts)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = TokenBatchSampler(split.src_lengths, split.tgt_lengths, 4000, seed=1)
    batches = [
        collate([split.source(j) for j in ids], [split.target(j) for j in ids])
        for ids in sampler.batches(0)[: steps + 2]
    ]

    def step(batch_list: list) -> int:
        with autocast_context(torch.device("cpu"), precision):
            for batch in batch_list:
                train_step(model, criterion, optimizer, batch, clip_norm=5.0)
        return sum(b.n_tgt_tokens for b in batch_list)

    step(batches[:2])  # warm-up
    prof, tokens, seconds = profiled(lambda: step(batches[2:]))
    print_table(f"train ref-8k {precision}, {steps} steps", prof, tokens, seconds, top)


def profile_decoding(checkpoint: str, src: str, precision: str, sentences: int, top: int) -> None:
    lines = Path(src).read_text(encoding="utf-8").splitlines()[:sentences]
    translator = Translator.from_checkpoint(checkpoint, precision=precision)
    for beam in (1, 5):
        translator.translate(lines[:32], beam_size=beam)  # warm-up

        def run(beam: int = beam) -> int:
            found = translator.translate_nbest(lines, beam_size=beam)
            return sum(len(hyps[0].tokens) + 1 for hyps in found)  # with EOS

        prof, tokens, seconds = profiled(run)
        title = f"decode beam {beam} {precision}, {len(lines)} sentences"
        print_table(title, prof, tokens, seconds, top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a Multi30k de-en checkpoint for the decoding profile")
    parser.add_argument("--corpus", default="../shared/corpora/multi30k")
    parser.add_argument("--src", default="../shared/corpora/multi30k/test2016.de")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--steps", type=int, default=5, help="profiled training steps")
    parser.add_argument("--sentences", type=int, default=500, help="profiled source lines")
    parser.add_argument("--top", type=int, default=15, help="operators shown per profile")
    parser.add_argument("--only", choices=("train", "decode"), help="one of the two profiles")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_process()
    print(f"threads={torch.get_num_threads()} torch={torch.__version__}")
    if args.only in (None, "train"):
        profile_training(args.corpus, args.precision, args.steps, args.top)
    if args.only in (None, "decode"):
        profile_decoding(args.checkpoint, args.src, args.precision, args.sentences, args.top)


if __name__ == "__main__":
    main()
