"""Decoding on several cores: single-threaded helper processes, each searching a share of
every batch.

A decoder step is a few dozen operators on a few hundred rows. Split over two threads,
each operator is cut in two and joined again, and on a 2-core AVX2 CPU the second thread
added only a quarter to a third (``scripts/bench_decode.py``, int8: greedy 385 -> 481
sentences/s, beam 5 105 -> 142). Two single-threaded processes, each searching its own
sentences, share nothing while they search: see README, "Results" for what they reach.

**How a batch is shared.** The :class:`~mtkit.search.translator.Translator` cuts its
length-sorted batches as before. Of each batch of n sentences, process k (0 is the
calling process, 1 .. P-1 the helpers) searches the sentences at positions k, k + P,
k + 2P, ...: neighbours in length order, so every part has nearly the same lengths and
takes about as long. The parts depend on the batch alone, so a given number of
processes always gives the same output; each part is searched as a batch of its own,
so the translations are those of one process wherever search is batch-invariant (it is
in fp32 up to the last bit of a few rows; see README, "int8 decoding").

**The helpers** are ``python -m mtkit.search.pool`` processes, each connected by a
socket pair: they import nothing of the caller's script (so a script needs no
``if __name__ == "__main__"`` guard) and load the same checkpoints themselves, with one
thread, while the calling process loads its own copy. They run in a process group of
their own (the terminal's Ctrl-C reaches only the caller, which stops them), die with
the caller (``PR_SET_PDEATHSIG``, Linux) and stop when its end of the pipe closes.
Their standard output is discarded: a command's stdout holds only its translations.

Messages over the pipe. Parent to child: the :class:`LoadSpec` first, then ``("search",
sources, options, return_attention)`` with ``sources`` a list of source id lists, and
``("close",)``. Child to parent: ``("ready",)`` once its model is loaded, ``("broken",
message)`` when loading fails, then one ``("done", packed)`` or ``("failed", message)``
per search.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NoReturn

from mtkit.config import SearchOptions
from mtkit.errors import ConfigError, MtkitError

if TYPE_CHECKING:  # torch loads in the helpers and in the caller's model code, not here:
    from mtkit.search.hypothesis import Hypothesis  # a command starts its helpers before it
    from mtkit.search.translator import Translator  # imports torch, so both load at once

START_TIMEOUT_S = 300.0  # loading a large ensemble on a slow disk can take a while

# ``--processes auto`` starts helpers only for at least this many sentences: a helper
# takes ~2.5 s to start and load (in parallel with the caller's own loading), and a few
# batches are too few to share.
AUTO_MIN_SENTENCES = 200
PROCESSES_HELP = "auto or an integer >= 1"


def parse_processes(text: str) -> int | str:
    """``--processes`` as given: ``auto`` or an integer >= 1 (else a ConfigError)."""
    if text == "auto":
        return text
    if text.strip().isdigit() and int(text) >= 1:
        return int(text)
    raise ConfigError(f"--processes must be {PROCESSES_HELP}, not {text!r}")


def check_processes(processes: object) -> int:
    """A process count given to the Python API: an integer >= 1 (else a ConfigError)."""
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ConfigError(f"processes={processes!r}; expected an integer >= 1")
    return processes


def resolve_processes(
    requested: int | str, device: str, threads: int | str, cores: int, sentences: int
) -> int:
    """How many processes decode: ``requested``, or for ``auto`` 2 on a CPU with 2 or
    more cores when the threads are ``auto`` and there are AUTO_MIN_SENTENCES sentences
    or more; else 1 (a GPU, one core, pinned threads, a short input)."""
    if requested != "auto":
        return int(requested)
    if device != "cpu" or threads != "auto" or cores < 2 or sentences < AUTO_MIN_SENTENCES:
        return 1
    return 2


@dataclass(frozen=True)
class LoadSpec:
    """What a Translator loads: the command line's (or ``from_checkpoint``'s) model options,
    for the caller and, on the CPU, for each helper."""

    checkpoints: tuple[str, ...]
    weights: tuple[float, ...] | None
    precision: str
    shortlist: bool
    device: str = "cpu"

    def load(self) -> Translator:
        """The Translator these options give (one checkpoint, or an ensemble of several),
        without helpers of its own."""
        from mtkit.search.translator import Translator

        if len(self.checkpoints) == 1 and self.weights is None:
            return Translator.from_checkpoint(
                self.checkpoints[0], self.device, self.precision, self.shortlist
            )
        return Translator.from_checkpoints(
            self.checkpoints, self.weights, self.device, self.precision
        )


class DecodePool:
    """``helpers`` processes that each search the part of a batch they are sent."""

    def __init__(self, spec: LoadSpec, helpers: int) -> None:
        self._conns: list[Connection] = []
        self._processes: list[subprocess.Popen] = []
        self._busy: list[bool] = []  # helper k was sent a part it has not answered yet
        self._ready = False
        for number in range(helpers):
            conn, process = _start_helper()  # loading starts now, beside the caller's own
            self._conns.append(conn)
            self._processes.append(process)
            self._busy.append(False)
            self._send(number, conn, (spec,))

    @property
    def helpers(self) -> int:
        return len(self._conns)

    def wait_ready(self) -> None:
        """Wait until every helper has loaded its model (a failure is an MtkitError)."""
        if self._ready:
            return
        for number, conn in enumerate(self._conns):
            message = self._receive(number, conn, START_TIMEOUT_S, "while loading")
            if message[0] != "ready":
                self.close()
                raise MtkitError(str(message[1]))
        self._ready = True

    def submit(self, parts: list[list[list[int]]], options: SearchOptions, attention: bool) -> None:
        """Send part k (source id lists) to helper k; an empty part is not sent."""
        self.wait_ready()
        for number, (conn, sources) in enumerate(zip(self._conns, parts, strict=True)):
            if sources:
                self._send(number, conn, ("search", sources, options, attention))
                self._busy[number] = True

    def collect(self) -> list[list[list[Hypothesis]]]:
        """Each helper's hypotheses for the part :meth:`submit` sent it (empty if none)."""
        results: list[list[list[Hypothesis]]] = []
        for number, conn in enumerate(self._conns):
            if not self._busy[number]:
                results.append([])
                continue
            self._busy[number] = False
            message = self._receive(number, conn, None, "while decoding")
            if message[0] != "done":
                self.close()
                raise MtkitError(f"decoding process {number + 1}: {message[1]}")
            from mtkit.search.hypothesis import unpack

            results.append(unpack(message[1]))
        return results

    def close(self, timeout: float = 1.0) -> None:
        """Stop the helpers (idempotent). An idle helper exits when told to; one still
        loading or searching (the caller was interrupted) is killed at once, since it holds
        nothing worth waiting for."""
        for number, (conn, process) in enumerate(zip(self._conns, self._processes, strict=True)):
            busy = self._busy[number] or not self._ready
            with contextlib.suppress(OSError, ValueError):
                conn.send(("close",))
            conn.close()
            try:
                if busy:
                    process.kill()
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._conns, self._processes, self._busy = [], [], []

    def _send(self, number: int, conn: Connection, message: tuple[Any, ...]) -> None:
        try:
            conn.send(message)
        except (OSError, ValueError):
            self._stopped(number, "before decoding")

    def _receive(
        self, number: int, conn: Connection, timeout: float | None, when: str
    ) -> tuple[Any, ...]:
        if timeout is not None and not conn.poll(timeout):
            self.close()
            raise MtkitError(f"decoding process {number + 1} did not start in {timeout:.0f} s")
        try:
            message: tuple[Any, ...] = conn.recv()
        except (EOFError, OSError):
            self._stopped(number, when)
        return message

    def _stopped(self, number: int, when: str) -> NoReturn:
        process = self._processes[number]
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        code = process.returncode
        self.close()
        raise MtkitError(f"decoding process {number + 1} stopped {when} (exit {code})")


