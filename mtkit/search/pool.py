"""Decoding on several cores: single-threaded helper processes, each searching a share of
every batch.

A decoder step is a few dozen operators on a few hundred rows. Split over two threads,
each operator is cut in two and joined again, and the second thread adds little; two
single-threaded processes, each searching its own sentences, share nothing while they
search (docs/benchmarks.md has the figures).

**How a batch is shared** (:meth:`DecodePool.search`). The
:class:`~mtkit.search.translator.Translator` cuts its length-sorted batches as before.
Of each batch of n sentences, process k (0 is the calling process, 1 .. P-1 the
helpers) searches the sentences at positions k, k + P, k + 2P, ...: neighbours in
length order, so every part has nearly the same lengths and takes about as long. The
parts depend on the batch alone, so a given number of processes always gives the same
output; each part is searched as a batch of its own, so the translations are those of
one process wherever search is batch-invariant (it is in fp32 up to the last bit of a
few rows).

**The helpers** are ``python -m mtkit.search.pool`` processes, each connected by a
socket pair: they import nothing of the caller's script (so a script needs no
``if __name__ == "__main__"`` guard) and load the same model themselves (the
:class:`~mtkit.search.load.LoadSpec` they are sent), with one thread, while the calling
process loads its own copy (:func:`load_shared`). They run in a process group of their
own (the terminal's Ctrl-C reaches only the caller, which stops them), die with the
caller (``PR_SET_PDEATHSIG``, Linux) and stop when its end of the pipe closes. Their
standard output is discarded: a command's stdout holds only its translations.

Messages over the pipe. Parent to child: the :class:`~mtkit.search.load.LoadSpec` first,
then ``("search", sources, options, return_attention, prefixes)`` with ``sources`` a
list of source id lists (``prefixes``: their target prefixes, or None), and
``("close",)``. Child to parent: ``("ready",)`` once its model is loaded,
``("broken", message)`` when loading fails, then one ``("done", packed)`` or
``("failed", message)`` per search.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NoReturn

from mtkit.config import SearchOptions
from mtkit.errors import ConfigError, MtkitError
from mtkit.runtime import (
    forget_stop,
    kill_on_stop,
    own_group_and_die_with_parent,
    resolve_device,
    single_thread,
    tune_process,
    usable_cpus,
)
from mtkit.search.spec import LoadSpec

if TYPE_CHECKING:  # torch loads after the helpers have started
    from mtkit.search.hypothesis import Hypothesis
    from mtkit.search.load import LoadedModel

START_TIMEOUT_S = 300.0  # loading a large ensemble on a slow disk can take a while


def check_processes(processes: object) -> int:
    """A process count given to the Python API: an integer >= 1 and at most the cores this
    process may use, as the commands' ``--processes`` (else a ConfigError)."""
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ConfigError(f"processes={processes!r}; expected an integer >= 1")
    cores = usable_cpus()
    if processes > cores:
        raise ConfigError(
            f"processes={processes} is more than the {cores} core(s) this process may use; "
            f"expected an integer from 1 to {cores}"
        )
    return processes


def load_shared(
    spec: LoadSpec, processes: int, before_loading: Callable[[], None] | None = None
) -> tuple[LoadedModel, DecodePool | None]:
    """``spec``'s model in this process and, for ``processes`` > 1, a pool of
    ``processes - 1`` helpers that loaded it too (the CPU only).

    The helpers start first, so they load while this process runs ``before_loading``
    (a command's process settings) and loads its own copy. Whatever fails, no helper
    is left running.
    """
    check_processes(processes)
    if processes > 1 and spec.device != "cpu" and resolve_device(spec.device).type != "cpu":
        raise ConfigError(f"processes={processes} decodes on the CPU only, not on {spec.device}")
    pool = DecodePool(spec, processes - 1) if processes > 1 else None
    try:
        if before_loading is not None:
            before_loading()
        from mtkit.search.load import load_spec  # torch: once the helpers have started

        loaded = load_spec(spec)
        if pool is not None:
            pool.wait_ready()
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    return loaded, pool


