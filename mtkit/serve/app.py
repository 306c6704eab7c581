"""The HTTP service: a JSON API and a web page over one model (or ensemble), FastAPI app.

Routes: ``POST /v1/translate``, ``GET /v1/model``, ``GET /healthz``, the page at ``/``
with its files under ``/static/``, and the framework's ``/openapi.json`` and ``/docs``.
Requests are checked here (body bytes as they are read, :mod:`mtkit.serve.limits`; types,
valid Unicode, limits, search settings) and decoded by a
:class:`~mtkit.serve.batcher.Batcher`, in a worker thread or in a model process of its
own (:class:`~mtkit.serve.process.ModelProcess`), or by an
:class:`~mtkit.serve.inline.InlineBatcher` that steps the greedy search on the event
loop's own thread between its I/O; an ONNX export is decoded by a Batcher or model
process over :class:`~mtkit.serve.onnx.ExportTranslator`. Handlers never touch the
model, and a bad request costs nothing but its error response: the service keeps
serving. Every error is JSON with a ``detail``: 4xx for the client's mistakes, 503
while the worker cannot take the request (busy, restarting, shutting down), 500 for a
bug.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request as StarletteRequest

import mtkit
from mtkit.search.hypothesis import Hypothesis
from mtkit.search.translator import Translator
from mtkit.serve.batcher import Batcher, BatcherClosed, QueueFull, Request
from mtkit.serve.export import NO_ATTENTION, NO_PREFIX
from mtkit.serve.inline import InlineBatcher
from mtkit.serve.jobs import BadPrefix, WorkerDown
from mtkit.serve.limits import BodyLimit, body_limit
from mtkit.serve.onnx import ExportTranslator
from mtkit.serve.pool import ModelPool
from mtkit.serve.process import ModelProcess, WorkerSpec
from mtkit.serve.schemas import (
    TranslateBody,
    TranslateResponse,
    translation_json,
    unicode_problem,
    validation_detail,
)
from mtkit.serve.server import CLOSE_S, QuietOnClosed
from mtkit.serve.setup import ServedModel, ServeSettings

STATIC_DIR = Path(__file__).resolve().parent / "static"

Worker = Batcher | InlineBatcher | ModelProcess | ModelPool  # what decodes the requests


def check_request(
    body: TranslateBody, settings: ServeSettings, default_beam: int, attention: bool = True
) -> Request:
    """The body as a batcher Request; limits and search settings out of range, a string
    that is not valid Unicode, a ``target_prefix`` not shaped like ``text``, or attention
    or a prefix asked of a model without them (``attention`` False: an ONNX export), are
    errors. Whether the model can write a prefix is the worker's check, per request."""
    problem = unicode_problem(body)
    if problem is not None:
        raise HTTPException(422, problem)
    if body.attention and not attention:
        raise HTTPException(422, NO_ATTENTION)
    texts = [body.text] if isinstance(body.text, str) else body.text
    prefixes = request_prefixes(body)
    if prefixes is not None and not attention and any(p and p.strip() for p in prefixes):
        raise HTTPException(422, NO_PREFIX)
    if len(texts) > settings.max_lines:
        raise HTTPException(
            413, f"{len(texts)} texts; the limit is {settings.max_lines} (--max-lines)"
        )
    chars = sum(len(t) for t in texts) + sum(len(p or "") for p in prefixes or ())
    if chars > settings.max_chars:
        raise HTTPException(
            413, f"{chars} characters; the limit is {settings.max_chars} (--max-chars)"
        )
    beam_size = default_beam if body.beam_size is None else body.beam_size
    if not 1 <= beam_size <= settings.max_beam:
        raise HTTPException(
            422, f"beam_size={_shown(beam_size)} is out of range; expected 1..{settings.max_beam}"
        )
    if not 1 <= body.nbest <= beam_size:
        raise HTTPException(
            422, f"nbest={_shown(body.nbest)} is out of range; expected 1..beam_size ({beam_size})"
        )
    single = isinstance(body.text, str)
    return Request(tuple(texts), beam_size, body.nbest, body.attention, prefixes, single)


def request_prefixes(body: TranslateBody) -> tuple[str | None, ...] | None:
    """``target_prefix`` as one prefix (or None) per text; None when absent. A 422 when
    its shape is not ``text``'s: a string for a string, a list of as many for a list."""
    given, text = body.target_prefix, body.text
    if given is None:
        return None
    if isinstance(text, str) and not isinstance(given, str):
        raise HTTPException(
            422, "target_prefix: expected a string or null, as text is a string; got a list"
        )
    if isinstance(text, list) and not isinstance(given, list):
        raise HTTPException(
            422,
            f"target_prefix: expected a list of {len(text)} (one per text, null for none), "
            "as text is a list; got a string",
        )
    if isinstance(given, str):
        return (given,)
    if len(given) != len(text):
        raise HTTPException(
            422,
            f"target_prefix: expected a list of {len(text)} (one per text, null for none); "
            f"got {len(given)}",
        )
    return tuple(given)


def _shown(number: int) -> str:
    """An integer for an error message; a huge one by its number of digits."""
    return str(number) if abs(number) < 10**20 else f"<a {len(str(abs(number)))}-digit number>"


