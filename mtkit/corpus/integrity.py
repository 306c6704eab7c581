"""Noticing a damaged cache entry, and removing the half-built ones of killed runs.

At build time ``meta.json`` records every file of the entry with its size and a
SHA-256: of all its bytes for files up to :data:`SMALL_FILE` (the sentencepiece models,
small splits), of its first and last MiB for bigger ones. Checking an entry on load
is then cheap at any corpus size (a 10M-pair cache is checked by reading a few MiB),
and catches what actually happens to caches: a truncated or missing file (a full disk,
an interrupted copy), a file replaced by another, a ``meta.json`` cut short. A flipped
byte in the middle of a big array is not caught; that would need reading it all.

A build works in a ``building-*`` folder holding ``owner.json`` (host, process id and
start time, pid namespace). A folder whose owner is a process of this machine that no
longer runs was left by a killed run and is removed. Folders of other machines (a
cache on a shared filesystem) are left alone: their owners cannot be checked from here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("mtkit.corpus")

SMALL_FILE = 2 << 20  # bytes: files up to this size are checksummed whole
ENDS = 1 << 20  # bytes checksummed at each end of a bigger file
OWNER_FILE = "owner.json"
BUILDING = "building-"
_NO_OWNER_GRACE_S = 60.0  # a folder without owner.json younger than this may be starting up


def file_record(path: Path) -> dict[str, Any]:
    """``{"size": ..., "sha256": ...}`` (whole file) or ``{"size": ..., "sha256_ends": ...}``."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= SMALL_FILE:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            return {"size": size, "sha256": digest.hexdigest()}
        digest.update(handle.read(ENDS))
        handle.seek(size - ENDS)
        digest.update(handle.read(ENDS))
    return {"size": size, "sha256_ends": digest.hexdigest()}


def record_files(folder: Path, skip: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The record of every file under ``folder`` (paths relative to it), except ``skip``."""
    return {
        path.relative_to(folder).as_posix(): file_record(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in skip
    }


def check_files(folder: Path, records: dict[str, Any]) -> str:
    """What is wrong with the recorded files of ``folder``, or '' when nothing is."""
    for name, record in records.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if not isinstance(record, dict) or "size" not in record:
            return "meta.json is incomplete"
        size = path.stat().st_size
        if size != record["size"]:
            return f"{name} is truncated" if size < record["size"] else f"{name} has a wrong size"
        if file_record(path) != record:
            return f"{name} does not match its checksum"
    return ""


# -- building folders ----------------------------------------------------------------------------


def new_build_folder(root: Path) -> Path:
    """A fresh ``building-*`` folder under ``root``, marked as this process's."""
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=BUILDING, dir=root))
    (folder / OWNER_FILE).write_text(json.dumps(_this_process()))
    return folder


def remove_stale_builds(root: Path) -> int:
    """Remove the ``building-*`` folders of runs that were killed; returns how many."""
    try:
        candidates = sorted(root.glob(BUILDING + "*")) if root.is_dir() else []
    except OSError:  # an unreadable cache folder: building there will say so
        return 0
    removed = 0
    for folder in candidates:
        if folder.is_dir() and _is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        log.info("%s: removed %d unfinished corpus build(s) left by killed runs", root, removed)
    return removed


def _this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid_ns": _pid_namespace(),
        "pid": pid,
        "started": _start_time(pid),
    }


def _is_stale(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        # killed before it wrote its owner record (or not a build of ours)
        return time.time() - folder.stat().st_mtime > _NO_OWNER_GRACE_S
    me = _this_process()
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return True
    if owner.get("host") != me["host"] or owner.get("pid_ns") != me["pid_ns"]:
        return False  # another machine's (or container's) build: cannot tell from here
    return not _alive(owner["pid"], owner.get("started"))


def _alive(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``started`` (pid reuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    now = _start_time(pid)
    return started is None or now is None or now == started


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before ')' may hold spaces


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
