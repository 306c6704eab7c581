"""``python -m mtkit.translate CHECKPOINT``: translate a file or stdin, one line per line.

Output formats (stdout or ``-o FILE``), always one block per input line, in input order:

- default: the translation;
- ``--scores``: ``SCORE<TAB>TRANSLATION``;
- ``--nbest N``: N lines per input, ``INDEX<TAB>RANK<TAB>SCORE<TAB>TRANSLATION``, where
  INDEX is the 0-based input line and RANK runs from 0 (best); an empty input line gives
  a single ``INDEX<TAB>0<TAB>0.0000<TAB>`` line.

Scores are log-probabilities after length normalisation (``decode.length_norm``).

``--prefix FILE`` (one target prefix per input line, an empty line for none) makes each
translation begin with its prefix; ``--sampling`` (with ``--temperature``, ``--top-k``,
``--seed``) draws each translation instead of searching for the best, as
back-translation wants (docs/translating.md).

Everything that can be checked is checked before the model is loaded: the options, the
input, the ``-o`` file (a temp file is created beside it at once) and the
``--attention-plots`` folder. ``-o FILE`` is written atomically: the translations go to
the temp file, which replaces FILE only once it is complete, so an error, a full disk or
a signal never leaves half a file and an existing FILE stays as it was. SIGINT and
SIGTERM stop the command at once (exit 130 / 143, one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mtkit.cli.decoding import open_translator
from mtkit.cli.io import Output, exit_on_signals, prepare_folder
from mtkit.cli.options import (
    add_checkpoint_options,
    add_decoding_options,
    check_decoding_options,
    check_positive,
)
from mtkit.corpus.readers import read_lines, require_readable, require_stdin
from mtkit.errors import ConfigError, DataError, MtkitError, run_cli
from mtkit.runtime import prefer_passive_wait

if TYPE_CHECKING:  # torch loads only once the options are known good
    from mtkit.search.hypothesis import Hypothesis
    from mtkit.search.translator import Translator

PROG = "mtkit-translate"
INPUT = "the -i/--input file"
PREFIX = "the --prefix file"
READ_HINT = "; use --errors replace to substitute"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Translate text with an mtkit checkpoint: one output line per input line.",
        epilog="Formats: --scores gives 'SCORE<TAB>TEXT'; --nbest N gives N lines per input, "
        "'INDEX<TAB>RANK<TAB>SCORE<TAB>TEXT'.",
    )
    add = parser.add_argument
    add_checkpoint_options(
        add, "+", "a best.pt or last.pt written by mtkit.train; several translate as an ensemble"
    )
    add("-i", "--input", help="input file (default: stdin)")
    add("-o", "--output", help="output file, replaced only once complete (default: stdout)")
    _search_options(add)
    _prefix_and_sampling_options(add)
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
    check_positive(parser, args, ("beam_size", "nbest", "batch_tokens"))
    if args.beam_size is not None and args.nbest > args.beam_size:
        parser.error("--nbest must not exceed --beam-size")
    if not args.sampling and (args.temperature, args.top_k, args.seed) != (None, None, None):
        parser.error("--temperature, --top-k and --seed need --sampling")
    if args.sampling and ((args.beam_size or 1) > 1 or args.nbest > 1):
        parser.error("--sampling draws one translation per line: no --beam-size or --nbest above 1")
    return args


def _search_options(add: Callable[..., Any]) -> None:
    """Beam, n-best, scores, batch size and the search options set by flags."""
    add("--beam-size", type=int, help="beam size (default: the checkpoint's, 1 = greedy)")
    add("--nbest", type=int, default=1, help="hypotheses per input line")
    add("--scores", action="store_true", help="prefix each line with its score")
    add("--batch-tokens", type=int, help="source tokens x beams per batch")
    add(
        "--max-len-ratio",
        type=float,
        help="maximum output length = RATIO * source length + b (sets decode.max_len_a)",
    )
    add(
        "--length-penalty", type=float, help="length normalisation exponent (decode.length_penalty)"
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


# Search options set by flags: option name -> (flag, argparse destination).
SEARCH_FLAGS = {
    "beam_size": ("--beam-size", "beam_size"),
    "max_len_a": ("--max-len-ratio", "max_len_ratio"),
    "length_penalty": ("--length-penalty", "length_penalty"),
    "temperature": ("--temperature", "temperature"),
    "top_k": ("--top-k", "top_k"),
    "seed": ("--seed", "seed"),
}


def search_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The search options given on the command line, each checked on its own first, so
    that a bad value is an error naming its flag before the checkpoint is loaded."""
    from mtkit.config import SearchOptions

    changes: dict[str, Any] = {"nbest": args.nbest}  # checked against the beam by the parser
    if args.sampling:
        changes["sampling"] = True
    for name, (flag, dest) in SEARCH_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        try:
            SearchOptions(**{name: value})
        except ConfigError as error:
            raise ConfigError(f"{flag}: {error}") from None
        changes[name] = value
    return changes