def create_app(served: ServedModel, settings: ServeSettings | None = None) -> FastAPI:
    """The service's ASGI app; its lifespan starts and stops the batcher's worker thread."""
    settings = settings or ServeSettings()
    translator = served.translator
    default_beam = min(settings.beam_size or translator.defaults.beam_size, settings.max_beam)
    batcher = make_batcher(served, settings)
    info = {
        **served.info,
        "server": {
            **asdict(settings),
            "beam_size": default_beam,
            "threads": (
                translator.threads
                if isinstance(translator, ExportTranslator)
                else torch.get_num_threads()
            ),
        },
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(batcher.start)
        if isinstance(batcher, ModelProcess | ModelPool):  # what the model processes really run on
            info.update(device=batcher.facts["device"], precision=batcher.facts["precision"])
            info["server"]["threads"] = batcher.facts["threads"]
        yield
        await asyncio.to_thread(batcher.close, CLOSE_S)
        if isinstance(batcher, InlineBatcher):
            await batcher.drain(CLOSE_S)

    app = FastAPI(
        title="mtkit translation service",
        version=mtkit.__version__,
        lifespan=lifespan,
        description=f"{info['source_language']} → {info['target_language']} with "
        f"{', '.join(info['checkpoints'])}",
    )
    app.state.batcher = batcher
    app.state.info = info
    app.add_middleware(BodyLimit, max_bytes=body_limit(settings.max_chars))
    app.add_middleware(QuietOnClosed)  # outermost of ours: around the body limit too
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_translate_route(app, translator, batcher, settings, default_beam)
    _add_status_routes(app, batcher, info)
    return app


def make_batcher(served: ServedModel, settings: ServeSettings) -> Worker:
    """The worker that decodes: a thread beside the event loop, the event loop itself
    (greedy requests), a model process, or a pool of them."""
    if settings.inline:
        if not isinstance(served.translator, Translator):
            raise ValueError("the inline worker steps PyTorch's greedy stream: not for an export")
        return InlineBatcher(served.translator, settings.batch_wait_ms, settings.queue_size)
    if not settings.model_process:
        return Batcher(served.translator, settings.batch_wait_ms, settings.queue_size)
    if not served.checkpoints:
        raise ValueError("a model process needs the checkpoints the model was loaded from")
    spec = WorkerSpec(
        served.checkpoints,
        served.weights,
        served.device,
        served.precision,
        served.shortlist,
        settings.threads,
        settings.batch_wait_ms,
        settings.queue_size,
        served.export,
    )
    return ModelProcess(spec) if settings.workers == 1 else ModelPool(spec, settings.workers)


def _add_translate_route(
    app: FastAPI,
    translator: Translator | ExportTranslator,
    batcher: Worker,
    settings: ServeSettings,
    default_beam: int,
) -> None:
    """POST /v1/translate, and JSON answers for invalid requests and unexpected errors."""
    attending = translator if isinstance(translator, Translator) else None  # None: no attention
    with_attention = attending is not None

    @app.exception_handler(RequestValidationError)
    async def invalid(_: StarletteRequest, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(error.errors())}, 422)

    @app.exception_handler(Exception)
    async def internal_error(_: StarletteRequest, error: Exception) -> JSONResponse:
        # A bug, already logged by the worker: answer in JSON like every other error.
        return JSONResponse({"detail": f"internal error ({type(error).__name__})"}, 500)

    @app.post("/v1/translate", response_model=TranslateResponse)
    async def translate(body: TranslateBody) -> JSONResponse:
        """Translate a text or a list of texts; results come in input order."""
        request = check_request(body, settings, default_beam, attention=with_attention)
        results: list[list[Hypothesis]] = []
        if request.texts:
            try:  # a model process fails the future itself when its queue is full
                results = await asyncio.wrap_future(batcher.submit(request))
            except QueueFull:
                raise HTTPException(
                    503, "the server is busy; retry shortly", headers={"Retry-After": "1"}
                ) from None
            except WorkerDown as error:
                raise HTTPException(503, str(error), headers={"Retry-After": "1"}) from None
            except BadPrefix as error:
                raise HTTPException(422, str(error)) from None
            except BatcherClosed as error:
                raise HTTPException(503, str(error)) from None
            batcher.answered()
        translations = [
            translation_json(attending, text, hyps, request.attention)
            for text, hyps in zip(request.texts, results, strict=True)
        ]
        return JSONResponse(
            {"translations": translations, "beam_size": request.beam_size, "nbest": request.nbest}
        )


def _add_status_routes(app: FastAPI, batcher: Worker, info: dict[str, Any]) -> None:
    """GET /v1/model, /healthz and the web page at /."""

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """Languages, checkpoints, model settings, vocabulary, search defaults and limits."""
        return info

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """``ok`` while the worker serves, with its queue length and counters; else 503
        with ``restarting`` or ``stopped`` and why (``detail``)."""
        status, why = batcher.health
        peers = getattr(app.state, "peers", None)  # the other processes of --worker inline
        if status == "ok" and peers is not None:
            status, why = peers()
        body = {"status": status, "pid": os.getpid(), "queued": batcher.queued}
        body.update(asdict(batcher.stats))
        if why is not None:
            body["detail"] = why
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")
