"""Scoring trained runs on the test split, cached per run so nothing is decoded twice.

A training run is scored once with its ``best.pt``: greedy and beam-5 search (the
checkpoint's length normalisation), BLEU and chrF from sacrebleu with signatures, the
output/reference length ratio, the share of distinct outputs (a model that ignores its
source says the same sentence for every input) and the parameter count. The results go
to ``eval.json`` (written last, atomically: its presence means "evaluated") beside the
hypotheses. An experiment's ``extra_tests`` (more splits of its data folder, for the
figures only) are decoded with beam 5 too, into ``hyp.<split>.beam5.txt`` and the
``extra_tests`` entry of ``eval.json``; one added later is decoded without redoing the
rest. Decoding-only conditions are cached the same way, one JSON per condition in
``<model dir>/decode/``, and re-decoded only when their settings change.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtkit.cli.io import check_output, write_text
from mtkit.config import RunConfig
from mtkit.errors import DataError
from mtkit.metrics import all_scores, bleu
from mtkit.runtime import resolve_threads

EVAL_FILE = "eval.json"
GREEDY = {"beam_size": 1}
BEAM5 = {"beam_size": 5}


@dataclass
class TestSet:
    """The test split as text: sources (in reading order) and references, aligned."""

    sources: list[str]
    references: list[str]
    name: str = "test"  # the split's name, for figures and their tables

    def __len__(self) -> int:
        return len(self.sources)


def load_test_set(run: RunConfig, split: str | None = None) -> TestSet:
    """Read the test split of ``run.data`` exactly as training reads it (empty pairs dropped).

    ``split`` reads another split of the same folder or dataset as the test split.
    """
    from mtkit.corpus.sources import split_sources

    data = run.data
    if split is not None:
        if data.format not in ("dir", "hf"):
            raise DataError(f"extra_tests: {split}: needs data.format dir or hf, not {data.format}")
        data = dataclasses.replace(data, test_split=split)
    sources = split_sources(data)
    if "test" not in sources:
        raise DataError("the experiment's data has no test split (data.test_split / data.test)")
    dataset = sources["test"].read()
    pairs = [(s, t) for s, t in zip(dataset["src"], dataset["tgt"], strict=True) if s and t]
    if not pairs:
        raise DataError(f"{sources['test'].description}: the test split has no sentence pairs")
    return TestSet([s for s, _ in pairs], [t for _, t in pairs], data.test_split or "test")


@contextmanager
def threads(requested: int | str | None) -> Iterator[None]:
    """Decode with the runs' own ``train.threads`` (PyTorch's default when unset).

    On a busy machine, more threads than free cores make decoding many times slower.
    """
    count = resolve_threads(requested)
    if not count:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    write_text(check_output(path, ""), json.dumps(value, indent=2), "")


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """One line per text; line breaks inside a text become spaces, so lines stay aligned."""
    text = "".join(" ".join(line.split()) + "\n" for line in lines)
    write_text(check_output(path, ""), text, "")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def translate(translator: Any, texts: Sequence[str], settings: dict[str, Any]) -> list[str]:
    """Translate with search settings named like the ``decode`` keys (``beam_size``, ...).

    ``Translator.translate`` takes them as keywords; an older Translator whose
    ``translate`` lacks one of them gets the settings as a ``SearchOptions`` instead.
    """
    parameters = inspect.signature(translator.translate).parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    if takes_any or all(key in {p.name for p in parameters} for key in settings):
        return list(translator.translate(list(texts), **settings))
    options = dataclasses.replace(translator.options(), **settings)
    return list(translator.translate(list(texts), options=options))


def output_stats(hypotheses: Sequence[str], test: TestSet) -> dict[str, Any]:
    """BLEU, chrF (with signatures), length ratio in words and the share of distinct outputs."""
    scores = {s.name: s for s in all_scores(hypotheses, test.references)}
    out_words = sum(len(h.split()) for h in hypotheses)
    ref_words = sum(len(r.split()) for r in test.references)
    return {
        "bleu": round(scores["BLEU"].score, 2),
        "bleu_signature": scores["BLEU"].signature,
        "chrf": round(scores["chrF"].score, 2),
        "chrf_signature": scores["chrF"].signature,
        "len_ratio": round(out_words / max(ref_words, 1), 4),
        "out_words": round(out_words / max(len(hypotheses), 1), 2),
        "distinct_pct": round(100.0 * len(set(hypotheses)) / max(len(hypotheses), 1), 1),
    }


def extra_hypotheses(split: str) -> str:
    """The file of a run's beam-5 outputs on an extra test split."""
    return f"hyp.{split}.beam5.txt"


