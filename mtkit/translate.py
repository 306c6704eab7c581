"""``python -m mtkit.translate CHECKPOINT``: translate a file or stdin, one line per line.

The input is read and answered in buffers of at most ``--buffer-size`` lines
(:mod:`mtkit.cli.stream`): each buffer is translated and its output written and flushed
before more is read, and a buffer is cut short when no more input has come yet, so the
command answers each line at once as a coprocess or in a terminal, and its memory does
not grow with the input. A file of up to ``--buffer-size`` lines is one buffer.

Output (stdout or ``-o FILE``), always one block per input line, in input order, in
the ``--format`` of :mod:`mtkit.cli.formats` (text, tsv, jsonl, marian), with word
alignments from the attention for ``--alignment`` (:mod:`mtkit.cli.alignment`).
Scores are log-probabilities after length normalisation (``decode.length_norm``).

``--prefix FILE`` (one target prefix per input line, an empty line for none, read in
step with the input) makes each translation begin with its prefix; ``--sampling`` (with
``--temperature``, ``--top-k``, ``--seed``) draws each translation instead of searching
for the best, as back-translation wants (docs/translating.md).

Checked before the model is loaded: the options, the ``-o`` file (a temp file is
created beside it at once), the ``--attention-plots`` folder and the first buffer of
input (for regular files, also that a ``--prefix`` file has as many lines as the
input). ``-o FILE`` is written atomically: the buffers go to the temp file, which
replaces FILE only once the input has ended, so an error, a full disk or a signal never
leaves half a file and an existing FILE stays as it was. On stdout, the buffers before
an error stay written. SIGINT and SIGTERM stop the command at once (exit 130 / 143, one
line on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mtkit.cli.alignment import ALIGNMENT_HELP, parse_alignment
from mtkit.cli.formats import FORMATS, Style, format_block
from mtkit.cli.io import Output, exit_on_signals, prepare_folder
from mtkit.cli.options import (
    add_checkpoint_options,
    add_decoding_options,
    add_search_options,
    check_decoding_options,
    check_positive,
    search_changes,
)
from mtkit.cli.stream import LineReader
from mtkit.cli.translating import Decoder, open_decoder, progress_bar
from mtkit.errors import ConfigError, DataError, MtkitError, run_cli
from mtkit.runtime import prefer_passive_wait

PROG = "mtkit-translate"
INPUT = "the -i/--input file"
PREFIX = "the --prefix file"
READ_HINT = "; use --errors replace to substitute"
PREFIX_RULE = "expected one prefix per input line"
BUFFER_SIZE = 10_000  # lines: a file of up to this many is read whole, as one buffer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Translate text with an mtkit checkpoint: one output line per input line.",
        epilog="Formats: --scores gives 'SCORE<TAB>TEXT'; --nbest N gives N lines per input, "
        "'INDEX<TAB>RANK<TAB>SCORE<TAB>TEXT'; --format tsv, jsonl (the service's fields) "
        "and marian (Moses n-best: 'INDEX ||| TEXT ||| F0= SCORE ||| SCORE'). Output is "
        "written buffer by buffer; -o FILE replaces FILE once the input has ended.",
    )
    add = parser.add_argument
    add_checkpoint_options(
        add, "+", "a best.pt or last.pt written by mtkit.train; several translate as an ensemble"
    )
    add("-i", "--input", help="input file (default: stdin)")
    add("-o", "--output", help="output file, replaced only once complete (default: stdout)")
    add_search_options(add)
    _prefix_and_sampling_options(add)
    _stream_options(add)
    add_decoding_options(add)
    add(
        "--attention-plots",
        metavar="DIR",
        help="write one attention heatmap PNG per input line (needs matplotlib)",
    )
    add(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="onnx: CHECKPOINT is an export folder (mtkit-export), decoded by mtkit.onnx_runtime",
    )
    add(
        "--errors",
        choices=("strict", "replace"),
        default="strict",
        help="invalid UTF-8 in the input: stop with an error, or replace it",
    )
    args = parser.parse_args(argv)
    check_decoding_options(parser, args)
    check_positive(parser, args, ("beam_size", "nbest", "batch_tokens", "buffer_size"))
    if args.max_len_a is not None and args.max_len_ratio is not None:
        parser.error("--max-len-ratio is the old name of --max-len-a: give one of them")
    try:
        args.alignment = None if args.alignment is None else parse_alignment(args.alignment)
    except ConfigError as error:
        parser.error(str(error))
    if args.beam_size is not None and args.nbest > args.beam_size:
        parser.error("--nbest must not exceed --beam-size")
    if not args.sampling and (args.temperature, args.top_k, args.seed) != (None, None, None):
        parser.error("--temperature, --top-k and --seed need --sampling")
    if args.sampling and ((args.beam_size or 1) > 1 or args.nbest > 1):
        parser.error("--sampling draws one translation per line: no --beam-size or --nbest above 1")
    return args


def _stream_options(add: Callable[..., Any]) -> None:
    add(
        "--buffer-size",
        type=int,
        default=BUFFER_SIZE,
        metavar="N",
        help="read at most N lines, translate them and write their output before reading "
        f"on (default {BUFFER_SIZE}); fewer when no more input has come yet, so that a "
        "pipe or a terminal gets each line's answer at once",
    )
    add("--format", choices=FORMATS, default="text", help="output format (docs/translating.md)")
    add(
        "--alignment",
        metavar="TYPE",
        help=f"add word alignments from the attention: {ALIGNMENT_HELP} (Marian's "
        "'TEXT ||| 0-0 1-2', source-target sentencepiece positions, source in reading order; "
        "</s> left out but in soft)",
    )


def _prefix_and_sampling_options(add: Callable[..., Any]) -> None:
    add("--prefix", metavar="FILE", help="target prefixes, one per input line (empty: none)")
    add(
        "--sampling",
        action="store_true",
        help="draw each translation (beam 1), e.g. to back-translate",
    )
    add("--temperature", type=float, help="sampling: log-probs / T (default 1; < 1 sharper)")
    add("--top-k", type=int, help="sampling: from the K most likely pieces only (default 0: all)")
    add("--seed", type=int, help="sampling: the same seed and line give the same draw (default 0)")


def check_plots(folder: str | None) -> Path | None:
    """The ``--attention-plots`` folder, created now, and matplotlib, imported now."""
    if folder is None:
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MtkitError("--attention-plots needs matplotlib: pip install 'mtkit[plots]'") from None
    return prepare_folder(folder, "--attention-plots")


def check_prefix_count(path: str | None, prefixes: LineReader | None, lines: int | None) -> None:
    """Before anything is read: a ``--prefix`` file and an input that are both regular
    files must have as many lines (else a one-line error naming both counts)."""
    if prefixes is None or lines is None:
        return
    count = prefixes.count_remaining()
    if count is not None and count != lines:
        raise DataError(prefix_mismatch(path, count, str(lines)))


def prefix_mismatch(path: str | None, prefixes: int, lines: str) -> str:
    return f"--prefix {path} has {prefixes} lines but the input has {lines}; " + PREFIX_RULE


def read_prefixes(args: argparse.Namespace, prefixes: LineReader, count: int) -> list[str]:
    """The prefixes of the next ``count`` input lines, read in step with them."""
    given: list[str] = []
    while len(given) < count:
        more = prefixes.read(count - len(given))
        if not more:
            lines = f"more than {prefixes.lines_read}"
            raise DataError(prefix_mismatch(args.prefix, prefixes.lines_read, lines))
        given += more
    return given


def check_prefixes_done(args: argparse.Namespace, prefixes: LineReader, lines: int) -> None:
    """At the end of the input: the ``--prefix`` file must have ended too."""
    if prefixes.read(1):
        while prefixes.read(10_000):
            pass  # counted as read, never kept
        raise DataError(prefix_mismatch(args.prefix, prefixes.lines_read, str(lines)))


def run(args: argparse.Namespace) -> int:
    changes = search_changes(args)
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(LineReader(args.input, INPUT, args.errors, READ_HINT))
        prefixes = None
        if args.prefix is not None:
            prefixes = stack.enter_context(LineReader(args.prefix, PREFIX, args.errors, READ_HINT))
        plots = check_plots(args.attention_plots)
        output = stack.enter_context(Output(args.output, "-o/--output"))
        total = reader.count_remaining()  # None for a pipe or a terminal
        check_prefix_count(args.prefix, prefixes, total)
        buffer = reader.read(args.buffer_size)  # before the model: its errors come first
        decoder = stack.enter_context(open_decoder(args, changes, total or len(buffer)))
        progress = stack.enter_context(progress_bar(args, total)).update
        while buffer:
            start = reader.lines_read - len(buffer)  # the 0-based index of buffer[0]
            given = None if prefixes is None else read_prefixes(args, prefixes, len(buffer))
            results = decoder.search(buffer, changes, given, start, progress)
            output.write(answer(decoder, args, buffer, results, start))
            if plots is not None:
                decoder.plots += save_plots(decoder, buffer, results, plots, start)
            buffer = reader.read(args.buffer_size)
        if prefixes is not None:
            check_prefixes_done(args, prefixes, reader.lines_read)
        output.commit()
    if plots is not None:
        print(f"{PROG}: {decoder.plots} attention plot(s) in {plots}", file=sys.stderr)
    return 0


def answer(
    decoder: Decoder, args: argparse.Namespace, buffer: list[str], results: list[Any], start: int
) -> list[str]:
    """The output lines of a buffer whose first line is input line ``start`` (0-based)."""
    style = Style(args.format, args.nbest, args.scores, args.alignment)
    return [
        line
        for index, (source, hyps) in enumerate(zip(buffer, results, strict=True))
        for line in format_block(start + index, source, hyps, style, decoder.grid_of)
    ]


def save_plots(
    decoder: Decoder, buffer: list[str], results: list[Any], folder: Path, start: int
) -> int:
    from mtkit.cli.plots import save_attention_plots

    return save_attention_plots(decoder.translator, buffer, results, folder, first=start + 1)


def main(argv: Sequence[str] | None = None) -> None:
    prefer_passive_wait()  # before torch loads (mtkit.runtime explains why)
    with exit_on_signals(PROG):
        logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
        args = parse_args(argv)
        raise SystemExit(run_cli(lambda: run(args), PROG))


if __name__ == "__main__":
    main()
