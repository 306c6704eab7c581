"""Writing an export folder: the graphs of every member, the sentencepiece models and
``model.json``, which together are all the ONNX runtime (:mod:`mtkit.onnx_runtime`) reads.

The folder is built under a temporary name beside the target and renamed into place
once complete and checked (``onnx.checker``), so an error or a stop never leaves half an
export, and an existing folder is never written into. Graphs come from the dynamo
exporter (``torch.onnx.export(..., dynamo=True)``) at a fixed opset, with dynamic batch
and source-length axes (:mod:`mtkit.export.graphs` says what each graph computes).

``model.json`` holds what decoding needs beside the graphs: the format version, each
member's architecture and graph files and ensemble weight, the special ids, the
output-column -> token-id map, the reverse-source flag, the decode defaults and the
training length limit (the output cap). :data:`FORMAT_VERSION` changes whenever a
runtime of an older version could misread a new folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mtkit import __version__
from mtkit.corpus.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from mtkit.errors import CheckpointError, ConfigError, DataError
from mtkit.export.graphs import EncoderGraph, StepGraph
from mtkit.model.seq2seq import Seq2Seq
from mtkit.search.ensemble import Ensemble
from mtkit.search.load import LoadedModel

FORMAT = "mtkit-onnx"
FORMAT_VERSION = 1
OPSET = 18
# Example sizes the graphs are traced at; the batch and length axes stay dynamic (sizes
# 0 and 1 would be specialised by torch.export, so these are larger).
EXAMPLE_BATCH, EXAMPLE_LENGTH = 3, 7
# Search options the runtime implements: a checkpoint whose defaults need another one
# (coverage penalty, n-gram blocking) exports with them switched off and says so.
UNSUPPORTED_DEFAULTS = {"coverage_penalty": 0.0, "no_repeat_ngram": 0}

log = logging.getLogger(__name__)


def member_files(count: int) -> list[dict[str, str]]:
    """Graph file names: ``encoder.onnx``/``step.onnx``, numbered for an ensemble."""
    if count == 1:
        return [{"encoder": "encoder.onnx", "step": "step.onnx"}]
    return [{"encoder": f"encoder.{i}.onnx", "step": f"step.{i}.onnx"} for i in range(count)]


def export_loaded(loaded: LoadedModel, target: Path, int8: bool = False) -> Path:
    """Export a model loaded in fp32 (one checkpoint or an ensemble) to the new folder
    ``target``; with ``int8``, also each member's int8 step graph
    (:mod:`mtkit.export.int8`). Returns ``target``."""
    if loaded.precision != "fp32":
        raise ConfigError(f"export needs the fp32 model, not {loaded.precision}")
    members, weights = _members(loaded.model)
    with _building(target) as folder:
        files = member_files(len(members))
        for model, names in zip(members, files, strict=True):
            export_encoder(model, folder / names["encoder"])
            export_step(model, folder / names["step"])
            if int8:
                from mtkit.export.int8 import quantize_step  # onnxruntime: only when asked

                names["step_int8"] = names["step"].replace(".onnx", ".int8.onnx")
                quantize_step(folder / names["step"], folder / names["step_int8"])
        (folder / "source.model").write_bytes(loaded.codec.src.model_bytes)
        (folder / "target.model").write_bytes(loaded.codec.tgt.model_bytes)
        description = describe(loaded, members, weights, files)
        (folder / "model.json").write_text(json.dumps(description, indent=2) + "\n")
    return target


def _members(model: torch.nn.Module) -> tuple[list[Seq2Seq], list[float]]:
    """The Seq2Seq models to export and their ensemble weights (summing to 1)."""
    if isinstance(model, Ensemble):
        return [m for m in model.members if isinstance(m, Seq2Seq)], list(model.weights)
    if isinstance(model, Seq2Seq):
        return [model], [1.0]
    raise ConfigError(f"cannot export a {type(model).__name__} (a shortlisted model?)")


def describe(
    loaded: LoadedModel,
    members: Sequence[Seq2Seq],
    weights: Sequence[float],
    files: Sequence[dict[str, str]],
) -> dict[str, Any]:
    """The content of ``model.json`` (module docstring)."""
    decode = asdict(loaded.defaults)
    for key, off in UNSUPPORTED_DEFAULTS.items():
        if decode.get(key, off) != off:
            log.warning("decode.%s=%s is not supported by the ONNX runtime: exported as %s",
                        key, decode[key], off)  # fmt: skip
            decode[key] = off
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "mtkit_version": __version__,
        "opset": OPSET,
        "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID},
        "output_ids": members[0].output_ids.tolist(),
        "reverse_source": loaded.codec.reverse_source,
        "sentencepiece": {"source": "source.model", "target": "target.model"},
        "decode": decode,
        "train_max_len": loaded.train_max_len,
        "members": [
            {**names, "weight": weight, "architecture": asdict(model.cfg)}
            for model, weight, names in zip(members, weights, files, strict=True)
        ],
    }


@contextlib.contextmanager
def _building(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target``, renamed to it once the block succeeds."""
    if target.exists():
        raise DataError(f"{target}: already exists; exports go to a new folder (-o)")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    except OSError as error:
        raise DataError(f"{target}: cannot create the export folder ({error.strerror})") from None
    try:
        yield folder
        os.chmod(folder, 0o755)
        os.rename(folder, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def export_encoder(model: Seq2Seq, path: Path) -> None:
    """``encoder.onnx``: source ids (B, S) and lengths (B,) -> :class:`EncoderGraph`'s outputs."""
    graph = EncoderGraph(model).eval()
    src = torch.full((EXAMPLE_BATCH, EXAMPLE_LENGTH), 4, dtype=torch.long)
    lengths = torch.full((EXAMPLE_BATCH,), EXAMPLE_LENGTH, dtype=torch.long)
    batch, length = _dims()
    shapes = {"src": {0: batch, 1: length}, "lengths": {0: batch}}
    _export(graph, (src, lengths), shapes, ["src", "lengths"], graph.outputs, path)


def export_step(model: Seq2Seq, path: Path) -> None:
    """``step.onnx``: one :meth:`Seq2Seq.step` (:class:`StepGraph`)."""
    graph = StepGraph(model).eval()
    b, s = EXAMPLE_BATCH, EXAMPLE_LENGTH
    layers, hidden = model.decoder.layers, model.decoder.hidden_size
    enc_dim = model.cfg.encoder_output_dim
    examples = {
        "prev_ids": torch.full((b,), BOS_ID, dtype=torch.long),
        "hidden": torch.zeros(layers, b, hidden),
        "cell": torch.zeros(layers, b, hidden),
        "feed": torch.zeros(b, hidden),
        "states": torch.zeros(b, s, enc_dim),
        "mask": torch.ones(b, s, dtype=torch.bool),
    }
    with torch.no_grad():
        examples["keys"] = _keys(model, examples["states"])
    batch, length = _dims()
    axes = {"hidden": {1: batch}, "cell": {1: batch}, "states": {0: batch, 1: length}}
    axes |= {"keys": {0: batch, 1: length}, "mask": {0: batch, 1: length}}
    names = graph.input_names
    args = tuple(examples[name] for name in names)
    shapes = (axes.get(names[0], {0: batch}), tuple(axes.get(n, {0: batch}) for n in names[1:]))
    _export(graph, args, shapes, names, graph.output_names, path)


def _keys(model: Seq2Seq, states: torch.Tensor) -> torch.Tensor:
    """Example attention keys (B, S, Q) for encoder states (B, S, D)."""
    attention = model.decoder.attention
    return states if attention is None else attention.prepare(states)


def _dims() -> tuple[Any, Any]:
    return torch.export.Dim("batch", min=1), torch.export.Dim("source", min=1)


def _export(
    graph: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    shapes: Any,
    inputs: list[str],
    outputs: list[str],
    path: Path,
) -> None:
    """``torch.onnx.export`` (dynamo) into ``path``, checked; a failure is one line."""
    import onnx

    what = f"{path.name} ({type(graph).__name__})"
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                graph,
                args,
                dynamic_shapes=shapes,
                input_names=inputs,
                output_names=outputs,
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            assert program is not None
            program.save(str(path))
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:  # the exporter raises many kinds; the first line says which
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"cannot export {what}: {first}") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress prints and warnings, kept off the command's stderr."""
    sink = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
