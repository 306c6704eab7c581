#!/usr/bin/env python
"""Throughput and latency of ``python -m mtkit.serve`` under 1, 8 and 32 concurrent clients.

Usage::

    python scripts/bench_serve.py CHECKPOINT [--src ../shared/corpora/multi30k/test2016.de]
        [--clients 1,8,32] [--beam-size 1] [--threads N] [--server-threads N]
        [--worker process|thread|inline] [--shortlist] [--batch-wait-ms 3]

First the batch path: ``Translator.translate`` over all sentences, as
``mtkit.translate`` does it (loading excluded): with ``--batch-processes auto`` (the
default) in the processes its ``--processes auto`` picks for this input (two
single-threaded ones on 2+ cores), the best of ``--repeats`` passes after a warm-up.
Then the service runs in its own process on a free 127.0.0.1 port (so the clients here
do not share its interpreter), and for each client count every client sends one sentence
per request over a kept-alive connection until all sentences are done (or
``--max-seconds``), after an untimed warm-up of the service. The clients are asyncio
tasks on one thread (the load generator shares the cores with the service, so it must be
cheap, as ``wrk`` or ``hey`` are). It prints one stable line per measurement:
requests/s, p50/p95 latency, failed requests, answers that differ from the batch
translation, the mean number of requests per search batch (from ``/healthz``: a beam
group, or a group of greedy requests joining the running greedy search), the greedy
search's steps (with ``--worker inline --workers N``: those of the one process that answers
``/healthz``), and the share of the batch sentences/s (the issue's target: >= 60% with
32 clients); then the CPU the service (and of it, its main process: the HTTP side alone with
``--worker process``, which hands the decoding to model processes; the supervising parent
alone with ``--worker inline --workers N``) and the clients used, and
the latency of ``GET /healthz`` probed every 50 ms during the run (how responsive the
service stays while it decodes).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mtkit.runtime import prefer_passive_wait

prefer_passive_wait()  # before torch loads, as the mtkit commands do

import torch  # noqa: E402

from mtkit.cli.options import parse_processes, resolve_processes  # noqa: E402
from mtkit.runtime import available_cores, tune_process  # noqa: E402
from mtkit.search.translator import Translator  # noqa: E402

TARGET_SHARE = 0.60  # of the batch sentences/s, with 32 clients


def batch_rate(
    checkpoint: str,
    sentences: list[str],
    beam: int,
    repeats: int,
    shortlist: bool,
    precision: str,
    processes: int,
) -> tuple[float, list[str]]:
    """Best sentences/s of ``Translator.translate`` over all sentences, and its output."""
    with Translator.from_checkpoint(
        checkpoint, precision=precision, shortlist=shortlist, processes=processes
    ) as translator:
        output = translator.translate(sentences, beam_size=beam)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            translator.translate(sentences, beam_size=beam)
            best = min(best, time.perf_counter() - start)
    return len(sentences) / best, output


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], int]:
    command = [
        sys.executable, "-m", "mtkit.serve", args.checkpoint, "--port", "0",
        "--beam-size", str(args.beam_size), "--batch-wait-ms", str(args.batch_wait_ms),
        "--queue-size", "1024", "--precision", args.precision,
    ]  # fmt: skip
    if args.server_threads or args.threads:
        command += ["--threads", str(args.server_threads or args.threads)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    command += ["--worker", args.worker] + (["--shortlist"] if args.shortlist else [])
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # the banner names the address
        if match := re.search(r"http://127\.0\.0\.1:(\d+)/", line):
            # Keep reading what the server logs, so a full pipe never blocks it.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, int(match.group(1))
    raise SystemExit(f"bench_serve: the server did not start (exit {process.wait()})")


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU seconds of a process and (unless told not to) its children
    (Linux ``/proc``; else 0)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir() if children else []:
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    except (OSError, ValueError, IndexError):
        pass
    return total


def server_stats(port: int) -> dict[str, Any]:
    """The service's counters: requests answered, sentences, search batches."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/healthz")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def run_clients(
    port: int, sentences: list[str], expected: list[str], clients: int, max_seconds: float
) -> dict[str, float]:
    """Send every sentence once, spread over ``clients`` concurrent connections."""
    return asyncio.run(_run_clients(port, sentences, expected, clients, max_seconds))


async def _run_clients(
    port: int, sentences: list[str], expected: list[str], clients: int, max_seconds: float
) -> dict[str, float]:
    """The clients as asyncio tasks on one thread, with a minimal HTTP/1.1 exchange.

    The load generator shares the 2 cores with the service, so it must cost little: a
    thread per client with ``http.client`` spends more of the machine's CPU on the
    interpreter lock and on parsing than the requests themselves need.
    """
    latencies: list[float] = []
    outcome = {"failed": 0, "wrong": 0}
    stop_at = time.perf_counter() + max_seconds

    async def client(first: int) -> None:
        connection = await _connect(port)
        for index in range(first, len(sentences), clients):
            if time.perf_counter() > stop_at:
                break
            start = time.perf_counter()
            try:
                status, answer = await _post(connection, {"text": sentences[index]})
                ok = status == 200
            except (OSError, asyncio.IncompleteReadError, ValueError):
                connection[1].close()
                connection = await _connect(port)
                ok, answer = False, None
            latencies.append(time.perf_counter() - start)
            outcome["failed"] += not ok
            outcome["wrong"] += ok and answer["translations"][0]["text"] != expected[index]
        connection[1].close()

    probes: list[float] = []
    finished = asyncio.Event()

    async def probe() -> None:
        """GET /healthz every 50 ms while the clients run: does the service stay responsive?"""
        connection = await _connect(port)
        while not finished.is_set():
            start = time.perf_counter()
            await _request(connection, "GET", "/healthz")
            probes.append(time.perf_counter() - start)
            await asyncio.sleep(0.05)
        connection[1].close()

    prober = asyncio.create_task(probe())
    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    seconds = time.perf_counter() - start
    finished.set()
    await prober
    ordered, health = sorted(latencies), sorted(probes) or [0.0]
    return {
        "health_p50": 1000 * statistics.median(health),
        "health_p95": 1000 * health[min(len(health) - 1, int(0.95 * len(health)))],
        "requests": len(ordered),
        "seconds": seconds,
        "rate": len(ordered) / seconds,
        "p50": 1000 * statistics.median(ordered),
        "p95": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        **{key: float(value) for key, value in outcome.items()},
    }


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(port: int) -> Connection:
    return await asyncio.open_connection("127.0.0.1", port)


