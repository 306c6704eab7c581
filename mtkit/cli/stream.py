"""Input lines in bounded buffers, for commands that answer as they read (mtkit-translate).

:class:`LineReader` reads a file, a pipe, a terminal or stdin through its file
descriptor and hands out its lines a buffer at a time. :meth:`LineReader.read` waits
for one line (or the end of the input), then takes further lines only while they are
already there, up to the buffer size: a file or a fast pipe fills whole buffers, while a
person typing, or a program that writes one line and waits for its answer, gets that
line translated at once. Memory holds one buffer of lines, whatever the input's length.

The lines are those of :func:`mtkit.corpus.readers.read_lines`: split on ``\\n`` only
(``\\r``, NUL, U+2028 inside a line stay in it), a ``\\r`` before the ``\\n`` dropped, a
UTF-8 byte order mark opening the input dropped, invalid UTF-8 a one-line DataError
naming the file and line unless ``errors="replace"``.
"""

from __future__ import annotations

import codecs
import os
import select
import stat

from mtkit.corpus.readers import require_readable, require_stdin
from mtkit.errors import DataError

CHUNK = 1 << 16  # bytes per read


class LineReader:
    """The lines of ``path`` (stdin when None), a buffer at a time.

    ``what`` names the input's role in errors, ``hint`` is appended to an invalid UTF-8
    error. Use as a context manager: a file it opened is closed on leaving.
    """

    def __init__(self, path: str | None, what: str, errors: str = "strict", hint: str = "") -> None:
        self.errors, self.hint = errors, hint
        self.lines_read = 0  # lines handed out so far (the next line's number - 1)
        self._pending = bytearray()  # bytes read but not yet handed out as lines
        self._ended = False
        self._owned = path is not None
        if path is None:
            self.name = "<stdin>"
            self.fd = require_stdin(what).fileno()
        else:
            file = require_readable(path, what)
            self.name = str(file)
            try:
                self.fd = os.open(file, os.O_RDONLY)
            except OSError as error:
                raise DataError(f"{file}: cannot read ({error.strerror or error})") from None

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            os.close(self.fd)
            self._owned = False

    def read(self, size: int) -> list[str]:
        """Up to ``size`` lines: at least one unless the input has ended (then ``[]``),
        more only as far as they are available without waiting."""
        lines: list[str] = []
        while len(lines) < size:
            taken = self._take(size - len(lines))
            lines += taken
            if len(lines) == size or self._ended:
                break
            if lines and not self._ready():
                break  # answer what came; the rest is not there yet
            self._fill()
        if self._ended and self._pending and len(lines) < size:
            lines.append(self._decode(bytes(self._pending)))  # a last line without \n
            self._pending.clear()
        return lines

    def count_remaining(self) -> int | None:
        """The lines left in a regular file from here on (its end without ``\\n``
        counting as a line), read without moving on; None for a pipe or a terminal."""
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            return None
        offset = os.lseek(self.fd, 0, os.SEEK_CUR)
        count, last = self._pending.count(b"\n"), bytes(self._pending[-1:])
        while chunk := os.pread(self.fd, CHUNK, offset):
            count += chunk.count(b"\n")
            offset += len(chunk)
            last = chunk[-1:]
        return count + (1 if last not in (b"", b"\n") else 0)

    def _take(self, most: int) -> list[str]:
        """Complete lines already read, at most ``most``."""
        lines: list[str] = []
        start = 0
        while len(lines) < most:
            end = self._pending.find(b"\n", start)
            if end < 0:
                break
            lines.append(self._decode(bytes(self._pending[start:end])))
            start = end + 1
        del self._pending[:start]
        return lines

    def _ready(self) -> bool:
        """Whether a read would return at once (always, for a regular file)."""
        readable, _, _ = select.select([self.fd], [], [], 0)
        return bool(readable)

    def _fill(self) -> None:
        """Read what is there (waiting for something if nothing is)."""
        try:
            chunk = os.read(self.fd, CHUNK)
        except OSError as error:  # e.g. stdin redirected from a folder
            raise DataError(f"{self.name}: cannot read ({error.strerror or error})") from None
        if chunk:
            self._pending += chunk
        else:
            self._ended = True

    def _decode(self, raw: bytes) -> str:
        self.lines_read += 1
        if self.lines_read == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8", errors=self.errors)
        except UnicodeDecodeError as error:
            problem = f"invalid UTF-8 ({error.reason} at byte {error.start})"
            raise DataError(f"{self.name}:{self.lines_read}: {problem}{self.hint}") from None
        return text.rstrip("\r\n")