def _start_helper() -> tuple[Connection, subprocess.Popen]:
    """``python -m mtkit.search.pool FD`` on one end of a socket pair; the other end."""
    from mtkit.runtime import own_group_and_die_with_parent

    ours, theirs = socket.socketpair()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    parent = os.getpid()
    process = subprocess.Popen(
        [sys.executable, "-m", "mtkit.search.pool", str(theirs.fileno())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=env,
        pass_fds=[theirs.fileno()],
        preexec_fn=lambda: own_group_and_die_with_parent(parent),
    )
    theirs.close()
    return Connection(ours.detach()), process


def helper_main(conn: Connection) -> None:
    """A helper: load the model with one thread, then search what the pipe sends.

    It ends when the caller says so or goes away (EOF, or a broken pipe when it answers),
    always quietly: a command stopped by Ctrl-C prints its one line, no helper traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller stops us
    import torch

    from mtkit.runtime import tune_process
    from mtkit.search.hypothesis import pack

    def send(message: tuple[Any, ...]) -> None:
        try:
            conn.send(message)
        except OSError:  # the caller is gone (BrokenPipeError, ConnectionResetError)
            os._exit(0)

    torch.set_num_threads(1)
    tune_process()
    try:
        (spec,) = conn.recv()
        translator = spec.load()
    except (EOFError, OSError):  # the caller is gone
        os._exit(0)
    except Exception as error:  # already a one-line message for a bad checkpoint
        send(("broken", str(error)))
        os._exit(0)
    send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the caller is gone
            break
        if message[0] == "close":
            break
        _, sources, options, attention = message
        try:
            found = translator.search_ids(sources, options, attention)
        except Exception as error:  # a bug: the caller reports it in one line
            send(("failed", f"{type(error).__name__}: {error}"))
            continue
        send(("done", pack(found)))
    os._exit(0)  # nothing to flush (stdout is discarded): skip the interpreter's teardown


if __name__ == "__main__":
    helper_main(Connection(int(sys.argv[1])))
