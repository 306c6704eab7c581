"""Where each split's text comes from: readers, a content fingerprint, and a size for progress.

A :class:`SplitSource` streams ``(source, target)`` string pairs in file order (the
readers in :mod:`mtkit.corpus.readers` validate every line as they go, so an error names its
file and line however deep in the file it is), and carries a fingerprint of the content
for the cache key (:mod:`mtkit.corpus.fingerprint`). Nothing here holds a whole split in memory.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtkit.config import DataConfig
from mtkit.corpus.fingerprint import file_digest
from mtkit.corpus.readers import Pair, iter_file_pair, iter_jsonl, iter_tsv, require_file
from mtkit.errors import DataError, MtkitError

ROLES = ("train", "valid", "test")
HF_BATCH = 10_000


@dataclass
class SplitSource:
    """How to read one split, and a fingerprint of its content for the cache key.

    ``size`` is what progress counts against: the total bytes of the files (``unit``
    ``"bytes"``), or the number of rows of a Hugging Face split (``"pairs"``).
    """

    role: str
    description: str
    fingerprint: str
    pairs: Callable[[], Iterator[Pair]]
    size: int
    unit: str

    def read(self) -> dict[str, list[str]]:
        """The whole split as ``{"src": [...], "tgt": [...]}``; for small splits only."""
        src: list[str] = []
        tgt: list[str] = []
        for s, t in self.pairs():
            src.append(s)
            tgt.append(t)
        return {"src": src, "tgt": tgt}


def split_sources(cfg: DataConfig) -> dict[str, SplitSource]:
    """The readers of the train/valid/(test) splits for ``cfg.format``."""
    names = {"train": cfg.train_split, "valid": cfg.valid_split, "test": cfg.test_split}
    if cfg.format == "dir" and not cfg.dir:
        raise DataError("data.dir is not set (a directory holding {split}.{lang} files)")
    if cfg.format == "hf" and not cfg.name:
        raise DataError("data.name is not set (a dataset id or a local dataset path)")
    if cfg.format == "hf":
        return _hf_sources(cfg, names)
    result: dict[str, SplitSource] = {}
    for role in ROLES:
        if cfg.format == "dir":
            if names[role] is None:
                continue
            assert cfg.dir is not None
            directory = Path(cfg.dir).expanduser()
            if not directory.is_dir():
                raise DataError(f"{directory}: no such directory (data.dir)")
            paths = [
                require_file(directory / f"{names[role]}.{lang}", f"the {role} split for data.dir")
                for lang in (cfg.src_lang, cfg.tgt_lang)
            ]
        else:
            listed = getattr(cfg, role)
            if not listed:
                continue
            paths = [require_file(p, f"a file for data.{role}") for p in listed]
        result[role] = _file_source(role, cfg, paths)
    return result


def _file_source(role: str, cfg: DataConfig, paths: list[Path]) -> SplitSource:
    pairs: Callable[[], Iterator[Pair]]
    if cfg.format in ("dir", "files"):
        pairs = functools.partial(iter_file_pair, paths[0], paths[1])
    elif cfg.format == "tsv":
        pairs = functools.partial(iter_tsv, paths[0])
    else:
        pairs = functools.partial(iter_jsonl, paths[0], cfg.src_lang, cfg.tgt_lang)
    digest = hashlib.sha256(cfg.format.encode())
    for path in paths:
        digest.update(file_digest(path).encode())
    description = " + ".join(str(p) for p in paths)
    size = sum(p.stat().st_size for p in paths)
    return SplitSource(role, description, digest.hexdigest(), pairs, size, "bytes")


def _hf_sources(cfg: DataConfig, names: dict[str, str | None]) -> dict[str, SplitSource]:
    """Splits of a Hugging Face dataset: a ``save_to_disk`` folder, a local dataset, or a hub id."""
    assert cfg.name is not None
    loaded = _load_hf(cfg.name, cfg.hf_config)
    result: dict[str, SplitSource] = {}
    for role in ROLES:
        split = names[role]
        if split is None:
            continue
        if split not in loaded:
            raise DataError(
                f"dataset {cfg.name} has no split '{split}' (data.{role}_split); "
                f"available: {', '.join(loaded.keys())}"
            )
        ds = loaded[split]
        fingerprint = hashlib.sha256(f"{cfg.name}|{split}|{ds._fingerprint}".encode()).hexdigest()
        result[role] = SplitSource(
            role,
            f"{cfg.name}[{split}]",
            fingerprint,
            functools.partial(_hf_pairs, ds, cfg, split),
            len(ds),
            "pairs",
        )
    return result


def _load_hf(name: str, config: str | None) -> Any:
    import datasets  # imported here: it is slow to import, and only this format needs it

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    path = Path(name).expanduser()
    try:
        if path.is_dir() and (
            (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
        ):
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(name, config)
    except MtkitError:
        raise
    except Exception as error:  # the datasets library raises many unrelated types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"could not load dataset {name!r} (data.name): {reason}") from None
    if isinstance(loaded, datasets.Dataset):
        raise DataError(
            f"dataset {name!r} (data.name) is a single split; save a DatasetDict "
            "with train/validation splits"
        )
    return loaded


def _hf_pairs(ds: Any, cfg: DataConfig, split: str) -> Iterator[Pair]:
    """Pairs of a dataset with a ``translation`` column (or one column per language)."""
    columns = ds.column_names
    src_lang, tgt_lang = cfg.src_lang, cfg.tgt_lang
    if "translation" in columns:
        langs = ds.features["translation"]
        known = getattr(langs, "languages", None) or list(getattr(langs, "keys", lambda: [])())
        if known and (src_lang not in known or tgt_lang not in known):
            raise DataError(
                f"dataset {cfg.name}[{split}]: translation column has languages "
                f"{', '.join(known)}; data.src_lang={src_lang}, data.tgt_lang={tgt_lang}"
            )
        for batch in ds.iter(batch_size=HF_BATCH):
            for row in batch["translation"]:
                yield (row.get(src_lang) or "").strip(), (row.get(tgt_lang) or "").strip()
    elif src_lang in columns and tgt_lang in columns:
        for batch in ds.select_columns([src_lang, tgt_lang]).iter(batch_size=HF_BATCH):
            for s, t in zip(batch[src_lang], batch[tgt_lang], strict=True):
                yield (s or "").strip(), (t or "").strip()
    else:
        raise DataError(
            f"dataset {cfg.name}[{split}] has columns {', '.join(columns)}; expected "
            f"'translation' or '{src_lang}' and '{tgt_lang}'"
        )