def evaluate_run(
    run_dir: Path, overrides: list[str], test: TestSet, extras: Sequence[TestSet] = ()
) -> dict[str, Any]:
    """Score ``run_dir/best.pt`` greedy and with beam 5, and ``extras`` with beam 5.

    ``overrides`` are the run's training overrides (for the padding of its batches).
    Cached in ``eval.json``: only what is missing (or of another size) is decoded.
    """
    cached = read_json(run_dir / EVAL_FILE)
    fresh = cached is None or cached.get("test_sentences") != len(test)
    done = {} if fresh or cached is None else dict(cached.get("extra_tests") or {})
    todo = [t for t in extras if (done.get(t.name) or {}).get("test_sentences") != len(t)]
    if cached is not None and not fresh and not todo:
        return cached
    from mtkit.search.translator import Translator

    translator = Translator.from_checkpoint(run_dir / "best.pt", device="cpu", precision="fp32")
    result = _score_test(run_dir, overrides, test, translator) if fresh else dict(cached or {})
    for extra in todo:
        beam = translate(translator, extra.sources, BEAM5)
        write_lines(run_dir / extra_hypotheses(extra.name), beam)
        done[extra.name] = {"test_sentences": len(extra), **output_stats(beam, extra)}
    if done:
        result["extra_tests"] = done
    write_json(run_dir / EVAL_FILE, result)
    return result


def _score_test(
    run_dir: Path, overrides: list[str], test: TestSet, translator: Any
) -> dict[str, Any]:
    """Greedy and beam-5 scores on the test split; the hypotheses beside them."""
    from mtkit.experiment.overrides import compose

    start = time.perf_counter()
    greedy = translate(translator, test.sources, GREEDY)
    beam = translate(translator, test.sources, BEAM5)
    write_lines(run_dir / "hyp.greedy.txt", greedy)
    write_lines(run_dir / "hyp.beam5.txt", beam)
    greedy_bleu = bleu(greedy, test.references)
    result = {
        "test_sentences": len(test),
        "greedy": {"bleu": round(greedy_bleu.score, 2), "signature": greedy_bleu.signature},
        "beam5": output_stats(beam, test),
        "parameters": sum(p.numel() for p in translator.model.parameters()),
        "padding_pct": padding_pct(compose(overrides)),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return result


def padding_pct(run: RunConfig) -> float:
    """Padding of the first epoch's training batches, in % of real tokens (both sides)."""
    from mtkit.corpus.batching import TokenBatchSampler, padding_overhead
    from mtkit.corpus.cache import load_corpus

    split = load_corpus(run.data, run.tokenizer).splits["train"]
    sampler = TokenBatchSampler(
        split.src_lengths,
        split.tgt_lengths,
        run.data.batch_tokens,
        run.train.seed,
        run.data.pool_batches,
        run.data.buckets,
    )
    overhead = padding_overhead(sampler.batches(0), sampler.src_lengths, sampler.tgt_lengths)
    return round(100.0 * overhead, 2)


def decode_cache(model_dir: Path, condition: str) -> Path:
    return model_dir / "decode" / f"{condition}.json"


def checkpoint_stamp(checkpoint: Path) -> str:
    """Size and modification time of a checkpoint: a model trained further gets a new one."""
    try:
        found = checkpoint.stat()
    except OSError:
        return ""
    return f"{found.st_size}:{found.st_mtime_ns}"


def _cached(
    path: Path, settings: dict[str, Any], stamp: str, sentences: int | None
) -> dict[str, Any] | None:
    """The decoding ``path`` holds, if it has these settings and is of this checkpoint."""
    cached = read_json(path)
    if (
        cached is None
        or cached.get("settings") != settings
        or cached.get("checkpoint") != stamp
        or (sentences is not None and cached.get("test_sentences") != sentences)
    ):
        return None
    return cached


def decoding_cached(
    model_dir: Path, conditions: dict[str, dict[str, Any]], checkpoint: Path
) -> bool:
    """Whether every condition of a decoding-only experiment is cached with its settings."""
    stamp = checkpoint_stamp(checkpoint)
    return all(
        _cached(decode_cache(model_dir, name), settings, stamp, None) is not None
        for name, settings in conditions.items()
    )


def evaluate_decoding(
    model_dir: Path, checkpoint: Path, conditions: dict[str, dict[str, Any]], test: TestSet
) -> dict[str, dict[str, Any]]:
    """Decode the test split once per condition (search settings) with one checkpoint."""
    results: dict[str, dict[str, Any]] = {}
    translator = None
    stamp = checkpoint_stamp(checkpoint)
    for name, settings in conditions.items():
        path = decode_cache(model_dir, name)
        cached = _cached(path, settings, stamp, len(test))
        if cached is not None:
            results[name] = cached
            continue
        if translator is None:
            from mtkit.search.translator import Translator

            translator = Translator.from_checkpoint(checkpoint, device="cpu", precision="fp32")
        start = time.perf_counter()
        hypotheses = translate(translator, test.sources, settings)
        seconds = time.perf_counter() - start
        write_lines(path.with_suffix(".txt"), hypotheses)
        results[name] = {
            "settings": settings,
            "checkpoint": stamp,
            "test_sentences": len(test),
            "decode_s": round(seconds, 2),
            "parameters": sum(p.numel() for p in translator.model.parameters()),
            **output_stats(hypotheses, test),
        }
        write_json(path, results[name])
    return results
