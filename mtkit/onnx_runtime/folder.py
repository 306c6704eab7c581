"""An export folder, checked and opened: ``model.json``, the graphs, the sentencepiece models.

:func:`open_export` reads ``model.json`` (its format and version first), opens each
member's encoder and step graphs in onnxruntime and checks that their inputs and
outputs are the ones ``model.json``'s architecture implies. A missing or corrupt file,
another format version or graphs that do not match are one-line CheckpointErrors that
name the file.

:class:`ExportedModel` is the step protocol of :mod:`mtkit.search` over numpy arrays:
``encode(src, lengths)``, ``init_state(enc)``, ``step(prev_ids, state, enc)`` and
``output_ids``. An encoding and a state are one dict of arrays per member, reordered by
:func:`select`; an ensemble's step is the weighted mean of its members' log-probs, as
:class:`mtkit.search.ensemble.Ensemble` computes it. Shapes: B batch (rows), S source
length, L layers, H hidden, M output columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mtkit.errors import CheckpointError, ConfigError
from mtkit.onnx_runtime.codec import Codec

FORMAT = "mtkit-onnx"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "int8")
# The batch axis of each array of an encoding or a state; every other array has it first.
BATCH_AXIS = {"hidden": 1, "cell": 1}

Arrays = dict[str, np.ndarray]


def select(members: list[Arrays], rows: np.ndarray) -> list[Arrays]:
    """Rows ``rows`` (picked or repeated) of every member's arrays."""
    return [
        {name: np.take(value, rows, axis=BATCH_AXIS.get(name, 0)) for name, value in m.items()}
        for m in members
    ]


@dataclass
class Member:
    """One model of the export: its two graphs and its ensemble weight."""

    encoder: ort.InferenceSession
    step: ort.InferenceSession
    weight: float
    step_inputs: list[str]
    attends: bool


class ExportedModel:
    """The models of an export folder with its codec, decode defaults and output columns."""

    def __init__(self, folder: Path, meta: dict[str, Any], members: list[Member]) -> None:
        self.folder = folder
        self.meta = meta
        self.members = members
        self.output_ids = np.asarray(meta["output_ids"], dtype=np.int64)  # (M,) sorted
        sp = meta["sentencepiece"]
        self.codec = Codec(folder / sp["source"], folder / sp["target"], meta["reverse_source"])
        self.decode: dict[str, Any] = dict(meta["decode"])
        self.train_max_len: int | None = meta.get("train_max_len")

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> list[Arrays]:
        """Source ids (B, S) int64 ending in EOS and lengths (B,) -> one encoding per member:
        states, keys, the source mask (B, S), and the decoder's start state."""
        mask = np.arange(src.shape[1])[None, :] < lengths[:, None]  # (B, S)
        encodings = []
        for member in self.members:
            names = [o.name for o in member.encoder.get_outputs()]
            values = member.encoder.run(None, {"src": src, "lengths": lengths})
            encodings.append({**dict(zip(names, values, strict=True)), "mask": mask})
        return encodings

    def step(
        self, prev_ids: np.ndarray, state: list[Arrays], enc: list[Arrays]
    ) -> tuple[np.ndarray, list[Arrays]]:
        """Previous ids (B,) -> (log-probs (B, M) fp32, the new state)."""
        log_probs: np.ndarray | None = None
        states = []
        for member, member_state, member_enc in zip(self.members, state, enc, strict=True):
            feeds = {"prev_ids": prev_ids}
            for name in member.step_inputs[1:]:
                feeds[name] = member_state[name] if name in member_state else member_enc[name]
            outputs = member.step.run(None, feeds)
            lp = outputs[0] if len(self.members) == 1 else outputs[0] * np.float32(member.weight)
            log_probs = lp if log_probs is None else log_probs + lp
            names = [n for n in member.step_inputs[1:] if n in ("hidden", "cell", "feed")]
            states.append(dict(zip(names, outputs[1 : 1 + len(names)], strict=True)))
        assert log_probs is not None
        return log_probs, states

    def init_state(self, enc: list[Arrays]) -> list[Arrays]:
        """The decoder's start state of each member, as its encoder gave it."""
        return [{k: v for k, v in e.items() if k in ("hidden", "cell", "feed")} for e in enc]


