#!/usr/bin/env python
"""Decoding speed (and BLEU) of a checkpoint on a test set: greedy and beam search.

Usage::

    python scripts/bench_decode.py CHECKPOINT --src ../shared/corpora/multi30k/test2016.de \\
        --ref ../shared/corpora/multi30k/test2016.en [--precision fp32,bf16,int8] [--beams 1,5]

On a CPU it first prints one thread's rate for the checkpoint's output-layer product in
fp32 and int8, for 16 and 512 rows: the arithmetic a search's time mostly goes to.
For every (precision, beam) it translates the whole file once to warm up, then times
``--repeats`` full passes and prints one stable line:
``precision beam  sent/s (load excluded)  sent/s (load included)  BLEU  signature``.
"Load included" adds the time of ``Translator.from_checkpoint`` (measured separately
in this process, after imports) to one pass.

``--shortlist`` also decodes through the checkpoint's lexical shortlist (mtkit-shortlist):
a line with its settings, then for every (precision, beam) a second line whose first
field is ``PRECISION+sl``. ``--processes 1,2`` also decodes with two single-threaded
processes (``Translator.from_checkpoint(..., processes=2)``, what ``mtkit-translate
--processes auto`` uses on 2+ cores): lines ``PRECISION/p2``. The settings of one
precision are timed in alternating passes, so their ratios hold on a machine shared with
other work. "Load included" is the load time of one process alone in every line.

``--backend torch,onnx --export DIR`` also decodes the checkpoint's ONNX export (written by
``mtkit-export CKPT -o DIR --int8``) with :mod:`mtkit.onnx_runtime`, in the same run: lines
``onnx-fp32`` and ``onnx-int8`` (bf16 has no ONNX form here). ``--threads 1,2`` repeats
every setting at each thread count (torch's intra-op threads, onnxruntime's per graph):
labels end in ``/tN``.

**A busy machine.** ``--contend train`` then times every setting again beside a training
that it starts itself (``python -m mtkit.train`` on the project's embedded corpus, with
its defaults: on 2+ cores two single-threaded processes), and ``--contend busy`` beside
one spinning single-threaded process. Each such line gives the rate beside the
competitor and its share of the quiet rate above (issue target: >= 45%)::

    int8/p2  beam=1  contend=train quiet    830.0 beside    400.9 sent/s  share  48.3%
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

from mtkit.runtime import prefer_passive_wait

prefer_passive_wait()  # before torch loads, as the mtkit commands do

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mtkit.errors import run_cli  # noqa: E402
from mtkit.metrics import bleu  # noqa: E402
from mtkit.runtime import single_thread, tune_process  # noqa: E402
from mtkit.search.shortlist import Shortlisted  # noqa: E402
from mtkit.search.translator import Translator  # noqa: E402


def read(path: str) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def shortlist_settings(args: argparse.Namespace) -> str:
    """One line describing the checkpoint's shortlist (a one-line error if it has none)."""
    translator = run_cli(
        lambda: Translator.from_checkpoint(args.checkpoint, device=args.device, shortlist=True),
        "bench_decode",
    )
    table = cast(Shortlisted, translator.model).shortlist
    return (
        f"shortlist: k={table.candidates.size(1)} frequent={len(table.frequent)} "
        f"source_pieces={table.candidates.size(0)} counted_pairs={table.pairs}"
    )


