"""Parallel corpora: from files or Hugging Face datasets to cached, memory-mapped subword ids.

The pipeline for each split is: read and validate text pairs -> Arrow dataset ->
drop empty pairs (counted) -> train sentencepiece on the training split -> encode with
the batch API (source reversed before EOS if asked) -> drop over-long training pairs
(counted) -> save under a cache key made from the data's content and the tokenizer
settings. A second run with the same key only memory-maps the saved Arrow files.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from mtkit.config import DataConfig, TokenizerConfig
from mtkit.errors import DataError, MtkitError
from mtkit.readers import Pair, iter_file_pair, iter_jsonl, iter_tsv, require_file
from mtkit.tokenizer import SubwordModel, TextCodec, train_subword_model

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
ROLES = ("train", "valid", "test")

datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()


def default_cache_dir() -> Path:
    env = os.environ.get("MTKIT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mtkit"


@dataclass
class SplitSource:
    """How to read one split, and a fingerprint of its content for the cache key."""

    role: str
    description: str
    fingerprint: str
    read: Callable[[], datasets.Dataset]


class CorpusSplit:
    """One tokenized split: a memory-mapped Arrow dataset plus zero-copy numpy id views."""

    def __init__(self, role: str, dataset: datasets.Dataset) -> None:
        self.role = role
        self.dataset = dataset
        self.src_offsets, self.src_values = _flat_ids(dataset, "src_ids")
        self.tgt_offsets, self.tgt_values = _flat_ids(dataset, "tgt_ids")

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    @property
    def src_lengths(self) -> np.ndarray:
        """Source lengths including EOS."""
        return np.diff(self.src_offsets)

    @property
    def tgt_lengths(self) -> np.ndarray:
        """Target lengths including EOS (the number of predicted tokens)."""
        return np.diff(self.tgt_offsets) + 1

    def source(self, index: int) -> np.ndarray:
        return self.src_values[self.src_offsets[index] : self.src_offsets[index + 1]]

    def target(self, index: int) -> np.ndarray:
        """Target pieces without BOS/EOS."""
        return self.tgt_values[self.tgt_offsets[index] : self.tgt_offsets[index + 1]]

    def texts(self, column: str) -> list[str]:
        """The raw text of ``column`` ('src' or 'tgt'); kept for validation and test splits."""
        if column not in self.dataset.column_names:
            raise KeyError(f"split {self.role} keeps no text column {column!r}")
        return list(self.dataset[column])


def _flat_ids(dataset: datasets.Dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and values of a list<int32> column, without copying the values."""
    array = dataset.data.table.column(column).combine_chunks()
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.to_numpy(zero_copy_only=True)
    return offsets, values


@dataclass
class Corpus:
    codec: TextCodec
    splits: dict[str, CorpusSplit]
    stats: dict[str, Any]


def load_corpus(cfg: DataConfig, tok_cfg: TokenizerConfig, cache_dir: Path | None = None) -> Corpus:
    """Read, validate, tokenize and cache a corpus; reuse the cache when nothing changed."""
    sources = split_sources(cfg)
    key = _cache_key(cfg, tok_cfg, sources)
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else (cache_dir or default_cache_dir())
    target = root / key
    if not (target / "meta.json").is_file():
        log.info("preparing corpus (cache key %s)", key[:12])
        _build(cfg, tok_cfg, sources, root, target)
    else:
        log.info("corpus found in cache %s", target)
    return _load_built(target)


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
    if cfg.format in ("dir", "files"):
        src_path, tgt_path = paths

        def pairs() -> Iterator[Pair]:
            return iter_file_pair(src_path, tgt_path)
    elif cfg.format == "tsv":

        def pairs() -> Iterator[Pair]:
            return iter_tsv(paths[0])
    else:

        def pairs() -> Iterator[Pair]:
            return iter_jsonl(paths[0], cfg.src_lang, cfg.tgt_lang)

    digest = hashlib.sha256(cfg.format.encode())
    for path in paths:
        digest.update(_file_digest(path).encode())
    description = " + ".join(str(p) for p in paths)
    return SplitSource(role, description, digest.hexdigest(), lambda: _pairs_to_dataset(pairs))


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pairs_to_dataset(pairs: Callable[[], Iterator[Pair]], chunk: int = 50_000) -> datasets.Dataset:
    """Stream pairs into an Arrow dataset in chunks (memory stays bounded)."""
    parts: list[datasets.Dataset] = []
    src: list[str] = []
    tgt: list[str] = []
    for s, t in pairs():
        src.append(s)
        tgt.append(t)
        if len(src) == chunk:
            parts.append(datasets.Dataset.from_dict({"src": src, "tgt": tgt}))
            src, tgt = [], []
    if src or not parts:
        parts.append(datasets.Dataset.from_dict({"src": src, "tgt": tgt}, features=_TEXT))
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