def read_meta(folder: Path) -> dict[str, Any]:
    """``model.json``, with its format and version checked."""
    path = folder / "model.json"
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such export folder (written by mtkit-export)")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is {folder} an export folder of mtkit-export?")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mtkit ONNX export (format != {FORMAT!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {meta.get('version')!r}; this runtime reads version "
            f"{FORMAT_VERSION} (export the checkpoint again with this mtkit)"
        )
    missing = [k for k in ("output_ids", "members", "decode", "sentencepiece") if k not in meta]
    if missing or "reverse_source" not in meta:
        raise CheckpointError(f"{path}: damaged (missing {', '.join(missing) or 'reverse_source'})")
    return meta


def open_export(folder: str | Path, precision: str = "fp32", threads: int = 1) -> ExportedModel:
    """The export in ``folder``, its graphs opened on ``threads`` threads each; with
    ``precision="int8"``, the int8 step graphs (``mtkit-export --int8``)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}; expected fp32 or int8")
    root = Path(folder).expanduser()
    meta = read_meta(root)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    columns = len(meta["output_ids"])
    members = [_open_member(root, m, precision, options, columns) for m in meta["members"]]
    return ExportedModel(root, meta, members)


def _open_member(
    root: Path, entry: dict[str, Any], precision: str, options: ort.SessionOptions, columns: int
) -> Member:
    """One member's sessions, their inputs and outputs checked against its architecture."""
    arch = entry["architecture"]
    step_key = "step_int8" if precision == "int8" else "step"
    if step_key not in entry:
        raise CheckpointError(f"{root}: no int8 step graph; export with mtkit-export --int8")
    encoder = _session(root / entry["encoder"], options)
    step = _session(root / entry[step_key], options)
    state = ["hidden"] + ["cell"] * (arch["cell"] == "lstm")
    attends = arch["attention"] != "none"
    if arch["attention"].startswith("luong") and arch["input_feed"]:
        state.append("feed")
    enc_outputs = ["states"] + ["keys"] * attends + state
    step_inputs = ["prev_ids", *state] + ["states", "keys", "mask"] * attends
    step_outputs = ["log_probs"] + [f"new_{n}" for n in state] + ["attention"] * attends
    _expect(encoder, root / entry["encoder"], ["src", "lengths"], enc_outputs)
    _expect(step, root / entry[step_key], step_inputs, step_outputs)
    _same_sizes(encoder, step, root / entry[step_key], columns)
    return Member(encoder, step, float(entry["weight"]), step_inputs, attends)


def _session(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing graph file of the export")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path}: not a loadable ONNX graph ({first})") from None


def _expect(
    session: ort.InferenceSession, path: Path, inputs: list[str], outputs: list[str]
) -> None:
    """The graph's input and output names are those ``model.json`` implies."""
    got_in = [i.name for i in session.get_inputs()]
    got_out = [o.name for o in session.get_outputs()]
    if got_in != inputs or got_out != outputs:
        raise CheckpointError(
            f"{path}: does not match model.json (inputs {got_in}, outputs {got_out}; "
            f"expected {inputs} -> {outputs}); the folder mixes graphs of different models"
        )


def _same_sizes(
    encoder: ort.InferenceSession, step: ort.InferenceSession, path: Path, columns: int
) -> None:
    """The step reads what the encoder writes (the fixed sizes of each array) and scores
    the ``columns`` output columns of ``model.json``."""
    written = {o.name: o.shape for o in encoder.get_outputs()}
    for item in step.get_inputs():
        fixed = [(i, d) for i, d in enumerate(item.shape) if isinstance(d, int)]
        theirs = written.get(item.name)
        if theirs is not None and any(theirs[i] != d for i, d in fixed if i < len(theirs)):
            raise CheckpointError(
                f"{path}: its input {item.name} {item.shape} does not match the encoder's "
                f"{theirs}; the folder mixes graphs of different models"
            )
    scored = step.get_outputs()[0].shape[-1]
    if isinstance(scored, int) and scored != columns:
        raise CheckpointError(
            f"{path}: scores {scored} output columns, model.json lists {columns}; "
            "the folder mixes graphs of different models"
        )
