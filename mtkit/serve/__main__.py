"""``python -m mtkit.serve CKPT [CKPT ...]``: a local translation service and web page.

Several checkpoints are served as an ensemble (``--weights`` to weight them); a folder
written by ``mtkit-export`` is served with the ONNX runtime (:mod:`mtkit.serve.onnx`). The
service listens on 127.0.0.1 by default, so only this machine can reach it; bind
another address with ``--host`` only on a network you trust (there is no
authentication). ``--port 0`` picks a free port; the address is printed either way.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mtkit.errors import MtkitError, run_cli
from mtkit.runtime import available_cores
from mtkit.serve.export import export_option_problem

PROG = "mtkit-serve"


class Bounded:
    """An argparse type: an integer (or, with ``integer=False``, a finite number) from
    ``low`` to ``high``; anything else is a usage error that gives the range."""

    def __init__(self, low: float, high: float, integer: bool = True) -> None:
        self.low, self.high, self.integer = low, high, integer

    @property
    def range(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind} from {_shown(self.low)} to {_shown(self.high)}"

    def __call__(self, text: str) -> float:
        try:
            value: float | None = int(text) if self.integer else float(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected {self.range}")
        return value


def _shown(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


# The valid values of each number option: beyond these a service is broken, not tuned.
PORT = Bounded(0, 65535)
BEAM = Bounded(1, 256)
LINES = Bounded(1, 100_000)
CHARS = Bounded(1, 1_000_000)  # the body limit follows: 6 bytes a character + 64 KiB
QUEUE = Bounded(1, 100_000)
WAIT_MS = Bounded(0, 1000, integer=False)
WEIGHT = Bounded(0, 1e6, integer=False)


def cores() -> Bounded:
    """--threads and --workers: at most the cores this process may use (more cannot run
    at once: each extra process costs its memory and start-up, and takes turns)."""
    return Bounded(1, available_cores())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve mtkit checkpoints over HTTP: a JSON API (POST /v1/translate, "
        "GET /v1/model, GET /healthz) and a web page at /. Several checkpoints form an "
        "ensemble; a folder written by mtkit-export is served with the ONNX runtime.",
    )
    for group in (_model_options, _address_options, _worker_options, _limit_options):
        group(parser.add_argument)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_values(parser, args)
    return args


def _model_options(add: Callable[..., Any]) -> None:
    """What is served: checkpoints, device, precision, shortlist, default beam size."""
    add(
        "checkpoints",
        nargs="+",
        metavar="CKPT",
        help="best.pt / last.pt / averaged checkpoints, or one ONNX export folder (mtkit-export)",
    )
    add(
        "--weights",
        type=WEIGHT,
        nargs="+",
        metavar="W",
        help=f"ensemble weights, one per checkpoint ({WEIGHT.range})",
    )
    add("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    add("--precision", choices=("fp32", "bf16", "int8"), default="fp32")
    add(
        "--beam-size",
        type=BEAM,
        metavar="K",
        help="beam size of requests that name none (default: the checkpoint's; at most --max-beam)",
    )
    add(
        "--shortlist",
        action="store_true",
        help="score only the target pieces the checkpoint's lexical shortlist allows (faster, "
        "most of all for the few sentences a service decodes at once; add one with "
        "mtkit-shortlist)",
    )


def _address_options(add: Callable[..., Any]) -> None:
    """Where it listens."""
    add(
        "--host",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to bind (default: 127.0.0.1, this machine)",
    )
    add(
        "--port",
        type=PORT,
        default=8000,
        metavar="N",
        help="port (default 8000; 0 picks a free one; at most 65535)",
    )


def _worker_options(add: Callable[..., Any]) -> None:
    """What decodes: threads, processes and the kind of worker."""
    count = cores()
    add(
        "--threads",
        type=count,
        metavar="N",
        help="CPU threads for the model (default: all cores but one; with --worker inline, "
        f"the cores shared out among the --workers processes; {count.range}, the cores "
        "this process may use)",
    )
    add(
        "--workers",
        type=count,
        metavar="N",
        help="model processes, each decoding its own share of the requests with --threads "
        "threads (default 1); with --worker inline each also serves HTTP "
        f"({count.range}, the cores this process may use)",
    )
    add(
        "--worker",
        choices=("process", "thread", "inline"),
        default="process",
        help="decode in a model process of its own (default); in a thread beside the HTTP "
        "event loop (one process, one interpreter lock for both: slower under load); or "
        "inline: greedy requests on the event loop's own thread between its I/O, and with "
        "--workers N, N such processes sharing the port (the fastest under load)",
    )


def _limit_options(add: Callable[..., Any]) -> None:
    """What one request may ask for, and how requests are batched."""
    add(
        "--max-beam",
        type=BEAM,
        default=16,
        metavar="K",
        help=f"largest beam a request may ask for (16; {BEAM.range})",
    )
    add(
        "--max-lines",
        type=LINES,
        default=100,
        metavar="N",
        help=f"most texts in one request (100; {LINES.range}); more: 413",
    )
    add(
        "--max-chars",
        type=CHARS,
        default=20000,
        metavar="N",
        help=f"most characters in a request (20000; {CHARS.range}); more: 413, as is a body "
        "of more than 6 bytes a character + 64 KiB",
    )
    add(
        "--queue-size",
        type=QUEUE,
        default=256,
        metavar="N",
        help=f"requests that may wait (256; {QUEUE.range}); more: 503",
    )
    add(
        "--batch-wait-ms",
        type=WAIT_MS,
        default=3.0,
        metavar="MS",
        help="quiet time that closes a batch: the model starts once no request has come and "
        f"no answer has gone out for this long (3; longer after long searches; {WAIT_MS.range})",
    )


def _check_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What one option's range cannot say (each number's range is checked as it is read)."""
    if args.beam_size is not None and args.beam_size > args.max_beam:
        parser.error("--beam-size must not exceed --max-beam")
    if (args.workers or 1) > 1 and args.worker == "thread":
        parser.error("--workers needs --worker process or inline (each worker is a process)")
    problem = export_option_problem(args)
    if problem is not None:
        parser.error(problem)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; an address in use or not valid here is a one-line error.

    The socket is made with the protocol getaddrinfo names (IPPROTO_TCP): asyncio only
    sets TCP_NODELAY on connections whose socket says so, and without it Nagle's
    algorithm holds back the end of every response until the client's delayed ACK
    (about 40 ms per request).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        reason = error.strerror or str(error)
        raise MtkitError(f"--host {host} --port {port}: cannot listen ({reason})") from None
    sock.listen(2048)
    return sock