def product_rates(weight: torch.Tensor) -> str:
    """One thread's rate for the output layer's product (weight (M, H)) on random inputs
    in [-1, 1]: fp32 GFLOP/s and int8 GOP/s for 16 rows (a service's step) and 512 rows
    (a batch's step). A search whose time is mostly these products cannot beat them."""
    from mtkit.search.int8 import Int8Linear, int8_available

    weight = weight.detach().float().cpu()
    bias = torch.zeros(weight.size(0))
    layers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "fp32": lambda x: F.linear(x, weight, bias)
    }
    if int8_available():
        layers["int8"] = Int8Linear(weight, bias)
    parts = []
    with single_thread(), torch.inference_mode():
        for name, layer in layers.items():
            for rows in (16, 512):
                x = torch.rand(rows, weight.size(1)) * 2 - 1
                repeats = max(5, 4096 // rows)
                layer(x)
                start = time.perf_counter()
                for _ in range(repeats):
                    layer(x)
                rate = 2 * x.numel() * weight.size(0) * repeats / (time.perf_counter() - start)
                parts.append(f"{name} {rows} rows {rate / 1e9:.0f}")
    unit = "GFLOP/s (fp32), GOP/s (int8)"
    return f"products, 1 thread, {tuple(weight.shape)} output layer: {', '.join(parts)} {unit}"


def time_passes(
    translators: list[Translator], sources: list[str], beam: int, args: argparse.Namespace
) -> list[float]:
    """Median seconds of ``--repeats`` full passes of each translator, passes alternating."""
    times: list[list[float]] = [[] for _ in translators]
    for _ in range(args.repeats):
        for number, translator in enumerate(translators):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            translator.translate(sources, beam_size=beam, batch_tokens=args.batch_tokens)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[number].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


@contextlib.contextmanager
def competitor(kind: str) -> Iterator[None]:
    """Run a competing process while the block runs: ``train`` (``python -m mtkit.train``
    with its defaults on the embedded corpus, once its first epoch has begun) or ``busy``
    (one spinning thread)."""
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as run_dir:
        if kind == "busy":
            command = [sys.executable, "-c", "while True: pass"]
        else:
            command = [sys.executable, "-m", "mtkit.train", f"hydra.run.dir={run_dir}"]
            command += ["train.max_minutes=600", "train.max_steps=null"]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            if kind == "train":
                wait_for_training(process)
            yield
        finally:
            process.terminate()
            process.wait()


def wait_for_training(process: subprocess.Popen[str]) -> None:
    """Read the training's log until its first epoch begins (then keep draining it)."""
    assert process.stdout is not None
    for line in process.stdout:
        if " epoch 1:" in line:
            threading.Thread(target=process.stdout.read, daemon=True).start()
            time.sleep(2.0)  # past the first batches' allocations
            return
    raise SystemExit(f"bench_decode: the competing training stopped (exit {process.wait()})")


def contend_lines(
    kind: str,
    translators: list[Translator],
    labels: list[str],
    quiet: dict[tuple[str, int], float],
    sources: list[str],
    args: argparse.Namespace,
) -> None:
    """Time every (setting, beam) again beside the competitor; print rate and share."""
    with competitor(kind):
        for beam in (int(b) for b in args.beams.split(",")):
            seconds = time_passes(translators, sources, beam, args)
            for label, took in zip(labels, seconds, strict=True):
                rate, alone = len(sources) / took, quiet[label, beam]
                print(
                    f"{label:<8} beam={beam:<2} contend={kind:<5} quiet {alone:8.1f} "
                    f"beside {rate:8.1f} sent/s  share {100 * rate / alone:5.1f}%",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--src", default="../shared/corpora/multi30k/test2016.de")
    parser.add_argument("--ref", default="../shared/corpora/multi30k/test2016.en")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32,bf16,int8", help="comma-separated")
    parser.add_argument("--beams", default="1,5", help="comma-separated beam sizes")
    parser.add_argument("--batch-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median reported)")
    parser.add_argument(
        "--shortlist", action="store_true", help="also decode through the checkpoint's shortlist"
    )
    parser.add_argument(
        "--processes", default="1", help="comma-separated decoding process counts (e.g. 1,2)"
    )
    parser.add_argument("--backend", default="torch", help="comma-separated: torch, onnx")
    parser.add_argument("--export", help="the checkpoint's ONNX export folder (--backend onnx)")
    parser.add_argument("--threads", default=None, help="comma-separated thread counts (1,2)")
    parser.add_argument(
        "--contend",
        choices=("train", "busy"),
        help="also time every setting beside a training it starts, or a busy thread",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_process()
    sources, references = read(args.src), read(args.ref)

    start = time.perf_counter()
    loaded = Translator.from_checkpoint(args.checkpoint, device=args.device)
    load_seconds = time.perf_counter() - start
    print(
        f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"sentences={len(sources)} load={load_seconds:.2f}s"
    )
    if args.device == "cpu":
        print(product_rates(cast(torch.nn.Linear, loaded.model.output).weight))
    if args.shortlist:
        print(shortlist_settings(args))
    quiet: dict[tuple[str, int], float] = {}  # (label, beam) -> sentences/s
    backends = args.backend.split(",")
    counts = [None] if args.threads is None else [int(n) for n in args.threads.split(",")]
    for threads in counts:
        suffix = "" if threads is None else f"/t{threads}"
        if threads is not None:
            torch.set_num_threads(threads)
        if "torch" in backends:
            torch_lines(args, sources, references, load_seconds, quiet, suffix)
        if "onnx" in backends:
            onnx_lines(args, sources, references, threads or 1, suffix)


def report(label: str, beam: int, took: float, load: float, hypotheses: list[str],
           references: list[str]) -> None:  # fmt: skip
    score = bleu(hypotheses, references)
    print(
        f"{label:<13} beam={beam:<2} {len(hypotheses) / took:8.1f} sent/s "
        f"{len(hypotheses) / (took + load):8.1f} sent/s(incl. load) "
        f"BLEU {score.score:5.2f}  {score.signature}",
        flush=True,
    )


def onnx_lines(
    args: argparse.Namespace, sources: list[str], references: list[str], threads: int,
    suffix: str,
) -> None:  # fmt: skip
    """``onnx-fp32`` and ``onnx-int8`` lines: the export, decoded by mtkit.onnx_runtime."""
    from mtkit.onnx_runtime.translator import OnnxTranslator

    if args.export is None:
        raise SystemExit("bench_decode: --backend onnx needs --export DIR (mtkit-export)")
    for precision in ("fp32", "int8"):
        if precision not in args.precision.split(","):
            continue
        start = time.perf_counter()
        translator = OnnxTranslator.from_folder(args.export, precision, threads)
        load = time.perf_counter() - start
        for beam in (int(b) for b in args.beams.split(",")):
            hypotheses = translator.translate(
                sources, beam_size=beam, batch_tokens=args.batch_tokens
            )
            (took,) = time_passes([translator], sources, beam, args)  # type: ignore[list-item]
            report(f"onnx-{precision}{suffix}", beam, took, load, hypotheses, references)


def torch_lines(
    args: argparse.Namespace,
    sources: list[str],
    references: list[str],
    load_seconds: float,
    quiet: dict[tuple[str, int], float],
    suffix: str,
) -> None:
    """Every (precision, beam) of the checkpoint in PyTorch (and shortlist, processes)."""
    for precision in args.precision.split(","):
        if precision not in ("fp32", "bf16", "int8"):
            continue
        if precision == "int8" and not args.device.startswith("cpu"):
            print(f"int8  skipped: it runs on the CPU only, not on {args.device}")
            continue
        settings = [
            (shortlisted, processes)
            for processes in (int(p) for p in args.processes.split(","))
            for shortlisted in (False, True)[: 1 + args.shortlist]
        ]
        labels = [
            precision + ("+sl" if shortlisted else "") + (f"/p{processes}" if processes > 1 else "")
            for shortlisted, processes in settings
        ]
        translators = [
            Translator.from_checkpoint(
                args.checkpoint, args.device, precision, shortlisted, processes=processes
            )
            for shortlisted, processes in settings
        ]
        for beam in (int(b) for b in args.beams.split(",")):
            outputs = [
                t.translate(sources, beam_size=beam, batch_tokens=args.batch_tokens)
                for t in translators
            ]
            seconds = time_passes(translators, sources, beam, args)
            for label, hypotheses, took in zip(labels, outputs, seconds, strict=True):
                quiet[label, beam] = len(sources) / took
                report(label + suffix, beam, took, load_seconds, hypotheses, references)
        if args.contend:
            contend_lines(args.contend, translators, labels, quiet, sources, args)
        for translator in translators:
            translator.close()


if __name__ == "__main__":
    main()
