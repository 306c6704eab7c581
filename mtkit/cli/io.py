"""What the commands share at their edges: output files, folders, signals.

Every file a command writes goes through this module, on the primitives of
:mod:`mtkit.config.paths`:

- :class:`Output` writes a command's lines to stdout, into a character device or a
  named pipe as it is (``-o /dev/null``, ``-o /dev/stdout``, a FIFO a reader waits on),
  or to a regular file atomically: the file is opened (as a temp file beside it) before
  any work, so an unwritable ``-o`` is found at once, and it replaces the old file only
  once complete, so a full disk, an error or a signal never leaves half a file.
- :func:`check_output` and :func:`write_file`: a whole file (a checkpoint, a report, a
  plot), checked before the work and written atomically. Only a regular file or a new
  name is accepted: a folder, a device, a named pipe or a socket is a one-line error,
  never replaced.
- :func:`exit_on_signals` makes SIGINT and SIGTERM stop the command at once, wherever it
  is, with one line on stderr and exit status 128 + the signal (130, 143). These commands
  have nothing to save, so unlike training they do not finish the current batch first.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, BinaryIO, NoReturn, TextIO

from mtkit import runtime
from mtkit.config.paths import (
    node_kind,
    open_temp,
    output_target,
    replace_with,
    where,
    write_atomically,
)
from mtkit.errors import DataError
from mtkit.training.signals import Aborted

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


# Nodes that are written into as they are, never replaced: a stream reads what comes.
STREAM_KINDS = ("a character device", "a named pipe")


class Output:
    """Lines out: stdout (``path`` None), a character device or named pipe, or a regular
    file via a temp file.

    Use as a context manager: :meth:`write` the lines, then :meth:`commit`; leaving the
    block without committing (an error, a signal) removes the temp file and leaves an
    existing file as it was. Every failure is a one-line :class:`DataError`. ``flag``
    names the option that gives the path, for the messages. A folder, a block device or
    a socket is refused.
    """

    def __init__(self, path: str | None, flag: str = "") -> None:
        self.name = "stdout" if path is None else path
        self.flag = flag
        self.temp: Path | None = None  # set while a regular file is being written
        self.target: Path | None = None
        self._on_stop: int | None = None  # the temp file is removed at once on a stop signal
        if path is None:
            if sys.stdout is None:
                advice = f"; give an output file with {flag}" if flag else ""
                raise DataError(f"cannot write: stdout is closed{advice}")
            self.stream: TextIO = sys.stdout
        else:
            self.stream = self._open(Path(path).expanduser(), flag)

    def _open(self, path: Path, flag: str) -> TextIO:
        if node_kind(path) in STREAM_KINDS:  # /dev/null, /dev/stdout, a named pipe
            try:
                return open(path, "w", encoding="utf-8", newline="\n")
            except OSError as error:
                raise DataError(f"{where(path, flag)}: cannot write ({_reason(error)})") from None
        self.target = output_target(path, flag)  # a symbolic link keeps pointing at the new file
        stream, self.temp = open_temp(self.target, flag, make_folder=False)
        self._on_stop = runtime.at_stop(self.temp.unlink)
        return io.TextIOWrapper(stream, encoding="utf-8", newline="\n")

    def write(self, lines: Iterable[str]) -> None:
        """Write each line and a ``\\n``, and flush: a reader of stdout or a pipe gets
        them now (a command that writes as it reads calls this once per buffer). A
        regular file goes to the disk once, at :meth:`commit`."""
        try:
            for line in lines:
                self.stream.write(line + "\n")
            self.stream.flush()
        except OSError as error:
            self._fail(error)
        except UnicodeEncodeError as error:  # e.g. PYTHONIOENCODING=ascii
            raise DataError(
                f"cannot write to {self.name}: its encoding {error.encoding} cannot hold the "
                "text; set PYTHONIOENCODING=utf-8"
            ) from None

    def commit(self) -> None:
        """Put a regular file in place, synced to the disk first (with the old file's
        permissions, or the umask's)."""
        if self.temp is None or self.target is None:
            return
        try:
            self.stream.flush()
            os.fsync(self.stream.fileno())  # on the disk before it takes FILE's name
            self.stream.close()
            replace_with(self.temp, self.target, self.flag)
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
        if self._on_stop is not None:
            runtime.forget_stop(self._on_stop)


def check_output(path: str | Path, flag: str) -> Path:
    """The regular file that ``path`` (option ``flag``) names, checked before any work: a
    folder, a device, a named pipe or a socket is a one-line DataError."""
    return output_target(path, flag)


def write_file(target: Path, content: bytes | Callable[[BinaryIO], object], flag: str) -> None:
    """Write ``target`` (from :func:`check_output`) atomically: ``content`` as bytes, or
    what ``content(stream)`` writes. A failure is one line and keeps the old file."""
    write = content if callable(content) else lambda stream: stream.write(content)
    write_atomically(target, write, flag)


def write_text(target: Path, text: str, flag: str) -> None:
    """:func:`write_file` for text (UTF-8, ``\\n`` line ends as given)."""
    write_file(target, text.encode("utf-8"), flag)


def write_checkpoint(target: Path, payload: dict[str, Any], flag: str) -> None:
    """A checkpoint ``payload`` (weights as tensors, the rest plain data, so that it loads
    with ``weights_only=True``) written to ``target`` as :func:`write_file` does."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_file(target, buffer.getvalue(), flag)


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


# After a stop signal, how long the program may take to unwind before it is ended anyway
# (the exception the handler raised can be lost inside a finalizer, which swallows it).
UNWIND_S = 1.0


@contextlib.contextmanager
def exit_on_signals(prog: str, quiet: bool = False) -> Iterator[None]:
    """SIGINT/SIGTERM inside the block: undo, say so, exit 128 + N (130, 143).

    Meant for a command's ``main``: after a signal the process ends here. ``quiet``: say
    nothing (a helper process whose parent speaks for the command).

    The handler first runs the registered stop actions (:func:`mtkit.runtime.at_stop`:
    helper processes killed, temp files and half-built folders removed), then raises in
    the main thread, between two Python operations, so a command stops within one model
    step, not after a whole batch; ``finally`` blocks run on the way out. Further
    signals are ignored. The exception can land in code whose exceptions Python only
    reports ("Exception ignored in ...": a finalizer, a callback after ``fork``): the
    report is replaced by the stop itself, and should the exception be lost some other
    way the process ends after :data:`UNWIND_S` all the same. During an import (torch's
    takes seconds) it is not raised at all, since an extension module being initialised
    would turn it into an ImportError: the process ends at once, its stop actions done.
    """
    ending = threading.Lock()  # the line is printed once, by whoever ends the process

    def end(number: int) -> NoReturn:
        ending.acquire()
        if sys.stderr is not None and not quiet:
            print(f"{prog}: stopped by {signal.Signals(number).name}", file=sys.stderr)
            sys.stderr.flush()
        # Everything the block had to undo is undone; skip the interpreter's teardown,
        # which takes up to a second on a busy machine with torch.
        os._exit(128 + number)

    def stop(number: int, frame: FrameType | None) -> None:
        for each in _SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        runtime.run_stop_actions()
        if _importing(frame):  # an extension module would turn it into an ImportError
            end(number)
        backstop = threading.Timer(UNWIND_S, end, (number,))
        backstop.daemon = True
        backstop.start()
        raise Aborted(number)

    def unraisable(report: Any) -> None:
        if isinstance(report.exc_value, Aborted):
            end(report.exc_value.number)  # raised where it could only be printed
        previous_hook(report)

    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable
    previous = {each: signal.signal(each, stop) for each in _SIGNALS}
    try:
        yield
    except Aborted as stopped:
        runtime.run_stop_actions()  # those registered while unwinding, if any
        end(stopped.number)
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)
        sys.unraisablehook = previous_hook


def _importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside an import (a module's top level, or an extension's)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False
