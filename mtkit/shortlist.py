"""``python -m mtkit.shortlist CKPT -o OUT.pt [overrides]``: add a shortlist to a checkpoint."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtkit.cli.io import check_output, exit_on_signals, write_checkpoint
from mtkit.corpus.cache import Corpus, load_corpus
from mtkit.errors import CheckpointError, ConfigError, run_cli
from mtkit.model.checkpoint import load_checkpoint, model_from_payload
from mtkit.search.shortlist.step import Shortlisted, coverage
from mtkit.search.shortlist.table import MAX_PAIRS, build_shortlist

PROG = "mtkit-shortlist"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a copy of a checkpoint with a lexical shortlist for faster decoding "
        "(translate/evaluate --shortlist), counted on the training data it was trained on.",
        epilog="Example: mtkit-shortlist best.pt -o best-sl.pt data=multi30k data.dir=PATH",
    )
    parser.add_argument("checkpoint", metavar="CKPT")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="the checkpoint to write: a new name or a regular file, replaced only once "
        "complete (a folder, a device or a named pipe is refused)",
    )
    parser.add_argument("--k", type=int, default=50, help="candidates per source piece")
    parser.add_argument(
        "--frequent", type=int, default=200, help="most frequent target pieces, always allowed"
    )
    parser.add_argument("--max-pairs", type=int, default=MAX_PAIRS, help="pairs counted at most")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="data.*/tokenizer.* as for mtkit.train"
    )
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after options
    for name, least in (("k", 1), ("frequent", 0), ("max_pairs", 1)):
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be >= {least}")
    return args


def training_corpus(overrides: list[str], payload: dict[str, Any], source: str) -> Corpus:
    """The corpus cache of the training data settings; its sentencepiece must be the model's."""
    from mtkit.config.compose import compose_run

    run = compose_run(overrides)
    corpus = load_corpus(run.data, run.tokenizer)
    state = corpus.codec.to_state()
    if any(state[key] != payload["codec"].get(key) for key in ("src_model", "tgt_model")):
        raise CheckpointError(
            f"{source}: was not trained on this corpus (another sentencepiece model); "
            "give the data.* and tokenizer.* settings it was trained with"
        )
    return corpus


def run(args: argparse.Namespace) -> int:
    output = check_output(args.output, "-o")  # a folder or a device is refused before the work
    source = Path(args.checkpoint)
    if output.exists() and source.exists() and output.samefile(source):
        raise ConfigError(f"-o {args.output}: is the input checkpoint; choose another file")
    payload = load_checkpoint(source)
    model, _ = model_from_payload(payload, str(source))
    corpus = training_corpus(args.overrides, payload, str(source))
    train = corpus.splits["train"]
    start = time.perf_counter()
    shortlist = build_shortlist(train, model, args.k, args.frequent, args.max_pairs)
    seconds = time.perf_counter() - start
    covered, size = coverage(Shortlisted(model, shortlist), corpus.splits["valid"])
    payload["shortlist"] = shortlist.to_state()
    write_checkpoint(output, payload, "-o")
    sample = "all" if shortlist.pairs == len(train) else f"the first {shortlist.pairs} of"
    print(
        f"{PROG}: {args.output}: k={args.k} frequent={args.frequent} from {sample} "
        f"{len(train)} training pairs in {seconds:.1f} s",
        file=sys.stderr,
    )
    print(
        f"{PROG}: validation coverage {100 * covered:.2f}% of reference pieces (+EOS); "
        f"allowed {100 * size:.1f}% of {len(model.output_ids)} output columns per sentence",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    with exit_on_signals(PROG):  # the temp file of a write under way goes too
        logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
        args = parse_args(argv)
        raise SystemExit(run_cli(lambda: run(args), PROG))


if __name__ == "__main__":
    main()
