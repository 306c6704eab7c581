"""mtkit-translate's model, buffer by buffer: :class:`Decoder` searches each buffer of
input lines with a Translator (and its decoding helpers, :mod:`mtkit.search.pool`) or an
ONNX export's model, and names input lines by their number in the whole input.

The Translator numbers the lines of each call from 1 in its messages (a prefix it cannot
force, inputs longer than any training sentence); :func:`numbered_from` and
:func:`shift_line` turn those into line numbers of the whole input.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from mtkit.cli.alignment import AttentionGrid, attention_grid
from mtkit.cli.decoding import open_translator
from mtkit.errors import ConfigError

if TYPE_CHECKING:  # torch loads only once the options are known good
    from mtkit.search.hypothesis import Hypothesis

# The Translator's logger, and its warning about long inputs, whose line numbers shift.
TRANSLATOR_LOG = "mtkit.search.translator"
LONG_INPUTS = "%d input(s) longer than the longest training sentence"
PREFIX_LINE = re.compile(r"^prefix of line (\d+)")


@contextlib.contextmanager
def progress_bar(args: argparse.Namespace, total: int | None) -> Iterator[Any]:
    """A progress bar on stderr when reading a file, or a pipe with stderr on a terminal
    (not while someone types the input)."""
    from tqdm import tqdm

    shown = args.input is not None or (
        sys.stderr is not None and sys.stderr.isatty() and not sys.stdin.isatty()
    )
    with tqdm(
        total=total, unit="sent", disable=not shown or sys.stderr is None, file=sys.stderr,
        desc="translate",
    ) as bar:  # fmt: skip
        yield bar


class Decoder:
    """The model that translates each buffer: a Translator, or an ONNX export's model
    (``--backend onnx``: no shortlist, prefixes, alignments or attention plots)."""

    def __init__(self, args: argparse.Namespace, translator: Any, onnx: bool) -> None:
        self.args, self.translator, self.onnx = args, translator, onnx
        self.attention = args.attention_plots is not None or args.alignment is not None
        self.plots = 0  # attention plots written

    def search(
        self,
        lines: list[str],
        changes: dict[str, Any],
        prefixes: list[str] | None,
        start: int,
        progress: Callable[[int], object],
    ) -> list[list[Hypothesis]]:
        """The n-best lists of ``lines``, input lines ``start + 1`` ... in messages."""
        from mtkit.search.prefix import PrefixError

        args = self.args
        if self.onnx:
            results = self.translator.translate_nbest(
                lines, batch_tokens=args.batch_tokens, **changes
            )
            progress(len(lines))
            return cast("list[list[Hypothesis]]", results)
        with numbered_from(start):
            try:
                return cast(
                    "list[list[Hypothesis]]",
                    self.translator.translate_nbest(
                        lines, batch_tokens=args.batch_tokens, return_attention=self.attention,
                        progress=progress, prefix=prefixes, **changes,
                    ),
                )  # fmt: skip
            except PrefixError as error:
                message = shift_line(str(error), start)
                raise PrefixError(f"--prefix {args.prefix}: {message}") from None

    def grid_of(self, source: str, hyp: Hypothesis) -> AttentionGrid | None:
        """``hyp``'s attention in reading order (for ``--alignment``)."""
        grid = attention_grid(self.translator, source, hyp)
        if grid is None and source.strip():
            raise ConfigError("--alignment needs a model with attention (model.attention=none)")
        return grid


@contextlib.contextmanager
def open_decoder(
    args: argparse.Namespace, changes: dict[str, Any], sentences: int
) -> Iterator[Decoder]:
    """The model of the options (the pool of helpers stops on leaving); ``sentences``:
    the input's lines if known, else the first buffer's, for ``--processes auto``.
    ``--nbest N`` without ``--beam-size`` widens the default beam to N in ``changes``."""
    if args.backend == "onnx":
        onnx = open_onnx(args, changes)
        _widen_beam(args, changes, onnx.defaults.beam_size)
        yield Decoder(args, onnx, onnx=True)
        return
    with open_translator(args, sentences) as translator:
        if args.alignment is not None and not attends(translator.model):
            raise ConfigError("--alignment needs a model with attention; this one has "
                              "model.attention=none")  # fmt: skip
        _widen_beam(args, changes, translator.defaults.beam_size)
        yield Decoder(args, translator, onnx=False)


def _widen_beam(args: argparse.Namespace, changes: dict[str, Any], default: int) -> None:
    if args.nbest > 1 and args.beam_size is None:
        changes["beam_size"] = max(args.nbest, default)


def attends(model: Any) -> bool:
    """Whether the model (or a member of the ensemble) has attention."""
    from mtkit.model.decoder import Decoder as ModelDecoder

    decoders = [m for m in model.modules() if isinstance(m, ModelDecoder)]
    return not decoders or any(d.attention is not None for d in decoders)


def open_onnx(args: argparse.Namespace, changes: dict[str, Any]) -> Any:
    """``--backend onnx``: the export folder's model (:mod:`mtkit.onnx_runtime`, fp32 or
    int8; an export holds its ensemble itself)."""
    from mtkit.onnx_runtime.translator import OnnxTranslator

    unusable = args.shortlist or args.attention_plots or args.prefix or args.alignment
    if len(args.checkpoints) != 1 or unusable:
        raise ConfigError("--backend onnx takes one export folder, without --shortlist, "
                          "--prefix, --alignment or --attention-plots")  # fmt: skip
    if args.precision not in ("fp32", "int8"):
        raise ConfigError(f"--backend onnx decodes fp32 or int8, not {args.precision}")
    unsupported = sorted(set(changes) - {"nbest", "beam_size", "max_len_a", "length_penalty"})
    if unsupported:
        raise ConfigError(f"--backend onnx does not support {', '.join(unsupported)}")
    return OnnxTranslator.from_folder(args.checkpoints[0], args.precision)


@contextlib.contextmanager
def numbered_from(start: int) -> Iterator[None]:
    """Inside the block, the Translator's warning about long inputs numbers them from
    ``start + 1`` (the first line of the buffer it translates)."""
    if start == 0:
        yield
        return

    def shift(record: logging.LogRecord) -> bool:
        args = record.args
        if str(record.msg).startswith(LONG_INPUTS) and isinstance(args, tuple) and len(args) == 4:
            numbers = re.sub(r"\d+", lambda m: str(int(m.group()) + start), str(args[2]))
            record.args = (args[0], args[1], numbers, args[3])
        return True

    log = logging.getLogger(TRANSLATOR_LOG)
    log.addFilter(shift)
    try:
        yield
    finally:
        log.removeFilter(shift)


def shift_line(message: str, start: int) -> str:
    """A prefix error of line N of a buffer as one of line ``start + N`` of the input."""
    return PREFIX_LINE.sub(lambda m: f"prefix of line {int(m.group(1)) + start}", message)
