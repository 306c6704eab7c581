"""Attention heatmaps (matplotlib is an optional extra: ``pip install mtkit[plots]``)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from mtkit.cli.io import check_output, write_file
from mtkit.errors import DataError, MtkitError
from mtkit.search.hypothesis import Hypothesis
from mtkit.search.translator import Translator


def save_attention_plots(
    translator: Translator,
    sources: Sequence[str],
    results: Sequence[Sequence[Hypothesis]],
    folder: Path,
    first: int = 1,
) -> int:
    """One PNG per non-empty input line (``00001.png`` for line 1), best hypothesis only;
    ``sources[0]`` is input line ``first``.

    The source axis is in reading order even when the model reads the source reversed.
    Each PNG is written to a temp file and renamed, so none is ever half-written; a
    folder or file that cannot be written is a one-line DataError naming it.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MtkitError("--attention-plots needs matplotlib: pip install 'mtkit[plots]'") from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{folder}: cannot create the folder ({error.strerror})") from None
    written = 0
    for number, (source, hyps) in enumerate(zip(sources, results, strict=True), start=first):
        best = hyps[0]
        if not source.strip() or best.attention is None:
            continue
        labels, weights = translator.source_axis(source, best.attention)
        targets = [translator.codec.tgt.id_to_piece(t) for t in best.tokens] + ["</s>"]
        width = max(4.0, 0.45 * len(labels) + 1.5)
        height = max(3.0, 0.4 * len(targets) + 1.5)
        fig, ax = plt.subplots(figsize=(width, height))
        ax.imshow(weights[: len(targets)].numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(targets)), targets, fontsize=8)
        ax.set_xlabel("source (reading order)")
        ax.set_ylabel("output")
        ax.set_title(textwrap.shorten(best.text, width=100, placeholder=" …"), fontsize=9)
        fig.tight_layout()
        _save(fig, folder / f"{number:05d}.png")
        plt.close(fig)
        written += 1
    return written


def _save(figure: Any, path: Path) -> None:
    """``figure`` as a PNG at ``path``, written atomically (never over a special file)."""
    write_file(check_output(path, "--attention-plots"), _png(figure), "--attention-plots")


def _png(figure: Any) -> Callable[[BinaryIO], None]:
    def write(stream: BinaryIO) -> None:
        figure.savefig(stream, format="png", dpi=100)

    return write
