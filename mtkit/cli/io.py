"""What the translate and evaluate commands share at their edges: output, folders, signals.

- :class:`Output` writes a command's lines to stdout, to a device or pipe as it is, or to
  a regular file atomically: the file is opened (as a temp file beside it) before any
  work, so an unwritable ``-o`` is found at once, and it replaces the old file only once
  complete, so a full disk, an error or a signal never leaves half a file.
- :func:`exit_on_signals` makes SIGINT and SIGTERM stop the command at once, wherever it
  is, with one line on stderr and exit status 128 + the signal (130, 143). These commands
  have nothing to save, so unlike training they do not finish the current batch first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import TextIO

from mtkit.errors import DataError
from mtkit.runtime import new_file_mode
from mtkit.training.signals import Aborted

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


class Output:
    """Lines out: stdout (``path`` None), a device or pipe, or a regular file via a temp file.

    Use as a context manager: :meth:`write` the lines, then :meth:`commit`; leaving the
    block without committing (an error, a signal) removes the temp file and leaves an
    existing file as it was. Every failure is a one-line :class:`DataError`. ``flag``
    names the option that gives the path, for the messages.
    """

    def __init__(self, path: str | None, flag: str = "") -> None:
        self.name = "stdout" if path is None else path
        self.temp: Path | None = None  # set while a regular file is being written
        self.target: Path | None = None
        if path is None:
            if sys.stdout is None:
                advice = f"; give an output file with {flag}" if flag else ""
                raise DataError(f"cannot write: stdout is closed{advice}")
            self.stream: TextIO = sys.stdout
        else:
            self.stream = self._open(Path(path).expanduser(), flag)

    def _open(self, path: Path, flag: str) -> TextIO:
        if path.is_dir():
            raise DataError(f"{path}: is a directory ({flag} needs a file name)")
        try:
            if path.exists() and not path.is_file():  # /dev/stdout, /dev/full, a named pipe
                return open(path, "w", encoding="utf-8", newline="\n")
            self.target = path.resolve()  # a symbolic link keeps pointing at the new file
            handle, temp = tempfile.mkstemp(
                prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent
            )
        except OSError as error:
            raise DataError(f"{path}: cannot write ({_reason(error)})") from None
        self.temp = Path(temp)
        return os.fdopen(handle, "w", encoding="utf-8", newline="\n")

    def write(self, lines: Iterable[str]) -> None:
        """Write each line and a ``\\n``, and flush (to the disk, for a regular file)."""
        try:
            for line in lines:
                self.stream.write(line + "\n")
            self.stream.flush()
            if self.temp is not None:
                os.fsync(self.stream.fileno())
        except OSError as error:
            self._fail(error)
        except UnicodeEncodeError as error:  # e.g. PYTHONIOENCODING=ascii
            raise DataError(
                f"cannot write to {self.name}: its encoding {error.encoding} cannot hold the "
                "text; set PYTHONIOENCODING=utf-8"
            ) from None

    def commit(self) -> None:
        """Put a regular file in place (with the old file's permissions, or the umask's)."""
        if self.temp is None or self.target is None:
            return
        try:
            mode = self.target.stat().st_mode & 0o7777 if self.target.exists() else new_file_mode()
            self.stream.close()
            os.chmod(self.temp, mode)
            os.replace(self.temp, self.target)
        except OSError as error:
            self._fail(error)
        self.temp = None

    def _fail(self, error: OSError) -> None:
        if self.stream is sys.stdout:
            silence_stdout()  # the interpreter's last flush would fail again, loudly
            if isinstance(error, BrokenPipeError):  # e.g. piped into `head`: not an error
                raise SystemExit(0) from None
            raise DataError(f"cannot write to stdout ({_reason(error)})") from None
        raise DataError(f"{self.name}: cannot write ({_reason(error)})") from None

    def __enter__(self) -> Output:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self.stream is not sys.stdout:
            with contextlib.suppress(OSError):  # unflushed lines of a failed write
                self.stream.close()
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing more is written after a failed write."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def prepare_folder(folder: str, flag: str) -> Path:
    """Create ``folder`` (and its parents) now and check that a file can be written in it."""
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: exists and is not a folder ({flag})")
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise DataError(f"{path}: cannot create the {flag} folder ({_reason(error)})") from None
    return path


@contextlib.contextmanager
def exit_on_signals(prog: str) -> Iterator[None]:
    """SIGINT/SIGTERM inside the block: clean up (``finally`` blocks run), say so, exit 128+N.

    Meant for a command's ``main``: after a signal the process ends here.

    The handler raises in the main thread between two Python operations, so a command
    stops within one model step, not after a whole batch. Further signals are ignored
    while the command cleans up and exits.
    """

    def stop(number: int, _frame: FrameType | None) -> None:
        for each in _SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise Aborted(number)

    previous = {each: signal.signal(each, stop) for each in _SIGNALS}
    try:
        yield
    except Aborted as stopped:
        if sys.stderr is not None:
            print(f"{prog}: stopped by {signal.Signals(stopped.number).name}", file=sys.stderr)
            sys.stderr.flush()
        # Everything the block had to undo is undone (its ``finally`` blocks ran); skip the
        # interpreter's teardown, which takes up to a second on a busy machine with torch.
        os._exit(128 + stopped.number)
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)