def format_results(results: list[list[Hypothesis]], nbest: int, scores: bool) -> list[str]:
    """The output lines; a line break inside a translation becomes a space (one line each)."""
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


def check_plots(folder: str | None) -> Path | None:
    """The ``--attention-plots`` folder, created now, and matplotlib, imported now."""
    if folder is None:
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MtkitError("--attention-plots needs matplotlib: pip install 'mtkit[plots]'") from None
    return prepare_folder(folder, "--attention-plots")


def read_prefixes(args: argparse.Namespace, count: int) -> list[str] | None:
    """The ``--prefix`` file's lines: one per input line, else a one-line error."""
    if args.prefix is None:
        return None
    prefixes = read_lines(args.prefix, PREFIX, args.errors, READ_HINT)
    if len(prefixes) != count:
        raise DataError(
            f"--prefix {args.prefix} has {len(prefixes)} lines but the input has {count}; "
            "expected one prefix per input line"
        )
    return prefixes


def translate_lines(
    translator: Translator,
    lines: list[str],
    args: argparse.Namespace,
    changes: dict[str, Any],
    prefixes: list[str] | None = None,
) -> list[list[Hypothesis]]:
    """Search every line, with a progress bar on stderr when reading a file (or a terminal)."""
    from tqdm import tqdm

    from mtkit.search.prefix import PrefixError

    if args.nbest > 1 and args.beam_size is None:
        changes["beam_size"] = max(args.nbest, translator.defaults.beam_size)
    show_bar = sys.stderr is not None and (args.input is not None or sys.stderr.isatty())
    with tqdm(
        total=len(lines), unit="sent", disable=not show_bar, file=sys.stderr, desc="translate"
    ) as bar:
        try:
            return translator.translate_nbest(
                lines,
                batch_tokens=args.batch_tokens,
                return_attention=args.attention_plots is not None,
                progress=bar.update,
                prefix=prefixes,
                **changes,
            )
        except PrefixError as error:
            raise PrefixError(f"--prefix {args.prefix}: {error}") from None


def translate_onnx(
    lines: list[str], args: argparse.Namespace, changes: dict[str, Any], prefixes: object
) -> list[list[Hypothesis]]:
    """``--backend onnx``: the export folder decoded by :mod:`mtkit.onnx_runtime` (fp32 or
    int8; an export holds its ensemble itself; no shortlist, prefixes or attention plots)."""
    from mtkit.onnx_runtime.translator import OnnxTranslator

    if len(args.checkpoints) != 1 or args.shortlist or args.attention_plots or prefixes:
        raise ConfigError("--backend onnx takes one export folder, without --shortlist, "
                          "--prefix or --attention-plots")  # fmt: skip
    if args.precision not in ("fp32", "int8"):
        raise ConfigError(f"--backend onnx decodes fp32 or int8, not {args.precision}")
    unsupported = sorted(set(changes) - {"nbest", "beam_size", "max_len_a", "length_penalty"})
    if unsupported:
        raise ConfigError(f"--backend onnx does not support {', '.join(unsupported)}")
    translator = OnnxTranslator.from_folder(args.checkpoints[0], args.precision)
    if args.nbest > 1 and args.beam_size is None:
        changes["beam_size"] = max(args.nbest, translator.defaults.beam_size)
    results = translator.translate_nbest(lines, batch_tokens=args.batch_tokens, **changes)
    return cast("list[list[Hypothesis]]", results)


def run(args: argparse.Namespace) -> int:
    changes = search_changes(args)
    if args.input is None:
        require_stdin(INPUT)
    else:
        require_readable(args.input, INPUT)
    if args.prefix is not None:
        require_readable(args.prefix, PREFIX)
    plots = check_plots(args.attention_plots)
    with Output(args.output, "-o/--output") as output:
        lines = read_lines(args.input, INPUT, args.errors, READ_HINT)
        prefixes = read_prefixes(args, len(lines))
        if args.backend == "onnx":
            results = translate_onnx(lines, args, changes, prefixes)
        else:
            with open_translator(args, len(lines)) as translator:
                results = translate_lines(translator, lines, args, changes, prefixes)
        output.write(format_results(results, args.nbest, args.scores))
        output.commit()
    if plots is not None:
        from mtkit.cli.plots import save_attention_plots

        written = save_attention_plots(translator, lines, results, plots)
        print(f"{PROG}: {written} attention plot(s) in {plots}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    prefer_passive_wait()  # before torch loads (mtkit.runtime explains why)
    with exit_on_signals(PROG):
        logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
        args = parse_args(argv)
        raise SystemExit(run_cli(lambda: run(args), PROG))


if __name__ == "__main__":
    main()
