"""Process-level settings that make CPU training and decoding fast: threads, waiting, the allocator.

Library code only sets what it was asked to (:func:`set_threads`). What changes the whole
process is left to the command-line entry points, never an ``import mtkit``: the C
allocator (:func:`tune_process`) and how OpenMP threads wait (:func:`prefer_passive_wait`).

**Waiting.** PyTorch's CPU build runs its intra-op loops on libgomp threads, which by
default spin for a while after each parallel region. When another process wants the core,
a spinning thread holds it and every parallel region waits for a thread that is not
running, so beside another busy process a spinning training keeps far less than its fair
share of the CPU; a passive thread sleeps at once and gives the core back
(``scripts/bench_train.py --contend`` measures it; docs/performance.md, "Waiting threads").
libgomp reads its wait policy once, when it is loaded, that is on ``import torch``: the
entry points call :func:`prefer_passive_wait` before anything imports torch. This module
therefore imports torch only inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING

from mtkit.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

# Any of these set by the user means the user chose how OpenMP threads wait.
WAIT_POLICY_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
THREADS_HELP = "an integer >= 1, auto or null"


def tune_allocator() -> bool:
    """Keep freed memory in the heap instead of returning it to the OS (glibc only).

    PyTorch frees and re-allocates tensors of the same few sizes at every step. glibc
    serves blocks above its mmap threshold with fresh pages, and every page is zero-filled
    by the kernel on first touch: for a training step this page-fault traffic costs more
    than some of the matrix products. Raising the thresholds makes the heap reuse blocks
    (about 25% faster steps here), at the price of memory staying reserved.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 4 << 30)
        ok &= libc.mallopt(_M_TOP_PAD, 512 * 1024 * 1024)
    except (OSError, AttributeError):
        return False
    return bool(ok)


def prefer_passive_wait(environ: MutableMapping[str, str] | None = None) -> bool:
    """Make OpenMP threads sleep instead of spin while they wait (``OMP_WAIT_POLICY=PASSIVE``).

    Call it before torch is imported (libgomp reads the variable once, when it loads);
    later it only reaches child processes. A user's own ``OMP_WAIT_POLICY``,
    ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME`` is left alone. Returns whether it set it.
    """
    env = os.environ if environ is None else environ
    if any(key in env for key in WAIT_POLICY_KEYS):
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    if "torch" in sys.modules:
        log.debug("OMP_WAIT_POLICY=PASSIVE set after torch loaded: only child processes use it")
    return True


def usable_cpus() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or a cgroup);
    ``os.cpu_count()`` where the platform has no affinity call."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def available_cores() -> int:
    """Cores this process may run on: :func:`usable_cpus` (the name older callers use)."""
    return usable_cpus()


def process_cap_help(cpus: int | None = None) -> str:
    """The valid range of a process count, for an option's help and its error."""
    return f"an integer from 1 to {usable_cpus() if cpus is None else cpus} (the usable cores)"


def check_process_count(name: str, value: object, cpus: int | None = None) -> int:
    """``value`` as a count of processes to start: an integer from 1 to the usable cores.

    More processes than cores cannot run at once: each one costs its memory and start-up
    and takes turns on the same cores, so a count beyond them is refused, never started
    (a thousand helpers would exhaust memory before the first sentence). ``name`` is the
    option as the user wrote it (``--processes``, ``train.processes``); ``cpus`` replaces
    :func:`usable_cpus` (tests, or a caller that already counted). Raises ConfigError.
    """
    limit = usable_cpus() if cpus is None else cpus
    count = _as_count(value)
    if count is None or not 1 <= count <= limit:
        raise ConfigError(f"{name}={value!r} is not valid; expected {process_cap_help(limit)}")
    return count


