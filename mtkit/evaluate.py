"""``python -m mtkit.evaluate``: BLEU, chrF and TER (sacrebleu, detokenized) with signatures.

python -m mtkit.evaluate CHECKPOINT --src FILE --ref FILE [--beam-size K] [--shortlist] [--json]
python -m mtkit.evaluate --hyp FILE --ref FILE [FILE ...] [--metrics bleu chrf ter]
                         [--baseline FILE [--paired-test bootstrap|randomization|both]]

Several ``--ref`` files are several references per sentence, as in sacreBLEU.
``--baseline`` adds sacreBLEU's paired test of the scored system against another
system's translations of the same sentences (:mod:`mtkit.significance`).

Empty or misaligned files are a one-line error; a byte order mark opening a file is
dropped. SIGINT and SIGTERM stop the command at once (exit 130 / 143, one line).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from typing import Any, cast

from mtkit.cli.decoding import open_translator
from mtkit.cli.io import Output, exit_on_signals
from mtkit.cli.options import (
    add_checkpoint_options,
    add_decoding_options,
    check_decoding_options,
    check_positive,
)
from mtkit.corpus.readers import read_lines
from mtkit.errors import DataError, run_cli
from mtkit.metrics import METRICS
from mtkit.runtime import prefer_passive_wait

PROG = "mtkit-evaluate"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Score translations with sacrebleu: translate --src with CHECKPOINT, "
        "or score existing --hyp output, against --ref.",
    )
    add = parser.add_argument
    add_checkpoint_options(
        add, "*", "checkpoint to translate --src with; several translate as an ensemble"
    )
    add("--src", help="source file to translate")
    add("--hyp", help="existing translations, one per line")
    add("--ref", required=True, nargs="+", metavar="REF",
        help="reference translations, one per line; several files give several "
        "references per sentence")  # fmt: skip
    add("--metrics", nargs="+", choices=METRICS, default=list(METRICS), metavar="METRIC",
        help="metrics to compute, from: bleu chrf ter (default: all three)")  # fmt: skip
    add("--baseline", metavar="HYP",
        help="a baseline system's translations of the same sentences: adds sacreBLEU's "
        "paired test of the scored system against it")  # fmt: skip
    add("--paired-test", choices=("bootstrap", "randomization", "both"), default="bootstrap",
        help="with --baseline: paired bootstrap resampling (Koehn 2004), approximate "
        "randomization (Riezler and Maxwell 2005), or both (default: bootstrap)")  # fmt: skip
    add("--paired-samples", type=int, metavar="N",
        help="resamples of the paired test (default: 1000 for bootstrap, 10000 for "
        "randomization, as sacreBLEU)")  # fmt: skip
    add("--beam-size", type=int, help="beam size (default: the checkpoint's)")
    add("--batch-tokens", type=int, help="source tokens x beams per batch")
    add_decoding_options(add)
    add("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.hyp is not None and (args.checkpoints or args.src):
        parser.error("give either CHECKPOINT --src, or --hyp, not both")
    if args.hyp is not None and args.shortlist:
        parser.error("--shortlist applies to CHECKPOINT --src, not to --hyp")
    if args.hyp is None and not (args.checkpoints and args.src):
        parser.error("give CHECKPOINT --src FILE --ref FILE, or --hyp FILE --ref FILE")
    if args.baseline is None and args.paired_samples is not None:
        parser.error("--paired-samples applies to a paired test: give --baseline HYP")
    check_decoding_options(parser, args)
    check_positive(parser, args, ("beam_size", "batch_tokens", "paired_samples"))
    return args


def evaluate(args: argparse.Namespace) -> dict[str, object]:
    references = read_references(args.ref)
    if args.hyp is not None:
        hypotheses = read_lines(args.hyp, "the --hyp file")
        hyp_name = args.hyp
    else:
        hypotheses = translate_sources(args, len(references[0]))
        hyp_name = f"{' + '.join(args.checkpoints)} on {args.src}"
    check_aligned(hyp_name, hypotheses, args.ref[0], len(references[0]))
    from mtkit.metrics import corpus_scores

    report: dict[str, object] = {
        "hypotheses": hyp_name,
        "references": args.ref[0] if len(args.ref) == 1 else args.ref,
        "nrefs": len(references),
        "sentences": len(references[0]),
        "beam_size": args.beam_size,
        "scores": [s.as_dict() for s in corpus_scores(hypotheses, references, args.metrics)],
    }
    if args.baseline is not None:
        baseline = read_lines(args.baseline, "the --baseline file")
        check_aligned(args.baseline, baseline, args.ref[0], len(references[0]))
        report["baseline"] = args.baseline
        report["paired"] = paired(args, baseline, hypotheses, references)
    return report


def read_references(paths: list[str]) -> list[list[str]]:
    """Every ``--ref`` file: the same number of lines each, and not empty."""
    streams = [read_lines(path, "the --ref file") for path in paths]
    for path, stream in zip(paths[1:], streams[1:], strict=True):
        if len(stream) != len(streams[0]):
            raise DataError(f"{path} has {len(stream)} lines but {paths[0]} has {len(streams[0])}")
    if not streams[0]:
        raise DataError(f"{paths[0]} is empty: there is nothing to score")
    return streams


def check_aligned(name: str, lines: list[str], ref: str, n_references: int) -> None:
    if len(lines) != n_references:
        raise DataError(f"{name} has {len(lines)} lines but {ref} has {n_references}")


def paired(
    args: argparse.Namespace,
    baseline: list[str],
    hypotheses: list[str],
    references: list[list[str]],
) -> list[dict[str, object]]:
    """sacreBLEU's paired test(s) of the hypotheses against the baseline, per metric."""
    from mtkit.significance import paired_test

    tests = ["bootstrap", "randomization"] if args.paired_test == "both" else [args.paired_test]
    results: list[dict[str, object]] = []
    for test in tests:
        samples = args.paired_samples or (1000 if test == "bootstrap" else 10000)
        found = paired_test(baseline, hypotheses, references, args.metrics, test, samples)
        results.extend(result.as_dict() for result in found)
    return results


def translate_sources(args: argparse.Namespace, n_references: int) -> list[str]:
    """``--src`` translated with CHECKPOINT, once its line count matches ``--ref``'s."""
    sources = read_lines(args.src, "the --src file")
    check_aligned(args.src, sources, args.ref[0], n_references)
    with open_translator(args, len(sources)) as translator:
        return translator.translate(
            sources, beam_size=args.beam_size, batch_tokens=args.batch_tokens
        )


def report_lines(report: dict[str, object], as_json: bool) -> list[str]:
    if as_json:
        return [json.dumps(report, indent=2)]
    scores = cast(list[dict[str, Any]], report["scores"])
    lines = [f"{score['text']}  ({score['signature']})" for score in scores]
    for result in cast(list[dict[str, Any]], report.get("paired", [])):
        spread = ""
        if "system_mean" in result:
            spread = f", bootstrap mean {result['system_mean']:.2f} ± {result['system_ci']:.2f}"
        lines.append(
            f"paired {result['test']} ({result['samples']} samples) against "
            f"{report['baseline']}: {result['metric']} {result['system']:.2f} vs. "
            f"{result['baseline']:.2f}{spread}, p = {result['p_value']:.4f}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    prefer_passive_wait()  # before torch loads (mtkit.runtime explains why)
    with exit_on_signals(PROG):
        logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
        args = parse_args(argv)

        def run() -> None:
            with Output(None) as output:  # a closed stdout is found before the work
                output.write(report_lines(evaluate(args), args.json))

        run_cli(run, PROG)


if __name__ == "__main__":
    main()
