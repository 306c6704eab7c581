"""Shared fixtures: tiny deterministic corpora, the shared real corpora, a small trained model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPORA = Path(os.environ.get("MTKIT_SHARED_CORPORA", ROOT.parent / "shared" / "corpora"))
MULTI30K = SHARED_CORPORA / "multi30k"

requires_multi30k = pytest.mark.skipif(
    not (MULTI30K / "train.de").is_file(),
    reason=f"needs the Multi30k corpus in {MULTI30K} (set MTKIT_SHARED_CORPORA)",
)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test session gets its own corpus cache, never the user's ~/.cache/mtkit.

    Session-wide, so that session-scoped fixtures which train a model are covered too.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MTKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mtkit-cache"))
        yield


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """One torch thread for the models the tests run in this process.

    They are tiny, so a second intra-op thread buys nothing; and with ``pytest -n auto``
    (a test file per core) two threads per worker would oversubscribe the cores, where
    spinning OpenMP threads make such tests several times slower. The server tests also
    share this process between the server, its clients and a reference Translator.
    Child processes choose their own threads (``train.threads``, ``--threads``).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


WORDS = [
    "red",
    "blue",
    "cat",
    "dog",
    "runs",
    "sleeps",
    "big",
    "small",
    "the",
    "a",
    "house",
    "tree",
    "sees",
    "near",
    "under",
    "green",
]


def tiny_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` deterministic pairs; the target is the reversed, upper-cased source."""
    import random

    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 8))]
        src.append(" ".join(words))
        tgt.append(" ".join(w.upper() for w in reversed(words)))
    return src, tgt


@pytest.fixture
def tiny_corpus_dir(tmp_path: Path) -> Path:
    """A ``{split}.{lang}`` folder (langs xx -> yy) with 300/40/40 pairs."""
    for split, n, seed in (("train", 300, 1), ("valid", 40, 2), ("test", 40, 3)):
        src, tgt = tiny_pairs(n, seed)
        write_lines(tmp_path / f"{split}.xx", src)
        write_lines(tmp_path / f"{split}.yy", tgt)
    return tmp_path
