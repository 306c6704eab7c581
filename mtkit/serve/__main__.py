"""``python -m mtkit.serve CKPT [CKPT ...]``: a local translation service and web page.

Several checkpoints are served as an ensemble (``--weights`` to weight them). The
service listens on 127.0.0.1 by default, so only this machine can reach it; bind
another address with ``--host`` only on a network you trust (there is no
authentication). ``--port 0`` picks a free port; the address is printed either way.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mtkit.errors import MtkitError, run_cli

PROG = "mtkit-serve"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve mtkit checkpoints over HTTP: a JSON API (POST /v1/translate, "
        "GET /v1/model, GET /healthz) and a web page at /. Several checkpoints form an "
        "ensemble.",
    )
    for group in (_model_options, _address_options, _worker_options, _limit_options):
        group(parser.add_argument)
    args = parser.parse_args(argv)
    _check_values(parser, args)
    return args


def _model_options(add: Callable[..., Any]) -> None:
    """What is served: checkpoints, device, precision, shortlist, default beam size."""
    add("checkpoints", nargs="+", metavar="CKPT", help="best.pt / last.pt / averaged checkpoints")
    add(
        "--weights", type=float, nargs="+", metavar="W", help="ensemble weights, one per checkpoint"
    )
    add("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    add("--precision", choices=("fp32", "bf16", "int8"), default="fp32")
    add(
        "--beam-size",
        type=int,
        metavar="K",
        help="beam size of requests that name none (default: the checkpoint's)",
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
        type=int,
        default=8000,
        metavar="N",
        help="port (default 8000; 0 picks a free one)",
    )


def _worker_options(add: Callable[..., Any]) -> None:
    """What decodes: threads, processes and the kind of worker."""
    add(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for the model (default: all cores but one; with --worker inline, "
        "the cores shared out among the --workers processes)",
    )
    add(
        "--workers",
        type=int,
        metavar="N",
        help="model processes, each decoding its own share of the requests with --threads "
        "threads (default 1); with --worker inline each also serves HTTP",
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
        type=int,
        default=16,
        metavar="K",
        help="largest beam a request may ask for (16)",
    )
    add("--max-lines", type=int, default=100, metavar="N", help="most texts in one request (100)")
    add(
        "--max-chars",
        type=int,
        default=20000,
        metavar="N",
        help="most characters in a request (20000)",
    )
    add(
        "--queue-size",
        type=int,
        default=256,
        metavar="N",
        help="requests that may wait (256); more: 503",
    )
    add(
        "--batch-wait-ms",
        type=float,
        default=3.0,
        metavar="MS",
        help="quiet time that closes a batch: the model starts once no request has come and "
        "no answer has gone out for this long (3; longer after long searches)",
    )


def _check_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in (
        "max_beam", "max_lines", "max_chars", "queue_size", "beam_size", "threads", "workers"
    ):  # fmt: skip
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.beam_size is not None and args.beam_size > args.max_beam:
        parser.error("--beam-size must not exceed --max-beam")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be in 0..65535")
    if args.batch_wait_ms < 0:
        parser.error("--batch-wait-ms must be >= 0")
    if (args.workers or 1) > 1 and args.worker == "thread":
        parser.error("--workers needs --worker process or inline (each worker is a process)")


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
    try:
        import uvicorn

        from mtkit.serve.app import create_app
        from mtkit.serve.setup import served_model
    except ImportError as error:
        raise MtkitError(
            f"needs FastAPI and uvicorn ({error.name} is missing): pip install -e '.[serve]'"
        ) from None
    if args.worker == "inline" and (args.workers or 1) > 1:
        from mtkit.serve.listeners import serve_processes

        sock = bind(args.host, args.port)
        return serve_processes(args, sock, lambda info: announce(info, sock))
    app = create_app(*served_model(args))
    sock = bind(args.host, args.port)
    try:  # now, so that a model that cannot load is a one-line error
        app.state.batcher.start()
    except BaseException:
        sock.close()
        app.state.batcher.close()
        raise
    announce(app.state.info, sock)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def announce(info: dict[str, Any], sock: socket.socket) -> None:
    """The banner: languages, checkpoints and the address (scripts read the port here)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"{PROG}: {info['source_language']} -> {info['target_language']} "
        f"({', '.join(info['checkpoints'])}) on http://{shown}:{port}/",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    args = parse_args(argv)
    raise SystemExit(run_cli(lambda: serve(args), PROG))


if __name__ == "__main__":
    main()
