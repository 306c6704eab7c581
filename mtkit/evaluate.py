"""``python -m mtkit.evaluate``: BLEU, chrF and TER (sacrebleu, detokenized) with signatures.

python -m mtkit.evaluate CHECKPOINT --src FILE --ref FILE [--beam-size K] [--shortlist] [--json]
python -m mtkit.evaluate --hyp FILE --ref FILE [--json]

Empty or misaligned files are a one-line error; a byte order mark opening a file is
dropped. SIGINT and SIGTERM stop the command at once (exit 130 / 143, one line).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from typing import Any, cast

from mtkit.cli.io import Output, exit_on_signals
from mtkit.corpus.readers import read_lines
from mtkit.errors import DataError, run_cli
from mtkit.runtime import prefer_passive_wait
from mtkit.translate import check_threads_and_processes

PROG = "mtkit-evaluate"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Score translations with sacrebleu: translate --src with CHECKPOINT, "
        "or score existing --hyp output, against --ref.",
    )
    parser.add_argument(
        "checkpoints",
        nargs="*",
        metavar="CHECKPOINT",
        help="checkpoint to translate --src with; several translate as an ensemble",
    )
    parser.add_argument(
        "--weights", type=float, nargs="+", metavar="W", help="ensemble weights, one per checkpoint"
    )
    parser.add_argument("--src", help="source file to translate")
    parser.add_argument("--hyp", help="existing translations, one per line")
    parser.add_argument("--ref", required=True, help="reference translations, one per line")
    parser.add_argument("--beam-size", type=int, help="beam size (default: the checkpoint's)")
    parser.add_argument("--batch-tokens", type=int, help="source tokens x beams per batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32")
    parser.add_argument(
        "--threads",
        default="auto",
        help="CPU threads: auto (one per core this process may use; the default) or N",
    )
    parser.add_argument(
        "--processes",
        default="auto",
        help="decoding processes of one thread each: auto (the default) or N, as for "
        "mtkit-translate",
    )
    parser.add_argument(
        "--shortlist", action="store_true", help="decode through the checkpoint's shortlist"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.hyp is not None and (args.checkpoints or args.src):
        parser.error("give either CHECKPOINT --src, or --hyp, not both")
    if args.hyp is not None and args.shortlist:
        parser.error("--shortlist applies to CHECKPOINT --src, not to --hyp")
    if args.hyp is None and not (args.checkpoints and args.src):
        parser.error("give CHECKPOINT --src FILE --ref FILE, or --hyp FILE --ref FILE")
    check_threads_and_processes(parser, args)
    for name in ("beam_size", "batch_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def evaluate(args: argparse.Namespace) -> dict[str, object]:
    references = read_lines(args.ref, "the --ref file")
    if args.hyp is not None:
        hypotheses = read_lines(args.hyp, "the --hyp file")
        hyp_name = args.hyp
    else:
        hypotheses = translate_sources(args, len(references))
        hyp_name = f"{' + '.join(args.checkpoints)} on {args.src}"
    if len(hypotheses) != len(references):
        raise DataError(
            f"{hyp_name} has {len(hypotheses)} lines but {args.ref} has {len(references)}"
        )
    if not references:
        raise DataError(f"{args.ref} is empty: there is nothing to score")
    from mtkit.metrics import Score, all_scores

    scores: list[Score] = all_scores(hypotheses, references)
    return {
        "hypotheses": hyp_name,
        "references": args.ref,
        "sentences": len(references),
        "beam_size": args.beam_size,
        "scores": [s.as_dict() for s in scores],
    }


def translate_sources(args: argparse.Namespace, n_references: int) -> list[str]:
    """``--src`` translated with CHECKPOINT, once its line count matches ``--ref``'s."""
    sources = read_lines(args.src, "the --src file")
    if len(sources) != n_references:
        raise DataError(f"{args.src} has {len(sources)} lines but {args.ref} has {n_references}")
    if not sources:
        raise DataError(f"{args.ref} is empty: there is nothing to score")
    from mtkit.translate import translator_for

    with translator_for(args, len(sources)) as translator:
        return translator.translate(
            sources, beam_size=args.beam_size, batch_tokens=args.batch_tokens
        )


def report_lines(report: dict[str, object], as_json: bool) -> list[str]:
    if as_json:
        return [json.dumps(report, indent=2)]
    scores = cast(list[dict[str, Any]], report["scores"])
    return [f"{score['text']}  ({score['signature']})" for score in scores]


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