def _as_count(value: object) -> int | None:
    """``value`` as an integer (an int, or text of one), else None; never a bool or float."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    return None


def resolve_threads(
    requested: int | str | None, environ: MutableMapping[str, str] | None = None
) -> int | None:
    """The intra-op thread count for ``threads`` (config value or command-line text).

    ``None``: leave PyTorch's default. An integer (or its text): that many. ``auto``: the
    user's ``OMP_NUM_THREADS`` when set, else one per core this process may use. With
    passive waiting (:func:`prefer_passive_wait`) that count keeps a fair share beside
    other work, so ``auto`` does not shrink it with the load: the count, and with it the
    floating-point summation order, depends only on the machine, not on the moment.
    """
    if requested is None:
        return None
    count = _parse_count(requested)
    if count is not None:
        return count
    if requested != "auto":
        raise ConfigError(f"threads={requested!r} is not valid; expected {THREADS_HELP}")
    env = os.environ if environ is None else environ
    user = env.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if user.isdigit() and int(user) >= 1:
        return int(user)
    return available_cores()


def _parse_count(requested: int | str) -> int | None:
    """``requested`` as a thread count >= 1, or None when it is no integer at all."""
    if isinstance(requested, bool):
        raise ConfigError(f"threads={requested!r} is not valid; expected {THREADS_HELP}")
    if isinstance(requested, int):
        value = requested
    elif isinstance(requested, str) and requested.strip().lstrip("+-").isdigit():
        value = int(requested)
    else:
        return None
    if value < 1:
        raise ConfigError(f"threads={requested!r} is not valid; expected {THREADS_HELP}")
    return value


def set_threads(threads: int | str | None) -> int:
    """Use ``threads`` intra-op threads (see :func:`resolve_threads`); returns the count used.

    ``auto`` logs what it chose and why, so a run's log says how it computed.
    """
    import torch

    count = resolve_threads(threads)
    if count is not None:
        torch.set_num_threads(count)
    if threads == "auto":
        policy = os.environ.get("OMP_WAIT_POLICY", "the OpenMP default")
        log.info(
            "threads=auto: %d intra-op threads (%d cores available; OpenMP wait policy %s)",
            torch.get_num_threads(),
            available_cores(),
            policy,
        )
    return torch.get_num_threads()


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one intra-op thread, then restore the count (a process that
    decodes beside single-threaded helpers, :mod:`mtkit.search.pool`)."""
    import torch

    count = torch.get_num_threads()
    if count != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if count != 1:
            torch.set_num_threads(count)


def tune_process() -> None:
    """Process-wide tuning for a command-line tool (or a benchmark script): the allocator,
    and passive OpenMP waiting for the processes it starts (and for itself, when torch is
    not loaded yet)."""
    prefer_passive_wait()
    if tune_allocator():
        log.debug("glibc allocator tuned for tensor reuse")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an unavailable CUDA request is a clear error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not valid; expected cpu, cuda or cuda:N") from None


def fast_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``auto`` into what is fastest for this model on ``device``.

    On a CPU with native bf16 matrix units, bf16 autocast is ~1.6x faster than fp32. On
    CUDA this model is small enough to be bound by kernel launches, where autocast's extra
    casts made bf16 ~30% slower than fp32 (H100, scripts/bench_train.py); fp32 there
    runs its matrix products in TF32.
    """
    import torch

    if precision != "auto":
        return precision
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return "fp32"
    return "bf16" if device.type == "cpu" and fast_bf16_cpu() else "fp32"


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast (CPU or CUDA) for ``precision='bf16'``; nothing for fp32."""
    import torch

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def new_file_mode() -> int:
    """The mode a new file gets under the process's umask (0o666 & ~umask), for files
    written through a temporary file and renamed into place (mkstemp creates 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def own_group_and_die_with_parent(parent: int) -> None:
    """In the child before exec: a process group of its own (the terminal's Ctrl-C reaches
    only the supervisor, which forwards it once) and death with the supervisor."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)


# What a stop signal undoes at once: token -> action (see at_stop).
_STOP_ACTIONS: dict[int, Callable[[], object]] = {}
_STOP_TOKENS = itertools.count()


def at_stop(action: Callable[[], object]) -> int:
    """Register what a stop signal must undo at once: kill a helper process, remove a temp
    file or a half-built folder. Returns the token that :func:`forget_stop` takes.

    A command's signal handler (:func:`mtkit.cli.io.exit_on_signals`) runs the actions
    before the program unwinds: helpers that still load or search would otherwise hold
    the cores the unwinding needs, and an exception raised by the handler inside a
    finalizer is lost, so ``finally`` blocks are not enough. An action must be quick,
    idempotent and take no lock (``os.kill``, ``unlink``, ``rmtree``).
    """
    token = next(_STOP_TOKENS)
    _STOP_ACTIONS[token] = action
    return token


def forget_stop(token: int) -> None:
    """The action of ``token`` is no longer needed (the helper ended, the file is in place)."""
    _STOP_ACTIONS.pop(token, None)


def run_stop_actions() -> None:
    """Run every registered stop action (newest first), each at most once; errors ignored."""
    for token in sorted(_STOP_ACTIONS, reverse=True):
        action = _STOP_ACTIONS.pop(token, None)
        if action is not None:
            with contextlib.suppress(Exception):
                action()


def kill_on_stop(pid: int) -> int:
    """:func:`at_stop` for a helper process: SIGKILL (it holds nothing worth saving)."""

    def kill() -> None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)

    return at_stop(kill)
