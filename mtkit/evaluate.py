"""``python -m mtkit.evaluate``: BLEU, chrF and TER (sacrebleu, detokenized) with signatures.

python -m mtkit.evaluate CHECKPOINT --src FILE --ref FILE [--beam-size K] [--json]
python -m mtkit.evaluate --hyp FILE --ref FILE [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, cast

from mtkit.errors import DataError, run_cli
from mtkit.metrics import Score, all_scores
from mtkit.translate import read_lines
from mtkit.translator import Translator


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mtkit-evaluate",
        description="Score translations with sacrebleu: translate --src with CHECKPOINT, "
        "or score existing --hyp output, against --ref.",
    )
    parser.add_argument("checkpoint", nargs="?", help="checkpoint to translate --src with")
    parser.add_argument("--src", help="source file to translate")
    parser.add_argument("--hyp", help="existing translations, one per line")
    parser.add_argument("--ref", required=True, help="reference translations, one per line")
    parser.add_argument("--beam-size", type=int, help="beam size (default: the checkpoint's)")
    parser.add_argument("--batch-tokens", type=int, help="source tokens x beams per batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.hyp is not None and (args.checkpoint or args.src):
        parser.error("give either CHECKPOINT --src, or --hyp, not both")
    if args.hyp is None and not (args.checkpoint and args.src):
        parser.error("give CHECKPOINT --src FILE --ref FILE, or --hyp FILE --ref FILE")
    if args.beam_size is not None and args.beam_size < 1:
        parser.error("--beam-size must be >= 1")
    return args


def evaluate(args: argparse.Namespace) -> dict[str, object]:
    references = read_lines(args.ref, "strict")
    if args.hyp is not None:
        hypotheses = read_lines(args.hyp, "strict")
        hyp_name = args.hyp
    else:
        sources = read_lines(args.src, "strict")
        if len(sources) != len(references):
            raise DataError(
                f"{args.src} has {len(sources)} lines but {args.ref} has {len(references)}"
            )
        translator = Translator.from_checkpoint(args.checkpoint, args.device, args.precision)
        hypotheses = translator.translate(
            sources, beam_size=args.beam_size, batch_tokens=args.batch_tokens
        )
        hyp_name = f"{args.checkpoint} on {args.src}"
    if len(hypotheses) != len(references):
        raise DataError(
            f"{hyp_name} has {len(hypotheses)} lines but {args.ref} has {len(references)}"
        )
    scores: list[Score] = all_scores(hypotheses, references)
    return {
        "hypotheses": hyp_name,
        "references": args.ref,
        "sentences": len(references),
        "beam_size": args.beam_size,
        "scores": [s.as_dict() for s in scores],
    }


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="mtkit-evaluate: %(message)s")
    args = parse_args(argv)
    report = run_cli(lambda: evaluate(args), "mtkit-evaluate")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for score in cast(list[dict[str, Any]], report["scores"]):
            print(f"{score['text']}  ({score['signature']})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