async def _post(connection: Connection, body: dict[str, Any]) -> tuple[int, Any]:
    """POST /v1/translate over a kept-alive connection: (status, parsed JSON answer)."""
    return await _request(connection, "POST", "/v1/translate", body)


async def _request(
    connection: Connection, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """One HTTP/1.1 exchange over a kept-alive connection: (status, parsed JSON answer)."""
    reader, writer = connection
    data = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    writer.write(head.encode() + data)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, json.loads(await reader.readexactly(length))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--src", default="../shared/corpora/multi30k/test2016.de")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    parser.add_argument(
        "--beam-size", type=int, default=1, help="1 = greedy (the target's setting)"
    )
    parser.add_argument("--threads", type=int, help="torch threads, here and in the server")
    parser.add_argument(
        "--server-threads", type=int, help="torch threads of the service's model (its default)"
    )
    parser.add_argument("--workers", type=int, help="model processes of the service")
    parser.add_argument(
        "--worker",
        choices=("process", "thread", "inline"),
        default="process",
        help="the service's worker",
    )
    parser.add_argument(
        "--shortlist",
        action="store_true",
        help="decode through the shortlist",
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "int8"), default="fp32", help="both paths"
    )
    parser.add_argument("--batch-wait-ms", type=float, default=3.0)
    parser.add_argument(
        "--batch-processes",
        default="auto",
        help="processes of the batch path: auto (as mtkit-translate picks them) or N",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed batch passes (best kept)")
    parser.add_argument("--limit", type=int, help="use only the first N sentences")
    parser.add_argument("--max-seconds", type=float, default=600, help="cap per client count")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_process()
    sentences = [s for s in Path(args.src).read_text(encoding="utf-8").splitlines() if s.strip()]
    sentences = sentences[: args.limit] if args.limit else sentences
    threads = "auto" if args.threads is None else args.threads
    processes = resolve_processes(
        parse_processes(args.batch_processes), "cpu", threads, available_cores(), len(sentences)
    )
    rate, expected = batch_rate(
        args.checkpoint,
        sentences,
        args.beam_size,
        args.repeats,
        args.shortlist,
        args.precision,
        processes,
    )
    print(
        f"threads={torch.get_num_threads()} torch={torch.__version__} sentences={len(sentences)} "
        f"beam={args.beam_size} batch_wait_ms={args.batch_wait_ms} worker={args.worker} "
        f"server_threads={args.server_threads or args.threads or 'default'} "
        f"workers={args.workers or 'default'} "
        f"shortlist={args.shortlist} precision={args.precision}"
    )
    label = f"Translator.translate, {processes} process" + ("es" if processes > 1 else "")
    print(f"batch   {label:<34} {rate:8.1f} sentences/s", flush=True)
    process, port = start_server(args)
    try:
        counts = [int(c) for c in args.clients.split(",")]
        warm = min(len(sentences), 4 * max(counts))  # the first searches pay one-time costs
        run_clients(port, sentences[:warm], expected[:warm], max(counts), args.max_seconds)
        for clients in counts:
            before = server_stats(port)
            cpu_before = (cpu_seconds(process.pid), time.process_time())
            own_before = cpu_seconds(process.pid, children=False)
            result = run_clients(port, sentences, expected, clients, args.max_seconds)
            server_cpu = cpu_seconds(process.pid) - cpu_before[0]
            http_cpu = cpu_seconds(process.pid, children=False) - own_before
            client_cpu = time.process_time() - cpu_before[1]
            after = server_stats(port)
            batch = (after["requests"] - before["requests"]) / max(
                1, after["batches"] - before["batches"]
            )
            steps = after.get("steps", 0) - before.get("steps", 0)
            share = result["rate"] / rate
            verdict = ""
            if clients == 32:
                verdict = (
                    f"  target >= {TARGET_SHARE:.0%}: {'ok' if share >= TARGET_SHARE else 'MISS'}"
                )
            print(
                f"serve   clients={clients:<3} {result['rate']:8.1f} requests/s  "
                f"p50 {result['p50']:7.1f} ms  p95 {result['p95']:7.1f} ms  "
                f"requests {result['requests']:.0f}  failed {result['failed']:.0f}  "
                f"differ {result['wrong']:.0f}  mean batch {batch:4.1f}  steps {steps}  "
                f"{share:5.1%} of batch{verdict}",
                flush=True,
            )
            print(
                f"        cpu: service {server_cpu / result['seconds']:.2f} cores (main process "
                f"{http_cpu / result['seconds']:.2f}), clients "
                f"{client_cpu / result['seconds']:.2f} cores; GET /healthz meanwhile: "
                f"p50 {result['health_p50']:.1f} ms, p95 {result['health_p95']:.1f} ms",
                flush=True,
            )
    finally:
        process.terminate()
        process.wait(30)


if __name__ == "__main__":
    main()
