#!/usr/bin/env python
"""Training throughput of the reference model on real Multi30k de-en batches.

Measures target tokens per second for a full training step (forward, loss, backward,
gradient clipping, Adam update) over real token-budget batches, for:

- the reference configuration (embeddings 256, bidirectional GRU 256 per direction,
  GRU decoder 512 with Bahdanau attention, joint vocabulary 8000, ~4000 tokens per
  batch) in fp32 and bf16;
- the same model with a 32000 joint vocabulary, full softmax vs. sampled softmax (K=512).

Usage::

    python scripts/bench_train.py --corpus ../shared/corpora/multi30k [--steps 20] [--device cpu]

The output is one line per configuration, ``name  precision  tokens/s  ms/step``, then
the ratios the project tracks; the format is stable for comparing runs.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace

import torch

from mtkit.batching import TokenBatchSampler, collate
from mtkit.config import DataConfig, LossConfig, ModelConfig, TokenizerConfig
from mtkit.data import CorpusSplit, load_corpus
from mtkit.loss import Criterion, target_counts
from mtkit.model import build_model
from mtkit.runtime import autocast_context, configure, resolve_device
from mtkit.trainer import train_step


def measure(
    split: CorpusSplit,
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    src_model,
    tgt_model,
    precision: str,
    device: torch.device,
    steps: int,
    warmup: int,
    batch_tokens: int,
) -> tuple[float, float]:
    """(target tokens/s, ms/step) over ``steps`` real batches after ``warmup`` batches."""
    torch.manual_seed(1)
    model = build_model(model_cfg, src_model, tgt_model, split.tgt_values).to(device).train()
    counts = target_counts(split.tgt_values, len(split), model.output_ids)
    criterion = Criterion(loss_cfg, len(model.output_ids), counts)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = TokenBatchSampler(split.src_lengths, split.tgt_lengths, batch_tokens, seed=1)
    batches = sampler.batches(0)[: warmup + steps]
    tokens = 0
    start = 0.0
    for i, indices in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = collate(
            [split.source(j) for j in indices], [split.target(j) for j in indices], indices
        ).to(device)
        with autocast_context(device, precision):
            train_step(model, criterion, optimizer, batch, clip_norm=5.0)
        if i >= warmup:
            tokens += batch.n_tgt_tokens
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return tokens / elapsed, 1000 * elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpus", default="../shared/corpora/multi30k", help="directory with train.de / train.en"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed batches per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--batch-tokens", type=int, default=4000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="", help="comma-separated subset of configuration names")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = resolve_device(args.device)
    configure()

    data_cfg = DataConfig(
        format="dir",
        dir=args.corpus,
        src_lang="de",
        tgt_lang="en",
        valid_split="val",
        test_split=None,
        batch_tokens=args.batch_tokens,
    )
    reference = ModelConfig(
        cell="gru",
        embed_dim=256,
        encoder_hidden=256,
        decoder_hidden=512,
        bidirectional=True,
        attention="bahdanau",
        input_feed=True,
    )
    full = LossConfig(label_smoothing=0.1)
    sampled = replace(full, sampled_softmax=True, num_samples=512)
    runs = [
        ("ref-8k", 8000, full, "fp32"),
        ("ref-8k", 8000, full, "bf16"),
        ("full-32k", 32000, full, "fp32"),
        ("sampled-32k", 32000, sampled, "fp32"),
        ("full-32k", 32000, full, "bf16"),
        ("sampled-32k", 32000, sampled, "bf16"),
    ]
    wanted = set(filter(None, args.only.split(",")))
    results: dict[tuple[str, str], float] = {}
    corpora = {}
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"batch_tokens={args.batch_tokens} steps={args.steps}"
    )
    for name, vocab, loss_cfg, precision in runs:
        if wanted and name not in wanted:
            continue
        if vocab not in corpora:
            corpora[vocab] = load_corpus(data_cfg, TokenizerConfig(vocab_size=vocab))
        corpus = corpora[vocab]
        rate, ms = measure(
            corpus.splits["train"],
            reference,
            loss_cfg,
            corpus.codec.src,
            corpus.codec.tgt,
            precision,
            device,
            args.steps,
            args.warmup,
            args.batch_tokens,
        )
        results[(name, precision)] = rate
        print(f"{name:<12} {precision:<5} {rate:9.0f} tgt_tok/s {ms:8.1f} ms/step", flush=True)

    def ratio(a: tuple[str, str], b: tuple[str, str], label: str) -> None:
        if a in results and b in results:
            print(f"{label:<34} {results[a] / results[b]:.2f}x")

    ratio(("ref-8k", "bf16"), ("ref-8k", "fp32"), "bf16 / fp32 (reference)")
    ratio(("sampled-32k", "fp32"), ("full-32k", "fp32"), "sampled / full softmax (32k, fp32)")
    ratio(("sampled-32k", "bf16"), ("full-32k", "bf16"), "sampled / full softmax (32k, bf16)")


if __name__ == "__main__":
    main()
