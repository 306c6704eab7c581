"""What the service serves and how: its model, loaded with :func:`mtkit.search.load.load`
(or an ONNX export folder, opened with :mod:`mtkit.serve.onnx`), the description
``GET /v1/model`` gives of it, and the settings of the command line.

Every process of the service that decodes loads its model here: the HTTP process (for a
worker thread or the inline worker), each model process (:mod:`mtkit.serve.process`)
and each process of ``--worker inline --workers N`` (:mod:`mtkit.serve.listeners`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch

import mtkit
from mtkit.model.seq2seq import Seq2Seq
from mtkit.runtime import tune_process
from mtkit.search.ensemble import Ensemble
from mtkit.search.load import LoadedModel, load
from mtkit.search.quantize import parameter_count
from mtkit.search.translator import Translator
from mtkit.serve.export import is_export
from mtkit.serve.onnx import ExportTranslator


@dataclass
class ServeSettings:
    """Limits and defaults of the service (the command line's options)."""

    beam_size: int | None = None  # default for requests; None: the checkpoint's
    max_beam: int = 16
    max_lines: int = 100
    max_chars: int = 20000  # characters over all texts of one request
    queue_size: int = 256  # requests waiting for the worker
    batch_wait_ms: float = 3.0
    model_process: bool = False  # decode in a child process (the command line's default)
    inline: bool = False  # decode greedy requests on the event loop's thread (InlineBatcher)
    threads: int = 1  # torch threads of each model process
    workers: int = 1  # model processes (each with its own greedy stream)


@dataclass
class ServedModel:
    """A Translator and what ``GET /v1/model`` says about it, with what it was loaded
    from (a model process loads the same checkpoints itself). ``export``: the one path
    is an ONNX export folder, and ``translator`` an :class:`ExportTranslator`."""

    translator: Translator | ExportTranslator
    info: dict[str, Any]
    checkpoints: tuple[str, ...] = ()
    weights: tuple[float, ...] | None = None
    device: str = "cpu"
    precision: str = "fp32"
    shortlist: bool = False
    export: bool = False


def load_model(
    paths: Sequence[str | Path],
    weights: Sequence[float] | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    shortlist: bool = False,
) -> ServedModel:
    """One checkpoint as a plain model, several as an ensemble, with their description.

    ``shortlist``: decode one checkpoint through its lexical shortlist (a one-line error
    for an ensemble, or a checkpoint that holds none).
    """
    weighted = None if weights is None else tuple(weights)
    loaded = load(list(paths), weighted, precision, shortlist, device)
    return ServedModel(
        Translator.of(loaded),
        model_info(loaded, [Path(p).name for p in paths]),
        tuple(str(p) for p in paths),
        weighted,
        device,
        precision,
        shortlist,
    )


def load_export(folder: str | Path, precision: str = "fp32", threads: int = 1) -> ServedModel:
    """An ONNX export folder, decoded by onnxruntime on ``threads`` threads per graph."""
    translator = ExportTranslator.open(folder, precision, threads)
    name = Path(folder).expanduser().resolve().name
    return ServedModel(
        translator, translator.info(name), (str(folder),), None, "cpu", precision, export=True
    )


def model_info(loaded: LoadedModel, names: list[str]) -> dict[str, Any]:
    """Languages, models, vocabulary, search defaults and training data of a loaded model."""
    model = loaded.model
    shortlisted = hasattr(model, "shortlist")  # a Shortlisted wrapper around one Seq2Seq
    plain = cast(torch.nn.Module, model.model) if shortlisted else model
    members = [
        cast(Seq2Seq, member)
        for member in (plain.members if isinstance(plain, Ensemble) else [plain])
    ]
    codec, data = loaded.codec, loaded.data
    return {
        "mtkit_version": mtkit.__version__,
        "backend": "torch",
        "source_language": data[0].get("src_lang"),
        "target_language": data[0].get("tgt_lang"),
        "checkpoints": names,
        "ensemble_weights": list(model.weights) if isinstance(model, Ensemble) else None,
        "parameters": parameter_count(model),
        "models": [asdict(member.cfg) for member in members],
        "vocabulary": {
            "source": codec.src.vocab_size,
            "target": codec.tgt.vocab_size,
            "output": len(members[0].output_ids),
            "joint": codec.joint,
            "reverse_source": codec.reverse_source,
            "shortlist": shortlisted,
        },
        "decoding": asdict(loaded.defaults),
        "training_data": data,
        "device": str(loaded.device),
        "precision": loaded.precision,
    }


def default_threads(workers: int = 1, inline: bool = False) -> int:
    """Torch threads for each worker: every core but one, which the HTTP event loop needs,
    or with ``inline`` (the loop and the model take turns on one thread) the cores shared
    out among the ``workers`` processes.

    Torch's OpenMP threads spin while they wait for work, so with one per core they
    fight the event loop thread (which parses requests and sends answers while the
    worker decodes) for the CPU instead of leaving it a core.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if inline:
        return max(1, (cores or 1) // workers)
    return max(1, (cores or 1) - 1)


def served_model(args: argparse.Namespace) -> tuple[ServedModel, ServeSettings]:
    """The command line's model and settings (``mtkit-serve``'s options).

    With a model process, this process loads the model on the CPU with one thread: it
    then needs only its vocabulary and description, and the model process decodes.
    """
    threads = args.threads or default_threads(args.workers or 1, args.worker == "inline")
    in_process = args.worker == "process"
    torch.set_num_threads(1 if in_process else threads)
    tune_process()
    device = "cpu" if in_process else args.device
    if is_export(args.checkpoints[0]):  # alone, with options it suits (mtkit.serve.__main__)
        served = load_export(args.checkpoints[0], args.precision, 1 if in_process else threads)
        device = "cpu"
    else:
        served = load_model(args.checkpoints, args.weights, device, args.precision, args.shortlist)
        device = args.device
    settings = ServeSettings(
        beam_size=args.beam_size,
        max_beam=args.max_beam,
        max_lines=args.max_lines,
        max_chars=args.max_chars,
        queue_size=args.queue_size,
        batch_wait_ms=args.batch_wait_ms,
        model_process=in_process,
        inline=args.worker == "inline",
        threads=threads,
        workers=args.workers or 1,
    )
    return replace(served, device=device), settings
