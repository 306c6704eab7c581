#!/usr/bin/env python
"""The service's model side alone: greedy streams under a closed loop, without HTTP.

Usage::

    python scripts/bench_stream.py CHECKPOINT [--src ../shared/corpora/multi30k/test2016.de]
        [--precision int8] [--in-flight 8,16,32] [--copies 1] [--limit 1000]

``python -m mtkit.serve`` decodes greedy requests in a :class:`~mtkit.search.stream.GreedyStream`
per model process: sentences join between steps and leave when they end. Under ``C``
clients that each send one sentence, wait for its answer and send the next, about ``C``
sentences are in flight. This script replays that load on one stream in one thread,
with no HTTP, no pipes and no detokenizing: ``C`` sentences start, each that ends is
replaced by the next source line, and waiting sentences join by the service batcher's
rule (:func:`mtkit.serve.greedy.ready_to_join`). So it measures what a model process
could answer if the rest of the service cost nothing: ``scripts/bench_serve.py``
measures the whole service.

One line per in-flight count: sentences/s; the time spent encoding joining sentences
(per join) and in steps (per step); rows per step; and source positions per step that the
attention reads, padded (every row to the longest active source, a lower bound) against
real.
``--copies 2`` runs two replays at once in separate single-threaded processes (what two
model processes, ``mtkit-serve --workers 2``, have to share the cores) and also prints
their sum.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from mtkit.runtime import prefer_passive_wait

prefer_passive_wait()  # before torch loads, as the mtkit commands do

import torch  # noqa: E402

from mtkit.errors import run_cli  # noqa: E402
from mtkit.runtime import tune_process  # noqa: E402
from mtkit.search.stream import GreedyStream  # noqa: E402
from mtkit.search.translator import Translator  # noqa: E402
from mtkit.serve.greedy import JOIN_SHARE, JOIN_STEPS, ready_to_join  # noqa: E402


def replay(translator: Translator, sources: list[list[int]], in_flight: int) -> str:
    """Decode ``sources`` (ids with EOS) with ``in_flight`` sentences in flight; one line."""
    stream = GreedyStream(translator.stepper, translator.options(beam_size=1), translator.device)
    waiting: list[tuple[int, int]] = [(i, 0) for i in range(min(in_flight, len(sources)))]
    following, finished, steps, joins = len(waiting), 0, 0, 0
    encoding = stepping = 0.0
    rows = padded = real = 0
    start = time.perf_counter()
    while finished < len(sources):
        if waiting and ready_to_join(len(stream), len(waiting), steps - waiting[0][1]):
            began = time.perf_counter()
            stream.add([sources[i] for i, _ in waiting], [False] * len(waiting))
            encoding += time.perf_counter() - began
            joins, waiting = joins + 1, []
        rows += len(stream)
        real += stream.source_tokens
        padded += len(stream) * stream.longest_source
        began = time.perf_counter()
        ended = stream.step()
        stepping += time.perf_counter() - began
        steps, finished = steps + 1, finished + len(ended)
        for _ in ended:
            if following < len(sources):
                waiting.append((following, steps))
                following += 1
    seconds = time.perf_counter() - start
    return (
        f"in_flight={in_flight:<3} {len(sources) / seconds:7.1f} sent/s  "
        f"encode {1000 * encoding / max(joins, 1):5.2f} ms/join ({joins} joins, "
        f"{100 * encoding / seconds:4.1f}%)  step {1000 * stepping / max(steps, 1):5.2f} ms "
        f"({steps} steps, {100 * stepping / seconds:4.1f}%)  rows/step {rows / max(steps, 1):5.1f}"
        f"  source positions/step {padded / max(steps, 1):5.0f} padded, "
        f"{real / max(steps, 1):5.0f} real"
    )


def run_copies(args: argparse.Namespace) -> None:
    """``--copies`` replays at once, each in its own single-threaded process."""
    command = [sys.executable, __file__, args.checkpoint, "--src", args.src, "--precision"]
    command += [args.precision, "--in-flight", args.in_flight, "--limit", str(args.limit)]
    command += ["--copies", "1", "--quiet"]
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(args.copies)
    ]
    outputs = [child.communicate()[0].splitlines() for child in children]
    if any(child.returncode for child in children):
        raise SystemExit("bench_stream: a replay process failed")
    for lines in zip(*outputs, strict=True):
        rates = [float(line.split()[1]) for line in lines]
        for number, line in enumerate(lines):
            print(f"copy {number + 1}  {line}")
        shown = " + ".join(f"{rate:.1f}" for rate in rates)
        print(f"sum     {lines[0].split()[0]:<15} {shown} = {sum(rates):.1f} sent/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--src", default="../shared/corpora/multi30k/test2016.de")
    parser.add_argument("--precision", default="int8", choices=("fp32", "bf16", "int8"))
    parser.add_argument("--in-flight", default="8,16,32", help="comma-separated counts")
    parser.add_argument("--copies", type=int, default=1, help="replays at once (processes)")
    parser.add_argument("--limit", type=int, default=1000, help="use the first N lines")
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        counts = [int(c) for c in args.in_flight.split(",")]
    except ValueError:
        parser.error(f"--in-flight {args.in_flight!r}: expected comma-separated whole numbers")
    if args.copies < 1 or args.limit < 1 or min(counts) < 1:
        parser.error("--copies, --limit and every --in-flight count must be at least 1")
    if args.copies > 1:
        run_copies(args)
        return
    tune_process()
    torch.set_num_threads(1)  # a model process of the service under --workers N
    try:
        lines = Path(args.src).read_text(encoding="utf-8").splitlines()[: args.limit]
    except (OSError, UnicodeDecodeError) as error:
        parser.error(f"--src {args.src}: cannot read it as UTF-8 text ({error})")
    if not any(line.strip() for line in lines):
        parser.error(f"--src {args.src}: no non-empty line to translate")
    translator = run_cli(
        lambda: Translator.from_checkpoint(args.checkpoint, precision=args.precision),
        "bench_stream",
    )
    sources = translator.codec.encode_source([line.strip() for line in lines if line.strip()])
    if not args.quiet:
        print(
            f"threads=1 torch={torch.__version__} precision={args.precision} "
            f"sentences={len(sources)} join_share={JOIN_SHARE} join_steps={JOIN_STEPS}"
        )
    with translator.inference():
        replay(translator, sources[: min(len(sources), 64)], 8)  # warm-up
        for count in counts:
            print(replay(translator, sources, count), flush=True)


if __name__ == "__main__":
    main()
