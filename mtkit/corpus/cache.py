"""The corpus cache: one folder per cache key, checked on load, rebuilt when damaged.

The key is a hash of the data's content and of every setting that changes the
prepared ids (the tokenizer section, the languages, ``data.reverse_source`` and
``data.max_len``). A complete entry holds the sentencepiece model(s), one folder per
split (:mod:`mtkit.corpus.layout`) and ``meta.json``, written last, with the stats and
the record that :mod:`mtkit.corpus.integrity` checks. A build happens in a
``building-*`` folder that is renamed into place when complete, so a killed build
never leaves a half entry under a key; a command stopped by a signal removes it at once
(:func:`mtkit.runtime.at_stop`), one killed outright leaves it to the next build.

Under ``torchrun``, rank 0 prepares the entry; the other ranks only open it
(``build=False``), and a rank that cannot see a complete entry stops with one line
naming the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtkit.config import DataConfig, TokenizerConfig
from mtkit.corpus.fingerprint import default_cache_dir, sha256_file
from mtkit.corpus.integrity import (
    OWNER_FILE,
    check_files,
    new_build_folder,
    record_files,
    remove_stale_builds,
)
from mtkit.corpus.layout import CorpusSplit
from mtkit.corpus.prepare import prepare
from mtkit.corpus.sources import ROLES, SplitSource, split_sources
from mtkit.corpus.tokenizer import SubwordModel, TextCodec
from mtkit.errors import DataError
from mtkit.runtime import at_stop, forget_stop

log = logging.getLogger("mtkit.corpus")

CACHE_FORMAT = 1  # part of the key
LAYOUT = 2  # how an entry's files lie (meta.json "layout"); an entry of another layout is rebuilt
META_FILE = "meta.json"
_MISSING = "missing"


@dataclass
class Corpus:
    """A prepared corpus: its codec, its splits, the stats of its preparation.

    ``folder`` is its cache entry; ``built`` says whether this call prepared it.
    """

    codec: TextCodec
    splits: dict[str, CorpusSplit]
    stats: dict[str, Any]
    folder: Path | None = None
    built: bool = field(default=False, compare=False)


def cache_folder(
    cfg: DataConfig,
    tok_cfg: TokenizerConfig,
    cache_dir: Path | None = None,
    sources: dict[str, SplitSource] | None = None,
) -> Path:
    """The cache entry of this data and tokenizer (reads the data to fingerprint it)."""
    sources = split_sources(cfg) if sources is None else sources
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else (cache_dir or default_cache_dir())
    return root / cache_key(cfg, tok_cfg, sources)


def cache_key(cfg: DataConfig, tok_cfg: TokenizerConfig, sources: dict[str, SplitSource]) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "splits": {role: s.fingerprint for role, s in sources.items()},
        "tokenizer": _tokenizer_key(tok_cfg),
        "languages": [cfg.src_lang, cfg.tgt_lang, cfg.hf_config],
        "reverse_source": cfg.reverse_source,
        "max_len": cfg.max_len,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _tokenizer_key(tok_cfg: TokenizerConfig) -> dict[str, Any]:
    """The tokenizer settings, with a given model file stood for by its content's digest
    (the same model under another path shares the cache entry; a changed file does not)."""
    given = ("model", "src_model", "tgt_model")
    # without given models, the key is what it was before these settings existed
    settings = {k: v for k, v in asdict(tok_cfg).items() if k not in given or v is not None}
    for key in given:
        if key in settings:
            path = Path(settings[key]).expanduser()
            try:
                settings[key] = sha256_file(path)
            except FileNotFoundError:
                raise DataError(
                    f"tokenizer.{key}={settings[key]}: no such file; expected a sentencepiece "
                    ".model file"
                ) from None
            except OSError as error:
                raise DataError(
                    f"tokenizer.{key}={settings[key]}: cannot read it ({error.strerror or error}); "
                    "expected a sentencepiece .model file"
                ) from None
    return settings


def load_corpus(
    cfg: DataConfig,
    tok_cfg: TokenizerConfig,
    cache_dir: Path | None = None,
    build: bool | None = None,
) -> Corpus:
    """Read, validate, tokenize and cache a corpus; reuse the cache when nothing changed.

    ``build=False`` only opens the cache entry, and raises a one-line DataError naming
    it when it is missing or damaged. The default builds unless this process is a
    ``torchrun`` rank other than 0 (rank 0 prepares the cache for everyone).
    """
    sources = split_sources(cfg)
    target = cache_folder(cfg, tok_cfg, cache_dir, sources)
    may_build = int(os.environ.get("RANK", "0")) == 0 if build is None else build
    if may_build:
        remove_stale_builds(target.parent)
    corpus, problem = _open(target)
    if corpus is not None:
        log.info("corpus found in cache %s", target)
        return corpus
    if not may_build:
        raise DataError(
            f"{target}: {'no corpus cache there' if problem == _MISSING else problem}; "
            "rank 0 prepares it and every node must see it complete: set data.cache_dir to "
            "a folder all nodes share, or copy the prepared folder to each node"
        )
    if problem == _MISSING:
        log.info("preparing corpus (cache key %s)", target.name[:12])
    else:
        log.warning("corpus cache %s: %s; rebuilding it", target, problem)
    _build_entry(cfg, tok_cfg, sources, target)
    corpus, problem = _open(target)
    if corpus is None:
        raise DataError(f"{target}: the corpus cache just written cannot be read ({problem})")
    corpus.built = True
    return corpus


def _build_entry(
    cfg: DataConfig, tok_cfg: TokenizerConfig, sources: dict[str, SplitSource], target: Path
) -> None:
    """Prepare the entry in a ``building-*`` folder, then rename it into place."""
    if "train" not in sources or "valid" not in sources:
        raise DataError(
            "a corpus needs a training and a validation split (data.train_split / data.valid_split)"
        )
    try:
        work = new_build_folder(target.parent)
    except OSError as error:
        raise DataError(
            f"{target.parent}: cannot write the corpus cache there "
            f"({error.strerror or error}) (data.cache_dir)"
        ) from None
    on_stop = at_stop(lambda: shutil.rmtree(work, ignore_errors=True))  # removed at once
    try:
        stats, seconds = prepare(cfg, tok_cfg, sources, work)
        (work / OWNER_FILE).unlink()
        meta = {
            "layout": LAYOUT,
            "stats": stats,
            "seconds": seconds,
            "files": record_files(work, skip=(META_FILE,)),
        }
        (work / META_FILE).write_text(json.dumps(meta, indent=2))
        _publish(work, target)
        log.info("corpus prepared in %.1f s: %s", seconds["total"], target)
    except OSError as error:
        where = error.filename or target
        raise DataError(
            f"{where}: {error.strerror or error} (while preparing the corpus "
            f"cache {target}; data.cache_dir)"
        ) from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        forget_stop(on_stop)


def _publish(work: Path, target: Path) -> None:
    """Rename ``work`` to ``target``; a complete entry another process put there first stays."""
    if target.exists():
        if _check(target)[0] == "":
            return  # prepared meanwhile by another process: keep it, drop ours
        shutil.rmtree(target)
    try:
        os.replace(work, target)
    except OSError:
        if _check(target)[0] != "":
            raise


def _check(target: Path) -> tuple[str, dict[str, Any]]:
    """('', meta) for a complete, undamaged entry; else (what is wrong, {})."""
    if not target.exists():
        return _MISSING, {}
    try:
        meta = json.loads((target / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "meta.json is missing", {}
    except (OSError, UnicodeDecodeError, ValueError):
        return "meta.json is not valid JSON", {}
    if not isinstance(meta, dict) or meta.get("layout") != LAYOUT:
        return "it was written by another version of mtkit", {}
    if not isinstance(meta.get("stats"), dict) or not isinstance(meta.get("files"), dict):
        return "meta.json is incomplete", {}
    problem = check_files(target, meta["files"])
    return problem, meta if not problem else {}


def _open(target: Path) -> tuple[Corpus | None, str]:
    """The entry's corpus, or (None, what is wrong with it)."""
    problem, meta = _check(target)
    if problem:
        return None, problem
    try:
        return _open_checked(target, meta["stats"]), ""
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f"it cannot be read ({error})"


def _open_checked(target: Path, stats: dict[str, Any]) -> Corpus:
    src = SubwordModel((target / "src.model").read_bytes())
    tgt_file = target / "tgt.model"
    tgt = SubwordModel(tgt_file.read_bytes()) if tgt_file.is_file() else src
    codec = TextCodec(src, tgt, bool(stats["reverse_source"]))
    splits = {}
    for role in ROLES:
        if (target / role).is_dir():
            split = CorpusSplit(role, target / role)
            _check_split(split, int(stats[f"{role}_pairs"]))
            splits[role] = split
    return Corpus(codec, splits, stats, target)


def _check_split(split: CorpusSplit, pairs: int) -> None:
    """The arrays agree with each other and with meta.json (cheap: a few elements each)."""
    for offsets, values, lengths in (
        (split.src_offsets, split.src_values, split.src_lengths),
        (split.tgt_offsets, split.tgt_values, split.tgt_lengths),
    ):
        if len(offsets) != pairs + 1 or len(lengths) != pairs or int(offsets[-1]) != len(values):
            raise ValueError(f"the {split.role} arrays disagree with meta.json")
