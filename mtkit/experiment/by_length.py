"""BLEU by source length with bootstrap intervals: the numbers behind ``bleu_by_length.png``.

Bahdanau et al. (2015, Fig. 2) plot BLEU against source length. Here each test set is
cut into source-length buckets (:func:`length_buckets`, words); for each condition and
bucket the figure shows the BLEU of the seed mean (each seed's corpus BLEU on the
bucket, averaged) and a 95% bootstrap interval over the bucket's sentences: the
sentences are resampled with replacement (the same indices for every seed and every
condition), each seed's corpus BLEU is computed on the resample with sacrebleu, the
seeds are averaged, and the interval is the 2.5/97.5 percentiles of that mean. Buckets
hold few sentences at the long end, so the interval says how far a difference there is
from noise. Every number also goes to ``bleu_by_length.csv``.

BLEU on a resample comes from sacrebleu's per-sentence statistics (matches and totals
per n-gram order, lengths) summed with the resample's counts, the way sacrebleu's own
paired bootstrap computes it, so each resample costs no re-tokenization.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU

from mtkit.cli.io import check_output, write_text
from mtkit.experiment.spec import ExperimentSpec

MIN_BUCKET = 25  # sentences a length bucket needs before its BLEU means something
RESAMPLES = 1000
BOOTSTRAP_SEED = 12345
CSV_COLUMNS = ("test_set", "bucket", "sentences", "condition", "runs", "bleu", "low", "high")


@dataclass
class LengthTest:
    """One test set of the by-length figures and the runs' outputs on it.

    ``outputs``: (condition, hypotheses) per run, hypotheses aligned with ``references``.
    """

    name: str
    sources: Sequence[str]
    references: Sequence[str]
    outputs: list[tuple[str, list[str]]]


@dataclass(frozen=True)
class BucketScore:
    """One condition's seed-mean BLEU on one length bucket, with its 95% interval."""

    test_set: str
    bucket: str  # the range in words: 11-15, 31+
    sentences: int
    condition: str
    runs: int
    bleu: float
    low: float
    high: float

    def row(self) -> dict[str, Any]:
        rounded = {key: round(getattr(self, key), 2) for key in ("bleu", "low", "high")}
        return {**self.__dict__, **rounded}


def length_buckets(lengths: Sequence[int], uppers: Sequence[int]) -> list[tuple[str, list[int]]]:
    """Sentence indices bucketed by length; a bucket under MIN_BUCKET joins a neighbour.

    ``uppers`` are the buckets' upper bounds (``[5, 10]`` -> 1-5, 6-10, 11+). Returns
    (label, indices) pairs, the label saying the range and the number of sentences.
    """
    bounds = [
        (lo, hi) for lo, hi in zip([1, *[u + 1 for u in uppers]], [*uppers, None], strict=True)
    ]
    members: list[list[int]] = [[] for _ in bounds]
    for index, length in enumerate(lengths):
        slot = next((b for b, (_, hi) in enumerate(bounds) if hi is None or length <= hi))
        members[slot].append(index)
    minimum = min(MIN_BUCKET, max(1, len(lengths) // 4))
    while len(members) > 1 and min(len(m) for m in members) < minimum:
        small = min(range(len(members)), key=lambda b: len(members[b]))
        # join the smaller neighbour (the only one at either end)
        if small == 0 or (
            small + 1 < len(members) and len(members[small + 1]) < len(members[small - 1])
        ):
            lo = small
        else:
            lo = small - 1
        bounds[lo : lo + 2] = [(bounds[lo][0], bounds[lo + 1][1])]
        members[lo : lo + 2] = [sorted(members[lo] + members[lo + 1])]
    labels = [f"{lo}-{hi}" if hi is not None else f"{lo}+" for lo, hi in bounds]
    return [(f"{label}\n(n={len(m)})", m) for label, m in zip(labels, members, strict=True) if m]


_METRIC = BLEU()  # cased, 13a tokenization: the experiments' BLEU


def sentence_stats(runs: Sequence[Sequence[str]], references: Sequence[str]) -> list[np.ndarray]:
    """sacrebleu's BLEU statistics per sentence of each run's hypotheses: one array of
    shape (sentences, 2 + 2 * 4), integers, per run (the references processed once)."""
    metric = BLEU(references=[list(references)])
    return [
        np.asarray(metric._extract_corpus_statistics(list(h), None), dtype=np.int64) for h in runs
    ]


def corpus_bleu(summed: np.ndarray) -> float:
    """Corpus BLEU from statistics summed over sentences (shape (10,))."""
    return float(_METRIC._compute_score_from_stats(summed.tolist()).score)


def bucket_bleu(
    stats: Sequence[np.ndarray],
    indices: Sequence[int],
    resamples: int = RESAMPLES,
    seed: int | Sequence[int] = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(seed-mean BLEU, 2.5th, 97.5th percentile) of one bucket over ``resamples`` draws.

    ``stats`` holds one :func:`sentence_stats` array per seed of a condition; ``indices``
    are the bucket's sentences. Every seed is scored on the same resampled indices:
    ``counts[r, j]`` says how often resample ``r`` drew the bucket's sentence ``j``.
    """
    chosen = np.asarray(indices, dtype=np.int64)
    point = statistics.fmean(corpus_bleu(s[chosen].sum(axis=0)) for s in stats)
    draws = np.random.default_rng(seed).integers(0, len(chosen), size=(resamples, len(chosen)))
    flat = (draws + len(chosen) * np.arange(resamples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=resamples * len(chosen)).reshape(resamples, -1)
    means = np.zeros(resamples)
    for per_seed in stats:
        summed = counts @ per_seed[chosen]  # (resamples, 10)
        means += np.array([corpus_bleu(row) for row in summed]) / len(stats)
    low, high = np.percentile(means, [2.5, 97.5])
    return point, float(low), float(high)


def score_by_length(
    spec: ExperimentSpec,
    test: LengthTest,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[list[str], list[BucketScore]]:
    """The bucket labels (with counts, for the axis) and every condition's bucket scores.

    Runs whose outputs do not align with the references (unfinished decodes) are left
    out; conditions come in the file's order.
    """
    buckets = length_buckets([len(s.split()) for s in test.sources], spec.length_buckets)
    outputs: dict[str, list[list[str]]] = {name: [] for name in spec.conditions}
    for condition, hypotheses in test.outputs:
        if len(hypotheses) == len(test.references):
            outputs.setdefault(condition, []).append(hypotheses)
    scores = []
    for condition, runs in outputs.items():
        if not runs:
            continue
        stats = sentence_stats(runs, test.references)
        for position, (label, indices) in enumerate(buckets):
            bleu, low, high = bucket_bleu(stats, indices, resamples, (seed, position))
            bucket = label.split("\n")[0]
            scores.append(
                BucketScore(test.name, bucket, len(indices), condition, len(runs), bleu, low, high)
            )
    return [label for label, _ in buckets], scores


def write_csv(path: Path, scores: Sequence[BucketScore]) -> None:
    """``bleu_by_length.csv``: one row per test set, bucket and condition."""
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
    writer.writeheader()
    for score in scores:
        writer.writerow(score.row())
    write_text(check_output(path, ""), handle.getvalue(), "")
