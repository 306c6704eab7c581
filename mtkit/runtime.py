"""Process-level settings that make CPU training and decoding fast: threads and the allocator.

Library code only sets what it was asked to (:func:`set_threads`). Tuning the C
allocator changes the whole process, so only the command-line entry points do it
(:func:`tune_process`), never an ``import mtkit``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys

import torch

from mtkit.errors import ConfigError

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


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


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads (None: PyTorch's default, one per core)."""
    if threads is not None:
        torch.set_num_threads(threads)


def tune_process() -> None:
    """Process-wide tuning for a command-line tool (or a benchmark script): the allocator."""
    if tune_allocator():
        log.debug("glibc allocator tuned for tensor reuse")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an unavailable CUDA request is a clear error."""
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
    if precision != "auto":
        return precision
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return "fp32"
    return "bf16" if device.type == "cpu" and fast_bf16_cpu() else "fp32"


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast (CPU or CUDA) for ``precision='bf16'``; nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