def serve(args: argparse.Namespace) -> int:
    from mtkit.runtime import prefer_passive_wait

    prefer_passive_wait()  # before torch loads (mtkit.runtime explains why)
    for name in ("fastapi", "uvicorn"):  # found, not imported: see the supervisor below
        if importlib.util.find_spec(name) is None:
            raise MtkitError(
                f"needs FastAPI and uvicorn ({name} is missing): pip install -e '.[serve]'"
            )
    if args.worker == "inline" and (args.workers or 1) > 1:
        # The supervisor loads neither torch nor the web framework: it only starts the
        # processes that do, and so ends at once after them.
        from mtkit.serve.listeners import serve_processes

        sock = bind(args.host, args.port)
        return serve_processes(args, sock, lambda info: announce(info, sock))
    from mtkit.serve.app import create_app
    from mtkit.serve.server import Server, server_config
    from mtkit.serve.setup import served_model

    app = create_app(*served_model(args))
    sock = bind(args.host, args.port)
    try:  # now, so that a model that cannot load is a one-line error
        app.state.batcher.start()
    except BaseException:
        sock.close()
        app.state.batcher.close()
        raise
    announce(app.state.info, sock)
    Server(server_config(app), app.state.batcher.close).run(sockets=[sock])
    return 0


def announce(info: dict[str, Any], sock: socket.socket) -> None:
    """The banner: languages, checkpoints (or export) and the address (scripts read the
    port here)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    languages = f"{info['source_language'] or '?'} -> {info['target_language'] or '?'}"
    served = ", ".join(info["checkpoints"]) + (
        ", ONNX export" if info.get("backend") == "onnx" else ""
    )
    print(
        f"{PROG}: {languages} ({served}) on http://{shown}:{port}/",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    args = parse_args(argv)
    raise SystemExit(run_cli(lambda: serve(args), PROG))


if __name__ == "__main__":
    main()
