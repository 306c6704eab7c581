"""Content fingerprints of corpus files for the cache key, remembered for big files.

Every run fingerprints its corpus for the cache key, which for a 10 GB corpus means
seconds of hashing per process. So the SHA-256 of a file of at least
:data:`MEMO_MIN_BYTES` is remembered in :data:`MEMO_FILE`, under the default cache
folder, by its path, size, inode and modification and change times (the change time
moves on any write, and cannot be set back). Like git's index, a file changed in the
last :data:`RACY_S` seconds is not remembered, so a rewrite within the timestamps'
granularity is not missed.

The default cache folder is defined here, below both :mod:`mtkit.corpus.sources` (which
fingerprints files) and :mod:`mtkit.corpus.cache` (which keeps its entries there).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

MEMO_FILE = "fingerprints.json"
MEMO_MIN_BYTES = 64 << 20
MEMO_ENTRIES = 1000
RACY_S = 2.0


def default_cache_dir() -> Path:
    """``$MTKIT_CACHE_DIR``, else ``~/.cache/mtkit``: corpus cache entries and the memo."""
    env = os.environ.get("MTKIT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mtkit"


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of a file; of a big one, remembered while the file stays unchanged."""
    stat = path.stat()
    if stat.st_size < MEMO_MIN_BYTES:
        return sha256_file(path)
    key = str(path.resolve())
    signature = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
    memo = _read_memo()
    known = memo.get(key)
    if isinstance(known, dict) and known.get("stat") == signature:
        return str(known["sha256"])
    digest = sha256_file(path)
    if time.time() - stat.st_ctime > RACY_S:
        memo.pop(key, None)
        memo[key] = {"stat": signature, "sha256": digest}
        _write_memo(dict(list(memo.items())[-MEMO_ENTRIES:]))
    return digest


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _memo_path() -> Path:
    return default_cache_dir() / MEMO_FILE


def _read_memo() -> dict[str, Any]:
    try:
        memo = json.loads(_memo_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_memo(memo: dict[str, Any]) -> None:
    """Replace the memo atomically; a memo that cannot be written is simply not kept."""
    path = _memo_path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{MEMO_FILE}.", dir=path.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(memo, stream)
        os.replace(temp, path)
