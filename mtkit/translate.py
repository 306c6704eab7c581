"""``python -m mtkit.translate CHECKPOINT``: translate a file or stdin, one line per line.

Output formats (stdout or ``-o FILE``), always one block per input line, in input order:

- default: the translation;
- ``--scores``: ``SCORE<TAB>TRANSLATION``;
- ``--nbest N``: N lines per input, ``INDEX<TAB>RANK<TAB>SCORE<TAB>TRANSLATION``, where
  INDEX is the 0-based input line and RANK runs from 0 (best); an empty input line gives
  a single ``INDEX<TAB>0<TAB>0.0000<TAB>`` line.

Scores are log-probabilities after length normalisation (``decode.length_norm``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from mtkit.errors import DataError, run_cli
from mtkit.search import Hypothesis
from mtkit.translator import Translator


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mtkit-translate",
        description="Translate text with an mtkit checkpoint: one output line per input line.",
        epilog="Formats: --scores gives 'SCORE<TAB>TEXT'; --nbest N gives N lines per input, "
        "'INDEX<TAB>RANK<TAB>SCORE<TAB>TEXT'.",
    )
    parser.add_argument("checkpoint", help="a best.pt or last.pt written by mtkit.train")
    parser.add_argument("-i", "--input", help="input file (default: stdin)")
    parser.add_argument("-o", "--output", help="output file (default: stdout)")
    parser.add_argument(
        "--beam-size", type=int, help="beam size (default: the checkpoint's, 1 = greedy)"
    )
    parser.add_argument("--nbest", type=int, default=1, help="hypotheses per input line")
    parser.add_argument("--scores", action="store_true", help="prefix each line with its score")
    parser.add_argument("--batch-tokens", type=int, help="source tokens x beams per batch")
    parser.add_argument(
        "--max-len-ratio", type=float, help="maximum output length = RATIO * source length + b"
    )
    parser.add_argument("--length-penalty", type=float, help="length normalisation exponent")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument(
        "--attention-plots",
        metavar="DIR",
        help="write one attention heatmap PNG per input line (needs matplotlib)",
    )
    parser.add_argument(
        "--errors",
        choices=("strict", "replace"),
        default="strict",
        help="invalid UTF-8 in the input: stop with an error, or replace it",
    )
    args = parser.parse_args(argv)
    for name in ("beam_size", "nbest", "batch_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.beam_size is not None and args.nbest > args.beam_size:
        parser.error("--nbest must not exceed --beam-size")
    return args


def read_lines(path: str | None, errors: str) -> list[str]:
    """Input lines without their line ends; invalid UTF-8 names the line (or is replaced)."""
    if path is not None and not Path(path).is_file():
        raise DataError(f"{path}: no such file (-i/--input)")
    stream = open(path, "rb") if path is not None else sys.stdin.buffer  # noqa: SIM115
    name = path or "<stdin>"
    lines = []
    with stream:
        for number, raw in enumerate(stream, start=1):
            try:
                text = raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{name}:{number}: invalid UTF-8 ({error.reason} at byte "
                    f"{error.start}); use --errors replace to substitute"
                ) from None
            lines.append(text.rstrip("\r\n"))
    return lines


@contextmanager
def open_output(path: str | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    try:
        handle = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
    except OSError as error:
        raise DataError(f"{path}: cannot write ({error.strerror})") from None
    with handle:
        yield handle


def format_results(results: list[list[Hypothesis]], nbest: int, scores: bool) -> Iterator[str]:
    for index, hyps in enumerate(results):
        if nbest > 1:
            for rank, hyp in enumerate(hyps[:nbest]):
                yield f"{index}\t{rank}\t{hyp.score:.4f}\t{hyp.text}"
        elif scores:
            yield f"{hyps[0].score:.4f}\t{hyps[0].text}"
        else:
            yield hyps[0].text


def run(args: argparse.Namespace) -> int:
    translator = Translator.from_checkpoint(
        args.checkpoint, device=args.device, precision=args.precision
    )
    lines = read_lines(args.input, args.errors)
    beam_size = args.beam_size
    if args.nbest > 1 and beam_size is None:
        beam_size = max(args.nbest, translator.defaults.beam_size)
    options = translator.options(beam_size, args.nbest, args.length_penalty, args.max_len_ratio)
    show_bar = args.input is not None or sys.stderr.isatty()
    with tqdm(
        total=len(lines), unit="sent", disable=not show_bar, file=sys.stderr, desc="translate"
    ) as bar:
        results = translator.translate_nbest(
            lines,
            options=options,
            batch_tokens=args.batch_tokens,
            return_attention=args.attention_plots is not None,
            progress=bar.update,
        )
    with open_output(args.output) as out:
        for line in format_results(results, args.nbest, args.scores):
            out.write(line + "\n")
    if args.attention_plots is not None:
        from mtkit.plots import save_attention_plots

        written = save_attention_plots(translator, lines, results, Path(args.attention_plots))
        print(
            f"mtkit-translate: {written} attention plot(s) in {args.attention_plots}",
            file=sys.stderr,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="mtkit-translate: %(message)s")
    args = parse_args(argv)

    try:
        raise SystemExit(run_cli(lambda: run(args), "mtkit-translate"))
    except BrokenPipeError:  # e.g. piped into `head`
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()
