"""Parallel corpora: from files or Hugging Face datasets to cached, memory-mapped subword ids.

The pipeline for each split is: read and validate text pairs -> drop empty pairs
(counted) -> train sentencepiece on a bounded sample of the training split -> encode
(source reversed before EOS if asked) -> drop over-long training pairs (counted) ->
save under a cache key made from the data's content and the tokenizer settings. Every
stage streams, so memory does not grow with the corpus. A second run with the same key
only checks and memory-maps the saved arrays. The code lives in :mod:`mtkit.corpus`.
"""

from __future__ import annotations

import sys

from mtkit.corpus.cache import load_corpus

PROG = "mtkit-data"
USAGE = """usage: mtkit-data [KEY=VALUE ...]

Prepare the corpus cache of a training setup and print its folder. Takes the same
overrides as mtkit-train (only data.* and tokenizer.* matter). SIGINT or SIGTERM stops
it at once (exit 130 / 143) and removes the half-built cache folder."""


def main() -> None:
    """``python -m mtkit.data [KEY=VALUE ...]``: prepare the corpus cache of a training setup.

    Takes the same overrides as ``python -m mtkit.train`` (only ``data`` and ``tokenizer``
    matter) and prints the cache entry's folder: what to copy to the nodes of a
    multi-node run that do not share a filesystem with the node that prepares it.
    A stop signal ends it like the other commands (one line, exit 128 + N), once the
    half-built ``building-*`` folder and the helper processes are gone.
    """
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(USAGE)
        return
    from mtkit.cli.io import Output, exit_on_signals
    from mtkit.errors import run_cli
    from mtkit.runtime import prefer_passive_wait

    prefer_passive_wait()  # sentencepiece and the encoding workers inherit it
    with exit_on_signals(PROG):

        def prepare_and_print() -> None:
            with Output(None) as output:  # a closed stdout is found before the work
                output.write([_prepare()])

        run_cli(prepare_and_print, PROG)


def _prepare() -> str:
    import logging

    from mtkit.config.compose import compose_run

    run = compose_run(sys.argv[1:])  # one-line errors for bad options
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("mtkit")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return str(load_corpus(run.data, run.tokenizer, build=True).folder)


if __name__ == "__main__":
    main()
