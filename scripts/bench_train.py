#!/usr/bin/env python
"""Training throughput of the reference model on real Multi30k de-en batches.

Measures target tokens per second for a full training step (forward, loss, backward,
gradient clipping, Adam update) over the same real token-budget batches (joint
sentencepiece vocabulary of 8000, ~4000 tokens per batch) for:

- ``ref-8k``: the reference configuration (embeddings 256, bidirectional GRU 256 per
  direction, GRU decoder 512 with Bahdanau attention) as mtkit builds it by default:
  the output layer covers the target pieces seen in training (about 4000 of the 8000);
- ``ref-8k-full``: the same with an output layer over all 8000 pieces;
- ``full-32k`` / ``sampled-32k``: the same model with a 32000-row target vocabulary
  (embedding and output layer), trained with the full softmax or with sampled softmax
  (K=512). Multi30k cannot support 32000 sentencepiece pieces, so the batches stay
  those of the 8000 vocabulary; the output layer and its softmax are full size.

Each is run in fp32 and bf16 (autocast). Usage::

    python scripts/bench_train.py [--corpus ../shared/corpora/multi30k] [--steps 20]

One line per configuration, ``name precision tokens/s ms/step output-rows``, then the
ratios the project tracks, then what bounds the speed: the matrix-product work per
target token of each configuration (counted by ``torch.utils.flop_counter`` on the first
warm-up batch, forward and backward) and the rate this machine multiplies matrices of
the model's shapes at. The format is stable for comparing runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from dataclasses import dataclass, replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtkit.batching import TokenBatchSampler, collate
from mtkit.config import DataConfig, LossConfig, ModelConfig, TokenizerConfig
from mtkit.data import CorpusSplit, load_corpus
from mtkit.loss import Criterion
from mtkit.model import Seq2Seq, build_model
from mtkit.runtime import autocast_context, resolve_device, tune_process
from mtkit.tokenizer import TextCodec
from mtkit.trainer import train_step

REFERENCE = ModelConfig(
    cell="gru",
    embed_dim=256,
    encoder_hidden=256,
    decoder_hidden=512,
    bidirectional=True,
    attention="bahdanau",
    input_feed=True,
)
FULL = LossConfig(label_smoothing=0.1)
SAMPLED = replace(FULL, sampled_softmax=True, num_samples=512)


@dataclass(frozen=True)
class Setup:
    name: str
    loss: LossConfig
    output_vocab: str  # observed | full
    target_rows: int | None  # force the target vocabulary size (None: the tokenizer's)


SETUPS = [
    Setup("ref-8k", FULL, "observed", None),
    Setup("ref-8k-full", FULL, "full", None),
    Setup("full-32k", FULL, "full", 32000),
    Setup("sampled-32k", SAMPLED, "full", 32000),
]


def make_model(setup: Setup, codec: TextCodec, split: CorpusSplit) -> Seq2Seq:
    cfg = replace(REFERENCE, output_vocab=setup.output_vocab)
    if setup.target_rows is None:
        return build_model(cfg, codec.src, codec.tgt, split.tgt_values)
    return Seq2Seq(cfg, codec.src.vocab_size, setup.target_rows)


def measure(
    setup: Setup,
    codec: TextCodec,
    split: CorpusSplit,
    precision: str,
    device: torch.device,
    steps: int,
    warmup: int,
    batch_tokens: int,
) -> tuple[float, float, int, float]:
    """(target tokens/s, ms/step, output rows, FLOP per target token) over ``steps``
    batches after ``warmup``."""
    torch.manual_seed(1)
    model = make_model(setup, codec, split).to(device).train()
    counts = model.column_counts(split.tgt_values, len(split))
    criterion = Criterion(setup.loss, len(model.output_ids), counts)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = TokenBatchSampler(split.src_lengths, split.tgt_lengths, batch_tokens, seed=1)
    tokens, start, flop_per_token = 0, 0.0, float("nan")
    for i, indices in enumerate(sampler.batches(0)[: warmup + steps]):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = collate([split.source(j) for j in indices], [split.target(j) for j in indices])
        batch = batch.to(device)
        counter = FlopCounterMode(display=False) if i == 0 and warmup > 0 else None
        with autocast_context(device, precision), counter or contextlib.nullcontext():
            train_step(model, criterion, optimizer, batch, clip_norm=5.0)
        if counter is not None:
            flop_per_token = counter.get_total_flops() / batch.n_tgt_tokens
        if i >= warmup:
            tokens += batch.n_tgt_tokens
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return tokens / elapsed, 1000 * elapsed / steps, len(model.output_ids), flop_per_token


def matmul_rate(dtype: torch.dtype, device: torch.device) -> float:
    """Best GFLOP/s over matrix products of the reference model's shapes (~4000 target
    tokens: decoder gates per step, the feature layer, the output layer)."""
    best = 0.0
    for m, k, n in [(300, 768, 1536), (300, 512, 1536), (4000, 1024, 512), (4000, 512, 4000)]:
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        out = torch.empty(m, n, dtype=dtype, device=device)
        for _ in range(3):
            torch.mm(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, repeats = time.perf_counter(), 20
        for _ in range(repeats):
            torch.mm(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpus", default="../shared/corpora/multi30k", help="directory with train.de / train.en"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed batches per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--batch-tokens", type=int, default=4000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--only", default="", help="comma-separated subset of setup names")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = resolve_device(args.device)
    tune_process()
    data = DataConfig(
        format="dir",
        dir=args.corpus,
        src_lang="de",
        tgt_lang="en",
        valid_split="val",
        test_split=None,
        batch_tokens=args.batch_tokens,
    )
    corpus = load_corpus(data, TokenizerConfig(vocab_size=8000))
    split = corpus.splits["train"]
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"batch_tokens={args.batch_tokens} steps={args.steps} vocab={corpus.codec.tgt.vocab_size}"
    )
    wanted = set(filter(None, args.only.split(",")))
    results: dict[tuple[str, str], float] = {}
    work: dict[str, float] = {}
    for setup in SETUPS:
        if wanted and setup.name not in wanted:
            continue
        for precision in args.precisions.split(","):
            rate, ms, rows, flop_per_token = measure(
                setup,
                corpus.codec,
                split,
                precision,
                device,
                args.steps,
                args.warmup,
                args.batch_tokens,
            )
            results[(setup.name, precision)] = rate
            work.setdefault(setup.name, flop_per_token)
            print(
                f"{setup.name:<12} {precision:<5} {rate:9.0f} tgt_tok/s {ms:8.1f} ms/step "
                f"{rows:6d} output rows",
                flush=True,
            )

    def ratio(a: tuple[str, str], b: tuple[str, str], label: str) -> None:
        if a in results and b in results:
            print(f"{label:<36} {results[a] / results[b]:.2f}x")

    ratio(("ref-8k", "bf16"), ("ref-8k", "fp32"), "bf16 / fp32 (reference)")
    for precision in args.precisions.split(","):
        ratio(
            ("sampled-32k", precision),
            ("full-32k", precision),
            f"sampled / full softmax (32k, {precision})",
        )
    for name, flop in work.items():
        print(f"{'work (' + name + ')':<36} {flop / 1e6:.1f} MFLOP/tgt_tok")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for precision in args.precisions.split(","):
        gflops = matmul_rate(dtypes[precision], device)
        ceiling = ""
        if "ref-8k" in work:
            ceiling = f"  (ref-8k ceiling {gflops * 1e9 / work['ref-8k']:.0f} tgt_tok/s)"
        print(f"{'matmul rate (' + precision + ')':<36} {gflops:.0f} GFLOP/s{ceiling}")


if __name__ == "__main__":
    main()