_TEXT = datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string")})


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
        )
    return result


def _load_hf(name: str, config: str | None) -> datasets.DatasetDict:
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
    return loaded  # type: ignore[return-value]


def _hf_pairs(ds: datasets.Dataset, cfg: DataConfig, split: str) -> datasets.Dataset:
    """Map a dataset with a ``translation`` column (or one column per language) to src/tgt."""
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

        def extract(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
            rows = batch["translation"]
            return {
                "src": [(r.get(src_lang) or "").strip() for r in rows],
                "tgt": [(r.get(tgt_lang) or "").strip() for r in rows],
            }
    elif src_lang in columns and tgt_lang in columns:

        def extract(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
            return {
                "src": [(s or "").strip() for s in batch[src_lang]],
                "tgt": [(t or "").strip() for t in batch[tgt_lang]],
            }
    else:
        raise DataError(
            f"dataset {cfg.name}[{split}] has columns {', '.join(columns)}; expected "
            f"'translation' or '{src_lang}' and '{tgt_lang}'"
        )
    return ds.map(
        extract,
        batched=True,
        batch_size=10_000,
        remove_columns=columns,
        keep_in_memory=True,
        features=_TEXT,
        new_fingerprint=f"pairs-{split}",
    )


def _cache_key(cfg: DataConfig, tok_cfg: TokenizerConfig, sources: dict[str, SplitSource]) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "splits": {role: s.fingerprint for role, s in sources.items()},
        "tokenizer": asdict(tok_cfg),
        "languages": [cfg.src_lang, cfg.tgt_lang, cfg.hf_config],
        "reverse_source": cfg.reverse_source,
        "max_len": cfg.max_len,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _build(
    cfg: DataConfig,
    tok_cfg: TokenizerConfig,
    sources: dict[str, SplitSource],
    root: Path,
    target: Path,
) -> None:
    """Read, clean, tokenize and save every split; write ``meta.json`` last (the done marker)."""
    if "train" not in sources or "valid" not in sources:
        raise DataError(
            "a corpus needs a training and a validation split (data.train_split / data.valid_split)"
        )
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="building-", dir=root))
    try:
        stats: dict[str, Any] = {"sources": {r: s.description for r, s in sources.items()}}
        texts = {role: _clean(role, source, stats) for role, source in sources.items()}
        codec = _train_codec(texts["train"], cfg, tok_cfg)
        codec_files = {"src.model": codec.src.model_bytes}
        if not codec.joint:
            codec_files["tgt.model"] = codec.tgt.model_bytes
        for name, blob in codec_files.items():
            (work / name).write_bytes(blob)
        for role, ds in texts.items():
            encoded = _encode(ds, codec, keep_text=role != "train")
            if role == "train":
                encoded = _drop_long(encoded, cfg.max_len, stats)
            encoded.save_to_disk(str(work / role))
            stats[f"{role}_pairs"] = len(encoded)
        stats["reverse_source"] = cfg.reverse_source
        stats["src_vocab"] = codec.src.vocab_size
        stats["tgt_vocab"] = codec.tgt.vocab_size
        (work / "meta.json").write_text(json.dumps(stats, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _clean(role: str, source: SplitSource, stats: dict[str, Any]) -> datasets.Dataset:
    """Read a split and drop pairs with an empty side (counted; alignment is kept)."""
    ds = source.read()
    total = len(ds)
    ds = ds.filter(
        lambda b: [bool(s) and bool(t) for s, t in zip(b["src"], b["tgt"], strict=True)],
        batched=True,
        batch_size=10_000,
        keep_in_memory=True,
        new_fingerprint=f"nonempty-{role}",
    )
    dropped = total - len(ds)
    stats[f"{role}_empty_dropped"] = dropped
    if dropped:
        log.warning(
            "%s: dropped %d of %d pairs with an empty side", source.description, dropped, total
        )
    if len(ds) == 0:
        raise DataError(f"{source.description}: the {role} split has no usable sentence pairs")
    return ds.flatten_indices(keep_in_memory=True)


def _train_codec(train: datasets.Dataset, cfg: DataConfig, tok_cfg: TokenizerConfig) -> TextCodec:
    def sentences(columns: tuple[str, ...]) -> Iterator[str]:
        for batch in train.iter(batch_size=10_000):
            for column in columns:
                yield from batch[column]

    if tok_cfg.joint:
        src = tgt = SubwordModel(train_subword_model(sentences(("src", "tgt")), tok_cfg))
    else:
        src = SubwordModel(train_subword_model(sentences(("src",)), tok_cfg))
        tgt = SubwordModel(train_subword_model(sentences(("tgt",)), tok_cfg))
    log.info(
        "sentencepiece %s: source vocabulary %d, target vocabulary %d%s",
        tok_cfg.type,
        src.vocab_size,
        tgt.vocab_size,
        " (joint)" if tok_cfg.joint else "",
    )
    return TextCodec(src, tgt, cfg.reverse_source)


_IDS = datasets.Sequence(datasets.Value("int32"))


def _encode(ds: datasets.Dataset, codec: TextCodec, keep_text: bool) -> datasets.Dataset:
    def encode(batch: dict[str, list[str]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            "src_ids": codec.encode_source(batch["src"]),
            "tgt_ids": codec.encode_target(batch["tgt"]),
        }
        if keep_text:
            out["src"], out["tgt"] = batch["src"], batch["tgt"]
        return out

    features = datasets.Features({"src_ids": _IDS, "tgt_ids": _IDS, **(_TEXT if keep_text else {})})
    return ds.map(
        encode,
        batched=True,
        batch_size=10_000,
        remove_columns=ds.column_names,
        features=features,
        keep_in_memory=True,
        new_fingerprint="encoded",
    )


def _drop_long(ds: datasets.Dataset, max_len: int, stats: dict[str, Any]) -> datasets.Dataset:
    """Drop training pairs with more than ``max_len`` subwords on either side (counted)."""

    def short(batch: dict[str, list[list[int]]]) -> list[bool]:
        # src_ids carries EOS; tgt_ids does not.
        return [
            len(s) - 1 <= max_len and len(t) <= max_len
            for s, t in zip(batch["src_ids"], batch["tgt_ids"], strict=True)
        ]

    total = len(ds)
    ds = ds.filter(
        short, batched=True, batch_size=10_000, keep_in_memory=True, new_fingerprint="short"
    )
    stats["train_long_dropped"] = total - len(ds)
    if total - len(ds):
        log.info(
            "dropped %d of %d training pairs longer than data.max_len=%d subwords",
            total - len(ds),
            total,
            max_len,
        )
    if len(ds) == 0:
        raise DataError(f"no training pair is within data.max_len={max_len} subwords")
    return ds.flatten_indices(keep_in_memory=True)


def _load_built(target: Path) -> Corpus:
    stats = json.loads((target / "meta.json").read_text())
    src = SubwordModel((target / "src.model").read_bytes())
    tgt_file = target / "tgt.model"
    tgt = SubwordModel(tgt_file.read_bytes()) if tgt_file.is_file() else src
    codec = TextCodec(src, tgt, bool(stats["reverse_source"]))
    splits = {}
    for role in ROLES:
        if (target / role).is_dir():
            with contextlib.suppress(FileNotFoundError):
                splits[role] = CorpusSplit(role, datasets.load_from_disk(str(target / role)))
    for key in (
        "train_empty_dropped",
        "valid_empty_dropped",
        "test_empty_dropped",
        "train_long_dropped",
    ):
        if stats.get(key):
            log.info("%s: %d", key.replace("_", " "), stats[key])
    return Corpus(codec, splits, stats)
