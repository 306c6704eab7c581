#!/usr/bin/env python
"""Training throughput of the reference model on real Multi30k de-en batches.

Measures target tokens per second for a full training step (forward, loss, backward,
gradient clipping, Adam update) over the same real token-budget batches (joint
sentencepiece vocabulary of 8000, ~4000 tokens per batch) for:

- ``ref-8k``: the reference configuration (embeddings 256, bidirectional GRU 256 per
  direction, GRU decoder 512 with Bahdanau attention) as mtkit builds it by default:
  the output layer covers the target pieces seen in training (about 4000 of the 8000);
- ``ref-8k-full``: the same with an output layer over all 8000 pieces;
- ``lstm-8k`` / ``peephole-8k``: ``ref-8k`` with LSTM cells, plain or with peephole
  connections (``model.peepholes=true``): the peephole encoder runs step by step where
  the plain one is the library's fused LSTM (the decoder steps in both);
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

``--threads`` is the intra-op thread count (``auto``, the default, as ``train.threads``;
an integer; or ``torch`` for PyTorch's own default). Like the mtkit commands, the script
sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads unless the environment already says
how OpenMP threads wait; ``OMP_WAIT_POLICY=ACTIVE`` measures PyTorch's spinning default.

**A busy machine.** ``--contend train`` measures each selected configuration quiet, then
again beside a competitor this script starts itself: another copy of it training the same
configuration without end, with the same ``--threads`` and environment (two trainings
side by side); ``--contend busy`` uses a single-threaded busy loop instead. Per
configuration it prints one more line, after the quiet one::

    contend  train  ref-8k       fp32  quiet   8454 beside   4100 tgt_tok/s share  48.5%

``share`` is beside / quiet; on a 2-core machine the fair share beside another training
is 50%, and the target is >= 45% for both competitors. The matrix-product rate is not
measured in this mode.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from mtkit.runtime import prefer_passive_wait

prefer_passive_wait()  # before torch loads: OpenMP reads its wait policy only then

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from mtkit.config import DataConfig, LossConfig, ModelConfig, TokenizerConfig  # noqa: E402
from mtkit.corpus.batching import TokenBatchSampler, collate  # noqa: E402
from mtkit.corpus.cache import load_corpus  # noqa: E402
from mtkit.corpus.layout import CorpusSplit  # noqa: E402
from mtkit.corpus.tokenizer import TextCodec  # noqa: E402
from mtkit.errors import ConfigError  # noqa: E402
from mtkit.model.loss import Criterion  # noqa: E402
from mtkit.model.seq2seq import Seq2Seq, build_model  # noqa: E402
from mtkit.runtime import autocast_context, resolve_device, set_threads, tune_process  # noqa: E402
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
FULL = LossConfig(label_smoothing=0.1)
SAMPLED = replace(FULL, sampled_softmax=True, num_samples=512)


@dataclass(frozen=True)
class Setup:
    name: str
    loss: LossConfig
    output_vocab: str  # observed | full
    target_rows: int | None  # force the target vocabulary size (None: the tokenizer's)
    model: ModelConfig | None = None  # None: REFERENCE


SETUPS = [
    Setup("ref-8k", FULL, "observed", None),
    Setup("ref-8k-full", FULL, "full", None),
    Setup("lstm-8k", FULL, "observed", None, replace(REFERENCE, cell="lstm")),
    Setup("peephole-8k", FULL, "observed", None, replace(REFERENCE, cell="lstm", peepholes=True)),
    Setup("full-32k", FULL, "full", 32000),
    Setup("sampled-32k", SAMPLED, "full", 32000),
]


def make_model(setup: Setup, codec: TextCodec, split: CorpusSplit) -> Seq2Seq:
    cfg = replace(setup.model or REFERENCE, output_vocab=setup.output_vocab)
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


def compete(
    setup: Setup, codec: TextCodec, split: CorpusSplit, precision: str, batch_tokens: int
) -> None:
    """Train ``setup`` on CPU without end (the ``--contend train`` competitor); prints
    ``ready`` after its first step, then runs until it is terminated."""
    torch.manual_seed(2)
    model = make_model(setup, codec, split).train()
    counts = model.column_counts(split.tgt_values, len(split))
    criterion = Criterion(setup.loss, len(model.output_ids), counts)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = TokenBatchSampler(split.src_lengths, split.tgt_lengths, batch_tokens, seed=2)
    device = torch.device("cpu")
    for step, indices in enumerate(
        itertools.chain.from_iterable(map(sampler.batches, itertools.count()))
    ):
        batch = collate([split.source(j) for j in indices], [split.target(j) for j in indices])
        with autocast_context(device, precision):
            train_step(model, criterion, optimizer, batch, clip_norm=5.0)
        if step == 0:
            print("ready", flush=True)


@contextlib.contextmanager
def competitor(kind: str, setup: Setup, precision: str, args: argparse.Namespace) -> Iterator[None]:
    """Run a competing process while the block runs: ``train`` (this script's
    :func:`compete`, same threads and environment) or ``busy`` (one spinning thread)."""
    if kind == "busy":
        command = [sys.executable, "-c", "while True: pass"]
    else:
        command = [sys.executable, __file__, "--compete", "--only", setup.name]
        command += ["--precisions", precision, "--corpus", args.corpus]
        command += ["--batch-tokens", str(args.batch_tokens), "--threads", args.threads]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        if (
            kind == "train"
            and process.stdout is not None
            and process.stdout.readline() != "ready\n"
        ):
            raise SystemExit(f"bench_train.py: the competitor stopped (exit {process.wait()})")
        yield
    finally:
        process.terminate()
        process.wait()


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


def parse_args() -> argparse.Namespace:
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
    parser.add_argument(
        "--threads", default="auto", help="intra-op threads: auto (default), N, or torch"
    )
    parser.add_argument(
        "--contend",
        choices=("train", "busy"),
        help="also measure beside a competitor: another training, or a busy loop",
    )
    parser.add_argument("--compete", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        set_threads(None if args.threads == "torch" else args.threads)
    except ConfigError as error:
        parser.error(f"--{error}")
    return args


def main() -> None:
    args = parse_args()
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
    wanted = set(filter(None, args.only.split(",")))
    setups = [setup for setup in SETUPS if not wanted or setup.name in wanted]
    if args.compete:
        compete(setups[0], corpus.codec, split, args.precisions.split(",")[0], args.batch_tokens)
        return
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"batch_tokens={args.batch_tokens} steps={args.steps} vocab={corpus.codec.tgt.vocab_size}"
    )
    results: dict[tuple[str, str], float] = {}
    work: dict[str, float] = {}
    for setup, precision in itertools.product(setups, args.precisions.split(",")):
        run = functools.partial(
            measure, setup, corpus.codec, split, precision, device, args.steps, args.warmup
        )
        rate, ms, rows, flop_per_token = run(args.batch_tokens)
        results[(setup.name, precision)] = rate
        work.setdefault(setup.name, flop_per_token)
        print(
            f"{setup.name:<12} {precision:<5} {rate:9.0f} tgt_tok/s {ms:8.1f} ms/step "
            f"{rows:6d} output rows",
            flush=True,
        )
        if args.contend:
            with competitor(args.contend, setup, precision, args):
                beside = run(args.batch_tokens)[0]
            print(
                f"contend  {args.contend:<6} {setup.name:<12} {precision:<5} quiet {rate:6.0f} "
                f"beside {beside:6.0f} tgt_tok/s share {100 * beside / rate:5.1f}%",
                flush=True,
            )
    summarise(results, work, args, device)


def summarise(
    results: dict[tuple[str, str], float],
    work: dict[str, float],
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    """The ratios the project tracks, the work per token and (quiet runs only) the
    matrix-product rate."""

    def ratio(a: tuple[str, str], b: tuple[str, str], label: str) -> None:
        if a in results and b in results:
            print(f"{label:<36} {results[a] / results[b]:.2f}x")

    ratio(("ref-8k", "bf16"), ("ref-8k", "fp32"), "bf16 / fp32 (reference)")
    for precision in args.precisions.split(","):
        ratio(
            ("peephole-8k", precision),
            ("lstm-8k", precision),
            f"peephole / plain LSTM ({precision})",
        )
        ratio(
            ("sampled-32k", precision),
            ("full-32k", precision),
            f"sampled / full softmax (32k, {precision})",
        )
    for name, flop in work.items():
        print(f"{'work (' + name + ')':<36} {flop / 1e6:.1f} MFLOP/tgt_tok")
    if args.contend:
        return
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for precision in args.precisions.split(","):
        gflops = matmul_rate(dtypes[precision], device)
        ceiling = ""
        if "ref-8k" in work:
            ceiling = f"  (ref-8k ceiling {gflops * 1e9 / work['ref-8k']:.0f} tgt_tok/s)"
        print(f"{'matmul rate (' + precision + ')':<36} {gflops:.0f} GFLOP/s{ceiling}")


if __name__ == "__main__":
    main()
