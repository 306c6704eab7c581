#!/usr/bin/env python
"""Single model vs. checkpoint averaging vs. an ensemble, on a test set (greedy and beam 5).

Usage::

    python scripts/bench_combine.py RUN_DIR [RUN_DIR ...] --last 5 \\
        --src ../shared/corpora/multi30k/test2016.de --ref ../shared/corpora/multi30k/test2016.en

The runs are trained with the same recipe and different seeds, each with
``train.keep_checkpoints=N`` (N >= --last). Prints, for greedy and beam 5, one line per
system with its BLEU and the sacreBLEU signature:

- ``single RUN``: each run's ``best.pt``, and their mean;
- ``average RUN``: the parameter average of the run's last ``--last`` step checkpoints;
- ``ensemble``: all runs' ``best.pt`` files, log-probabilities averaged at every step.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

import torch

from mtkit.average import average_checkpoints, last_checkpoints
from mtkit.corpus.readers import read_lines
from mtkit.metrics import bleu
from mtkit.model.checkpoint import save_checkpoint
from mtkit.runtime import tune_process
from mtkit.search.translator import Translator

BEAMS = (1, 5)


def score(translator: Translator, sources: list[str], references: list[str]) -> list[str]:
    """BLEU lines ``beam=K BLEU signature`` for each beam size."""
    lines = []
    for beam in BEAMS:
        result = bleu(translator.translate(sources, beam_size=beam), references)
        lines.append(f"beam={beam} {result.score:6.2f}  {result.signature}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (one per seed)")
    parser.add_argument("--last", type=int, default=5, help="step checkpoints to average")
    parser.add_argument("--src", default="../shared/corpora/multi30k/test2016.de")
    parser.add_argument("--ref", default="../shared/corpora/multi30k/test2016.en")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_process()
    sources = read_lines(args.src, "--src")
    references = read_lines(args.ref, "--ref")
    print(f"device={args.device} threads={torch.get_num_threads()} sentences={len(sources)}")
    singles: dict[int, list[float]] = {beam: [] for beam in BEAMS}
    for run in args.runs:
        translator = Translator.from_checkpoint(run / "best.pt", device=args.device)
        for beam, line in zip(BEAMS, score(translator, sources, references), strict=True):
            singles[beam].append(float(line.split()[1]))
            print(f"single   {run.name:<20} {line}")
    for beam in BEAMS:
        values = singles[beam]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(
            f"single   {'mean ± std':<20} beam={beam} {statistics.mean(values):6.2f} ± {spread:.2f}"
        )
    with tempfile.TemporaryDirectory() as scratch:
        for run in args.runs:
            averaged = Path(scratch) / f"{run.name}-avg.pt"
            save_checkpoint(average_checkpoints(last_checkpoints(run, args.last)), averaged)
            translator = Translator.from_checkpoint(averaged, device=args.device)
            for line in score(translator, sources, references):
                print(f"average  {run.name + f' last {args.last}':<20} {line}")
    if len(args.runs) > 1:
        translator = Translator.from_checkpoints(
            [run / "best.pt" for run in args.runs], device=args.device
        )
        for line in score(translator, sources, references):
            print(f"ensemble {f'{len(args.runs)} best.pt':<20} {line}")


if __name__ == "__main__":
    main()
