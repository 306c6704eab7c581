#!/usr/bin/env python
"""Peak memory of ``mtkit-translate`` against the input's length: it reads and answers in
buffers (``--buffer-size``), so the peak should not grow with the number of lines.

Usage::

    python scripts/bench_stream_rss.py CHECKPOINT --lines 10000 1000000

For each count, writes a file of that many copies of ``--sentence``, translates it
(greedy, one process, ``-o`` a file) in a child process and prints one line: the lines,
the buffer size, the child's peak resident memory (``ru_maxrss`` from ``wait4``) and its
wall time, after checking that the output has one line per input line. Extra arguments
after ``--`` go to mtkit-translate (e.g. ``-- --buffer-size 1000``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(checkpoint: str, lines: int, sentence: str, extra: list[str], folder: Path) -> str:
    """One result line for an input of ``lines`` copies of ``sentence``."""
    source, output = folder / f"in-{lines}.txt", folder / f"out-{lines}.txt"
    with source.open("w", encoding="utf-8") as handle:
        for _ in range(lines):
            handle.write(sentence + "\n")
    command = [sys.executable, "-m", "mtkit.translate", checkpoint, "-i", str(source),
               "-o", str(output), "--beam-size", "1", "--processes", "1", *extra]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"mtkit-translate failed on {lines} lines: {' '.join(command)}")
    with output.open("rb") as handle:
        written = sum(1 for _ in handle)
    if written != lines:
        raise SystemExit(f"{lines} lines in, {written} out")
    source.unlink()
    output.unlink()
    buffer = extra[extra.index("--buffer-size") + 1] if "--buffer-size" in extra else "default"
    peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
    return (
        f"lines={lines} buffer={buffer} peak_rss={peak_mib:.0f} MiB time={seconds:.1f} s "
        f"({lines / seconds:.0f} lines/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--sentence", default="red cat sleeps near the big house")
    parser.add_argument("extra", nargs="*", help="after --: more mtkit-translate options")
    args = parser.parse_args()
    print(f"cpu: {_cpu_name()}, {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as folder:
        for lines in args.lines:
            print(measure(args.checkpoint, lines, args.sentence, args.extra, Path(folder)))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
