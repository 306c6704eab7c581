"""The model options the decoding commands share (mtkit-translate, mtkit-evaluate), and
their checks: a bad value is a usage error naming its flag, before anything loads.

- CHECKPOINT ... and ``--weights``: one checkpoint, or an ensemble of several;
- ``--device``, ``--precision``, ``--shortlist``: how the model decodes;
- ``--threads`` and ``--processes``: how many cores decode, as threads of this process or
  as single-threaded processes each searching a share of every batch
  (:mod:`mtkit.search.pool`). ``--processes auto`` starts helpers only where they pay.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from mtkit import runtime
from mtkit.errors import ConfigError
from mtkit.runtime import resolve_threads

# ``--processes auto`` starts helpers only for at least this many sentences: a helper
# takes a few seconds to start and load (in parallel with the caller's own loading),
# and a few batches are too few to share.
AUTO_MIN_SENTENCES = 200
PROCESSES_HELP = "auto or an integer >= 1"


def add_checkpoint_options(add: Callable[..., Any], nargs: str, purpose: str) -> None:
    """CHECKPOINT ... (``purpose``: its help text) and ``--weights``."""
    add("checkpoints", nargs=nargs, metavar="CHECKPOINT", help=purpose)
    add(
        "--weights", type=float, nargs="+", metavar="W", help="ensemble weights, one per checkpoint"
    )


def add_decoding_options(add: Callable[..., Any]) -> None:
    """``--device``, ``--precision``, ``--threads``, ``--processes`` and ``--shortlist``."""
    add("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    add("--precision", choices=("fp32", "bf16", "int8"), default="fp32")
    add(
        "--threads",
        default="auto",
        help="CPU threads: auto (one per core this process may use; the default) or N",
    )
    add(
        "--processes",
        default="auto",
        help="decoding processes of one thread each: auto (2 on a CPU with 2+ cores for "
        f"{AUTO_MIN_SENTENCES}+ lines when --threads is auto; the default) or N from 1 to "
        f"the cores this process may use ({runtime.usable_cpus()} here); a larger N is an "
        "error",
    )
    add(
        "--shortlist",
        action="store_true",
        help="score only the target pieces the checkpoint's lexical shortlist allows "
        "(faster; add one with mtkit-shortlist)",
    )


def check_decoding_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--threads`` and ``--processes``: each auto or an integer >= 1 (a usage error);
    ``args.processes`` becomes ``auto`` or the integer."""
    try:
        resolve_threads(args.threads)
    except ConfigError:
        parser.error(f"--threads must be auto or an integer >= 1, not {args.threads!r}")
    try:
        args.processes = parse_processes(args.processes)
    except ConfigError as error:
        parser.error(str(error))


def check_positive(
    parser: argparse.ArgumentParser, args: argparse.Namespace, names: Iterable[str]
) -> None:
    """Each option of ``names`` (argparse destinations) that is given must be >= 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")


def parse_processes(text: str) -> int | str:
    """``--processes`` as given: ``auto`` or an integer from 1 to the usable cores (else a
    ConfigError): more helpers than cores only take turns, each with a model in memory."""
    if text == "auto":
        return text
    if not (text.strip().isdigit() and int(text) >= 1):
        raise ConfigError(f"--processes must be {PROCESSES_HELP}, not {text!r}")
    cores = runtime.usable_cpus()
    if int(text) > cores:
        raise ConfigError(
            f"--processes must be auto or an integer from 1 to {cores} (the cores this "
            f"process may use), not {text!r}"
        )
    return int(text)


def resolve_processes(
    requested: int | str, device: str, threads: int | str, cores: int, sentences: int
) -> int:
    """How many processes decode: ``requested``, or for ``auto`` 2 on a CPU with 2 or
    more cores when the threads are ``auto`` and there are AUTO_MIN_SENTENCES sentences
    or more; else 1 (a GPU, one core, pinned threads, a short input)."""
    if requested != "auto":
        return int(requested)
    if device != "cpu" or threads != "auto" or cores < 2 or sentences < AUTO_MIN_SENTENCES:
        return 1
    return 2


def add_search_options(add: Callable[..., Any]) -> None:
    """Beam, n-best, scores, batch size and the search options set by flags, each named
    after its ``decode`` key (:data:`SEARCH_FLAGS`)."""
    add("--beam-size", type=int, help="beam size (default: the checkpoint's, 1 = greedy)")
    add("--nbest", type=int, default=1, help="hypotheses per input line")
    add("--scores", action="store_true", help="prefix each line with its score")
    add("--batch-tokens", type=int, help="source tokens x beams per batch")
    add(
        "--min-len",
        type=int,
        metavar="N",
        help="no end of sentence before N pieces (decode.min_len)",
    )
    add(
        "--no-repeat-ngram",
        type=int,
        metavar="N",
        help="never repeat an N-gram; 0: off (decode.no_repeat_ngram)",
    )
    add(
        "--coverage-penalty",
        type=float,
        metavar="BETA",
        help="GNMT coverage penalty; 0: off (decode.coverage_penalty)",
    )
    add("--length-norm", metavar="KIND", help="none, average or gnmt (decode.length_norm)")
    add(
        "--length-penalty",
        type=float,
        metavar="ALPHA",
        help="length normalisation exponent (decode.length_penalty)",
    )
    add("--max-len-a", type=float, metavar="A", help="max output length A * source + B (decode)")
    add("--max-len-ratio", type=float, metavar="A", help=argparse.SUPPRESS)  # the old name
    add("--max-len-b", type=int, metavar="B", help="max output length A * source + B (decode)")


# Search options set by flags: (option name, flag, argparse destination); each flag sets
# the ``decode`` key of its name (the checkpoint's value is the default).
SEARCH_FLAGS = (
    ("beam_size", "--beam-size", "beam_size"),
    ("min_len", "--min-len", "min_len"),
    ("no_repeat_ngram", "--no-repeat-ngram", "no_repeat_ngram"),
    ("coverage_penalty", "--coverage-penalty", "coverage_penalty"),
    ("length_norm", "--length-norm", "length_norm"),
    ("length_penalty", "--length-penalty", "length_penalty"),
    ("max_len_a", "--max-len-a", "max_len_a"),
    ("max_len_a", "--max-len-ratio", "max_len_ratio"),
    ("max_len_b", "--max-len-b", "max_len_b"),
    ("temperature", "--temperature", "temperature"),
    ("top_k", "--top-k", "top_k"),
    ("seed", "--seed", "seed"),
)


def search_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The search options given on the command line, each checked on its own first, so
    that a bad value is an error naming its flag before the checkpoint is loaded."""
    from mtkit.config import SearchOptions

    changes: dict[str, Any] = {"nbest": args.nbest}  # checked against the beam by the parser
    if getattr(args, "sampling", False):
        changes["sampling"] = True
    for name, flag, dest in SEARCH_FLAGS:
        value = getattr(args, dest, None)
        if value is None:
            continue
        try:
            SearchOptions(**{name: value})
        except ConfigError as error:
            raise ConfigError(f"{flag}: {error}") from None
        changes[name] = value
    return changes
