"""The decoding commands' model: a Translator built from their options, on
:func:`mtkit.search.load.load` and, with ``--processes`` > 1, helper processes that
share every batch (:mod:`mtkit.search.pool`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mtkit.cli.options import resolve_processes
from mtkit.errors import ConfigError
from mtkit.runtime import available_cores, set_threads, tune_process

if TYPE_CHECKING:  # torch loads only once the options are known good
    from mtkit.search.translator import Translator


def open_translator(args: argparse.Namespace, sentences: int) -> Translator:
    """The Translator of a command's model options (see :mod:`mtkit.cli.options`), with
    ``--processes auto`` resolved for this machine and an input of ``sentences`` lines.

    Also tunes the process for tensor work (the allocator, ``--threads``): only commands
    do that, after the helpers have started and before this process loads its model.
    """
    from mtkit.search.pool import load_shared
    from mtkit.search.spec import LoadSpec

    weights = None if args.weights is None else tuple(args.weights)
    spec = LoadSpec(tuple(args.checkpoints), weights, args.precision, args.shortlist, args.device)
    processes = resolve_processes(
        args.processes, _device_kind(args.device), args.threads, available_cores(), sentences
    )
    if processes > 1 and args.device != "cpu":
        raise ConfigError(f"--processes {processes} decodes on the CPU only, not {args.device}")

    def before_loading() -> None:
        tune_process()
        set_threads(args.threads)

    loaded, pool = load_shared(spec, processes, before_loading)
    from mtkit.search.translator import Translator  # torch: once the helpers are loading

    return Translator.of(loaded, pool)


def _device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` for ``--device auto``; any other name as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
