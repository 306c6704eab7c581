"""Self-contained checkpoints: atomic writes, safe loads, clear errors.

A checkpoint is one file holding the model weights, the configuration needed at
inference (model sections, ``reverse_source``, search defaults), the sentencepiece
model(s) as bytes and, in ``last.pt``, the training state for an exact resume. Only
tensors and plain Python values are stored, so it loads with
``torch.load(weights_only=True)``: a file carrying pickled code is refused.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mtkit.config import DecodeConfig, ModelConfig, from_dict
from mtkit.errors import CheckpointError, ConfigError
from mtkit.model import Seq2Seq
from mtkit.tokenizer import TextCodec

FORMAT = "mtkit-checkpoint"
VERSION = 1


def build_payload(
    model: Seq2Seq,
    codec: TextCodec,
    decode: DecodeConfig,
    data: dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": asdict(model.cfg),
        "decode_config": asdict(decode),
        "data": data,
        "codec": codec.to_state(),
        "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if train_state is not None:
        payload["train_state"] = train_state
    return payload


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint; every way it can be wrong is a one-line error."""
    file = Path(path).expanduser()
    if not file.exists():
        raise CheckpointError(f"{file}: no such checkpoint file")
    if file.is_dir():
        raise CheckpointError(f"{file}: is a directory, not a checkpoint file")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            raise CheckpointError(
                f"{file}: refused: the file holds pickled code or objects, which mtkit never writes"
            ) from None
        raise CheckpointError(f"{file}: not a readable checkpoint ({_first_line(error)})") from None
    except Exception as error:  # torch.load fails in many ways on a damaged file
        raise CheckpointError(
            f"{file}: corrupt or truncated checkpoint ({_first_line(error)})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not an mtkit checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{file}: checkpoint format version {payload.get('version')} "
            f"is not supported (expected {VERSION})"
        )
    for key in ("model_config", "decode_config", "codec", "weights", "data"):
        if key not in payload:
            raise CheckpointError(f"{file}: incomplete mtkit checkpoint (no {key!r})")
    return payload


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def model_from_payload(payload: dict[str, Any], source: str) -> tuple[Seq2Seq, TextCodec]:
    """Rebuild the model (in eval mode) and its text codec from a loaded checkpoint."""
    try:
        model_cfg: ModelConfig = from_dict(ModelConfig, payload["model_config"])
    except ConfigError as error:
        raise CheckpointError(f"{source}: invalid model settings ({error})") from None
    codec = TextCodec.from_state(payload["codec"])
    output_ids = payload["weights"].get("output_ids")
    model = Seq2Seq(model_cfg, codec.src.vocab_size, codec.tgt.vocab_size, output_ids)
    try:
        model.load_state_dict(payload["weights"])
    except RuntimeError as error:
        details = "; ".join(line.strip() for line in str(error).splitlines()[1:3])
        raise CheckpointError(
            f"{source}: weights do not match the model settings ({details})"
        ) from None
    return model.eval(), codec


def decode_config_from_payload(payload: dict[str, Any]) -> DecodeConfig:
    return from_dict(DecodeConfig, payload["decode_config"])


def incompatible_settings(
    payload: dict[str, Any], model_cfg: ModelConfig, codec_state: dict[str, Any]
) -> list[str]:
    """Names of the settings where a checkpoint differs from the current run (for resume)."""
    differing = [
        f"model.{key}"
        for key, value in asdict(model_cfg).items()
        if payload["model_config"].get(key) != value
    ]
    saved = payload["codec"]
    if saved.get("src_model") != codec_state.get("src_model") or saved.get(
        "tgt_model"
    ) != codec_state.get("tgt_model"):
        differing.append("tokenizer (sentencepiece model)")
    if saved.get("reverse_source") != codec_state.get("reverse_source"):
        differing.append("data.reverse_source")
    return differing
