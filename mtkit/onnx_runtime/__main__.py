"""``python -m mtkit.onnx_runtime DIR``: translate a file or stdin with an ONNX export,
one line per line, without PyTorch (the ``mtkit-onnx`` console script).

The output formats of ``mtkit-translate``, one block per input line, in input order:
the translation; with ``--scores``, ``SCORE<TAB>TRANSLATION``; with ``--nbest N``, N lines
``INDEX<TAB>RANK<TAB>SCORE<TAB>TRANSLATION`` (an empty input line gives one
``INDEX<TAB>0<TAB>0.0000<TAB>`` line). ``-o FILE`` is written to a temporary file beside it
that replaces FILE only once complete; an error or a stop signal leaves FILE as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from mtkit.errors import DataError, run_cli
from mtkit.onnx_runtime.greedy import Hypothesis

PROG = "mtkit-onnx"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Translate text with an mtkit ONNX export (mtkit-export) without PyTorch: "
        "one output line per input line.",
    )
    add = parser.add_argument
    add("folder", metavar="EXPORT_DIR", help="a folder written by mtkit-export")
    add("-i", "--input", help="input file (default: stdin)")
    add("-o", "--output", help="output file, replaced only once complete (default: stdout)")
    add("--beam-size", type=int, help="beam size (default: the export's, 1 = greedy)")
    add("--nbest", type=int, default=1, help="hypotheses per input line")
    add("--scores", action="store_true", help="prefix each line with its score")
    add("--batch-tokens", type=int, help="source tokens x beams per batch")
    add("--max-len-ratio", type=float, help="maximum output length = RATIO * source length + b")
    add("--length-penalty", type=float, help="length normalisation exponent")
    add("--precision", choices=("fp32", "int8"), default="fp32",
        help="int8: the int8 step graphs (mtkit-export --int8)")  # fmt: skip
    add("--threads", type=int, default=1, help="onnxruntime threads per graph (default: 1)")
    args = parser.parse_args(argv)
    for name in ("beam_size", "nbest", "batch_tokens", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.beam_size is not None and args.nbest > args.beam_size:
        parser.error("--nbest must not exceed --beam-size")
    return args


def read_input(path: str | None) -> list[str]:
    """The input's lines (without line ends); unreadable or invalid UTF-8 is one line."""
    name = "stdin" if path is None else path
    try:
        data = sys.stdin.buffer.read() if path is None else Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"{name}: cannot read the -i/--input file ({error.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{name}:{line}: not valid UTF-8 ({error.reason})") from None
    return text.splitlines()


def format_results(results: list[list[Hypothesis]], nbest: int, scores: bool) -> list[str]:
    """The output lines, as ``mtkit-translate`` writes them."""
    lines = []
    for index, hyps in enumerate(results):
        if nbest > 1:
            for rank, hyp in enumerate(hyps[:nbest]):
                lines.append(f"{index}\t{rank}\t{hyp.score:.4f}\t{_one_line(hyp.text)}")
        elif scores:
            lines.append(f"{hyps[0].score:.4f}\t{_one_line(hyps[0].text)}")
        else:
            lines.append(_one_line(hyps[0].text))
    return lines


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


@contextlib.contextmanager
def output(path: str | None) -> Iterator[TextIO]:
    """stdout, or a temporary file beside ``path`` that replaces it once the block ends."""
    if path is None:
        yield sys.stdout
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise DataError(f"{target}: is a folder (-o/--output)")
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    except OSError as error:
        raise DataError(f"{target}: cannot write the -o/--output file ({error.strerror})") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            yield stream
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def run(args: argparse.Namespace) -> int:
    from mtkit.onnx_runtime.translator import OnnxTranslator

    translator = OnnxTranslator.from_folder(args.folder, args.precision, args.threads)
    beam = args.beam_size
    if args.nbest > 1 and beam is None:
        beam = max(args.nbest, translator.defaults.beam_size)
    changes = {
        "beam_size": beam,
        "nbest": args.nbest,
        "batch_tokens": args.batch_tokens,
        "max_len_a": args.max_len_ratio,
        "length_penalty": args.length_penalty,
    }
    options = translator.options(**changes)  # checked before any input is read
    with output(args.output) as stream:
        lines = read_input(args.input)
        results = translator.translate_nbest(lines, **{**changes, "nbest": options.nbest})
        for line in format_results(results, args.nbest, args.scores):
            stream.write(line + "\n")
    return 0


def _stop(number: int, _frame: object) -> None:
    raise SystemExit(128 + number)


def main(argv: Sequence[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _stop)
    args = parse_args(argv)
    raise SystemExit(run_cli(lambda: run(args), PROG))


if __name__ == "__main__":
    main()
