"""Paths: where the shipped ``conf/`` and ``data/`` folders are, and where a file may be written.

**Output files.** Every file mtkit writes under a name the user chose (a checkpoint, a
report, translations, a run's files) is a *regular* file: an existing one, replaced as a
whole, or a new name. :func:`output_target` refuses, in one line naming the option,
a name that is a folder, a device, a named pipe or a socket (a symbolic link counts as
what it points at): replacing such a node by a renamed temp file would destroy it
(``-o /dev/full`` run as root replaced the device). :func:`write_atomically` writes
through a temp file beside the target, synced, then renamed over it, so a reader never
sees half a file and a failure leaves the old file as it was; just before the rename
it checks the name again (:func:`replace_with`), so a node that appeared meanwhile is
not replaced either. Commands reach these through :mod:`mtkit.cli.io`.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mtkit.errors import DataError
from mtkit.runtime import at_stop, forget_stop, new_file_mode

PACKAGE_DIR = Path(__file__).resolve().parent.parent
PROJECT_ROOT = PACKAGE_DIR.parent


def project_dir(name: str) -> Path:
    """The top-level ``conf``/``data`` folder: the copy a wheel ships inside the package
    (``mtkit/_conf``, ``mtkit/_data``), else the checkout's own (editable installs)."""
    shipped = PACKAGE_DIR / f"_{name}"
    return shipped if shipped.is_dir() else PROJECT_ROOT / name


CONF_DIR = project_dir("conf")
DATA_DIR = project_dir("data")

# What a node that is no regular file is, for the messages.
_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def node_kind(path: Path, follow: bool = True) -> str | None:
    """What ``path`` is when it exists and is not a regular file (``a character device``),
    else None (a regular file, or no such name). ``follow``: a symbolic link counts as
    what it points at (a dangling one as a new name); else a link is a plain name."""
    try:
        mode = path.stat().st_mode if follow else path.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise DataError(f"{path}: cannot check it ({error.strerror or error})") from None
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def where(path: Path | str, flag: str) -> str:
    """``-o PATH`` for messages, or just the path when no option names it."""
    return f"{flag} {path}" if flag else str(path)


def output_target(path: str | Path, flag: str = "") -> Path:
    """The regular file that writing ``path`` (the value of option ``flag``) replaces or
    creates: the path itself, or the file a symbolic link points at, so that the link
    stays. Anything but a regular file or a new name is a one-line DataError."""
    given = Path(path).expanduser()
    kind = node_kind(given)
    if kind is not None:
        raise DataError(f"{where(given, flag)}: is {kind}, not a regular file; give a file name")
    return given.resolve()


def open_temp(target: Path, flag: str = "", make_folder: bool = True) -> tuple[BinaryIO, Path]:
    """A new temp file beside ``target``, open for writing; ``make_folder``: create the
    folder (and its parents) when it does not exist."""
    try:
        if make_folder and not target.parent.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise DataError(
            f"{where(target, flag)}: cannot write ({error.strerror or error})"
        ) from None
    return os.fdopen(handle, "wb"), Path(name)


def replace_with(temp: Path, target: Path, flag: str = "") -> None:
    """Rename the complete ``temp`` over ``target``, with the old file's permissions (or the
    umask's), unless ``target`` has become a node that is no regular file.

    Raises DataError (the caller removes ``temp``) or OSError.
    """
    kind = node_kind(target, follow=False)
    if kind is not None:
        raise DataError(f"{where(target, flag)}: is {kind} now, not a regular file; not replaced")
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mode = new_file_mode()
    os.chmod(temp, mode)
    os.replace(temp, target)


def write_atomically(target: Path, write: Callable[[BinaryIO], object], flag: str = "") -> None:
    """Write ``target`` (from :func:`output_target`) with ``write(stream)``: a temp file,
    synced, then renamed over it. Any failure is a one-line DataError naming the file and
    leaves the old file as it was; the temp file never outlives the call."""
    stream, temp = open_temp(target, flag)
    on_stop = at_stop(temp.unlink)
    try:
        with stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        replace_with(temp, target, flag)
    except OSError as error:
        kept = "; the previous file is kept" if target.exists() else ""
        raise DataError(
            f"{where(target, flag)}: cannot write ({error.strerror or error}){kept}"
        ) from None
    finally:
        temp.unlink(missing_ok=True)
        forget_stop(on_stop)
