"""A helper process of corpus preparation, and the messages it exchanges with its parent.

Corpus encoding (:mod:`mtkit.corpus.worker`) and subword training
(:mod:`mtkit.corpus.subwords`) run in plain ``python -m MODULE`` subprocesses that talk
over their stdin/stdout pipes, not :mod:`multiprocessing` children: they neither fork a
parent that may run threads (torch, gloo) nor re-run the user's main script, as the
``fork`` and ``spawn`` start methods would.

Protocol: each message is a pickle preceded by its length (8 bytes, little-endian):
requests on the helper's stdin, replies on its stdout. A helper ends at the end of its
input. Both sides import this module, so it stays free of torch and datasets.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mtkit.runtime import forget_stop, kill_on_stop


class HelperProcess:
    """One ``python -m MODULE`` helper and its request/reply pipes.

    A stop signal (Ctrl-C, SIGTERM) to this process kills the helper at once; otherwise
    :meth:`stop` closes its input and lets it end by itself.
    """

    def __init__(self, module: str, env: dict[str, str] | None = None) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_environment() if env is None else env,
        )
        self._on_stop = kill_on_stop(self._process.pid)

    def send_message(self, message: object) -> None:
        assert self._process.stdin is not None
        write_message(self._process.stdin, message)

    def next_reply(self) -> Any:
        """The helper's next reply; None once it has exited (see :meth:`exit_status`)."""
        assert self._process.stdout is not None
        return read_message(self._process.stdout)

    def exit_status(self) -> int:
        """The helper's exit status, once it has ended."""
        return self._process.wait()

    def stop(self, at_once: bool = False) -> None:
        """Close its input, so it exits once idle; kill it ``at_once`` or after a second."""
        with contextlib.suppress(OSError):
            assert self._process.stdin is not None
            self._process.stdin.close()
        try:
            self._process.wait(timeout=0 if at_once else 1.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        forget_stop(self._on_stop)


def child_environment() -> dict[str, str]:
    """This process's environment, with this copy of mtkit first on a child's import path."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding mtkit/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def serve_quietly(serve: Callable[[], None]) -> None:
    """A helper process's request loop. When the parent goes away mid-message (it was
    stopped: a broken pipe, a message cut short) the helper ends at once and says
    nothing, since the parent reports the stop itself."""
    try:
        serve()
    except (BrokenPipeError, ConnectionResetError, EOFError, pickle.UnpicklingError):
        os._exit(0)  # skip the final flush of a stdout nobody reads


def write_message(stream: IO[bytes], message: object) -> None:
    """A pickled message, preceded by its length (8 bytes, little-endian)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def read_message(stream: IO[bytes]) -> Any:
    """The next message of ``stream``, or None at its end."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    return pickle.loads(stream.read(int.from_bytes(header, "little")))