class DecodePool:
    """``helpers`` processes that each search the part of a batch they are sent."""

    def __init__(self, spec: LoadSpec, helpers: int) -> None:
        self._conns: list[Connection] = []
        self._processes: list[subprocess.Popen] = []
        self._busy: list[bool] = []  # helper k was sent a part it has not answered yet
        self._on_stop: list[int] = []  # a stop signal kills the helpers at once
        self._ready = False
        try:
            for number in range(helpers):
                conn, process = _start_helper()  # loading starts now, beside the caller's own
                self._on_stop.append(kill_on_stop(process.pid))
                self._conns.append(conn)
                self._processes.append(process)
                self._busy.append(False)
                self._send(number, conn, (spec,))
        except BaseException:  # a signal while starting them: none is left behind
            self.close()
            raise

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

    def search(
        self,
        loaded: LoadedModel,
        sources: list[list[int]],
        options: SearchOptions,
        return_attention: bool,
        prefixes: list[list[int]] | None = None,
    ) -> list[list[Hypothesis]]:
        """One batch shared with the helpers: of P processes, process k searches sentences
        k, k + P, ... (this one, single-threaded, while the helpers search theirs)."""
        share = 1 + self.helpers
        parts = [sources[k::share] for k in range(share)]
        given = [None if prefixes is None else prefixes[k::share] for k in range(share)]
        self._submit(parts[1:], options, return_attention, given[1:])
        with single_thread():
            own = loaded.search(parts[0], options, return_attention, given[0]) if parts[0] else []
        found: list[list[Hypothesis]] = [[] for _ in sources]
        for k, part in enumerate([own, *self._collect()]):
            found[k::share] = part
        return found

    def _submit(
        self,
        parts: list[list[list[int]]],
        options: SearchOptions,
        attention: bool,
        prefixes: list[list[list[int]] | None],
    ) -> None:
        """Send part k (source id lists, their prefixes) to helper k; an empty part is not
        sent."""
        self.wait_ready()
        for number, (conn, sources) in enumerate(zip(self._conns, parts, strict=True)):
            if sources:
                message = ("search", sources, options, attention, prefixes[number])
                self._send(number, conn, message)
                self._busy[number] = True

    def _collect(self) -> list[list[list[Hypothesis]]]:
        """Each helper's hypotheses for the part :meth:`_submit` sent it (empty if none)."""
        from mtkit.search.hypothesis import unpack

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
            results.append(unpack(message[1]))
        return results

    def close(self, timeout: float = 1.0) -> None:
        """Stop the helpers (idempotent). An idle helper exits when told to; one still
        loading or searching (the caller was interrupted) is killed at once, since it holds
        nothing worth waiting for. All are told first, then waited for together, so the
        stop takes at most ``timeout`` whatever their number."""
        # not strict: a signal may have come between two of the appends in __init__
        for number, (conn, process) in enumerate(zip(self._conns, self._processes, strict=False)):
            with contextlib.suppress(OSError, ValueError):
                if self._busy[number] or not self._ready:
                    process.kill()
                else:
                    conn.send(("close",))
            conn.close()
        deadline = time.monotonic() + timeout
        for process in self._processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for token in self._on_stop:
            forget_stop(token)
        self._conns, self._processes, self._busy, self._on_stop = [], [], [], []

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

    def send(message: tuple[Any, ...]) -> None:
        try:
            conn.send(message)
        except OSError:  # the caller is gone (BrokenPipeError, ConnectionResetError)
            os._exit(0)

    import torch

    from mtkit.search.hypothesis import pack
    from mtkit.search.load import load_spec

    torch.set_num_threads(1)
    tune_process()
    try:
        (spec,) = conn.recv()
        loaded = load_spec(spec)
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
        _, sources, options, attention, prefixes = message
        try:
            found = loaded.search(sources, options, attention, prefixes)
        except Exception as error:  # a bug: the caller reports it in one line
            send(("failed", f"{type(error).__name__}: {error}"))
            continue
        send(("done", pack(found)))
    os._exit(0)  # nothing to flush (stdout is discarded): skip the interpreter's teardown


if __name__ == "__main__":
    helper_main(Connection(int(sys.argv[1])))
