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
    add("--ref", required=True, help="reference translations, one per line")
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
    check_decoding_options(parser, args)
    check_positive(parser, args, ("beam_size", "batch_tokens"))
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
    with open_translator(args, len(sources)) as translator:
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
