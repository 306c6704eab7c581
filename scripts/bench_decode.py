#!/usr/bin/env python
"""Decoding speed (and BLEU) of a checkpoint on a test set: greedy and beam search.

Usage::

    python scripts/bench_decode.py CHECKPOINT --src ../shared/corpora/multi30k/test2016.de \\
        --ref ../shared/corpora/multi30k/test2016.en [--precision fp32,bf16] [--beams 1,5]

For every (precision, beam) it translates the whole file once to warm up, then times
``--repeats`` full passes and prints one stable line:
``precision beam  sent/s (load excluded)  sent/s (load included)  BLEU  signature``.
"Load included" adds the time of ``Translator.from_checkpoint`` (measured separately
in this process, after imports) to one pass.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import torch

from mtkit.metrics import bleu
from mtkit.runtime import tune_process
from mtkit.translator import Translator


def read(path: str) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--src", default="../shared/corpora/multi30k/test2016.de")
    parser.add_argument("--ref", default="../shared/corpora/multi30k/test2016.en")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated")
    parser.add_argument("--beams", default="1,5", help="comma-separated beam sizes")
    parser.add_argument("--batch-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median reported)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_process()
    sources, references = read(args.src), read(args.ref)

    start = time.perf_counter()
    Translator.from_checkpoint(args.checkpoint, device=args.device)
    load_seconds = time.perf_counter() - start
    print(
        f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"sentences={len(sources)} load={load_seconds:.2f}s"
    )
    for precision in args.precision.split(","):
        translator = Translator.from_checkpoint(
            args.checkpoint, device=args.device, precision=precision
        )
        for beam in (int(b) for b in args.beams.split(",")):
            hypotheses = translator.translate(
                sources, beam_size=beam, batch_tokens=args.batch_tokens
            )
            times = []
            for _ in range(args.repeats):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                translator.translate(sources, beam_size=beam, batch_tokens=args.batch_tokens)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            score = bleu(hypotheses, references)
            print(
                f"{precision:<5} beam={beam:<2} {len(sources) / seconds:8.1f} sent/s "
                f"{len(sources) / (seconds + load_seconds):8.1f} sent/s(incl. load) "
                f"BLEU {score.score:5.2f}  {score.signature}",
                flush=True,
            )


if __name__ == "__main__":
    main()
