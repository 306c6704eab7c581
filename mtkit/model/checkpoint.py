"""Self-contained checkpoints: atomic writes, safe loads, clear errors.

A checkpoint is one file holding the model weights, the configuration needed at
inference (the model section, search defaults, languages and length limit), the
sentencepiece model(s) as bytes with the source processing (``reverse_source``) and, in
``last.pt``, the training state for an exact resume. Only tensors and plain Python
values are stored, so it loads with ``torch.load(weights_only=True)``: a file carrying
pickled code is refused. This module is the only place that builds or reads one.
"""

from __future__ import annotations

import io
import pickle
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mtkit.config import DecodeConfig, ModelConfig, RunConfig, from_dict
from mtkit.config.paths import output_target, write_atomically
from mtkit.corpus.tokenizer import TextCodec
from mtkit.errors import CheckpointError, ConfigError, DataError
from mtkit.model.seq2seq import Seq2Seq

FORMAT = "mtkit-checkpoint"
VERSION = 1
STEP_FILE = re.compile(r"step-(\d+)\.pt")
_REQUIRED = ("model_config", "decode_config", "codec", "weights", "data")


def build_payload(
    model: Seq2Seq,
    codec: TextCodec,
    run: RunConfig,
    train_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything inference needs (and, with ``train_state``, everything resume needs)."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": asdict(model.cfg),
        "decode_config": asdict(run.decode),
        "data": {
            "src_lang": run.data.src_lang,
            "tgt_lang": run.data.tgt_lang,
            "max_len": run.data.max_len,
        },
        "codec": codec.to_state(),
        "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if train_state is not None:
        payload["train_state"] = train_state
    return payload


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` through the one output helper
    (:func:`mtkit.config.paths.write_atomically`): a temp file in the same folder, synced,
    then renamed over ``path``, which must be a regular file or a new name (a folder, a
    device or a pipe there is refused, never replaced).

    The payload is serialized in memory first, so a full disk is reported as such (torch's
    own writer turns it into an unrelated message). A failed write leaves the previous
    file as it was and is a one-line CheckpointError.
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(output_target(path), lambda stream: stream.write(buffer.getbuffer()))
    except OSError as error:
        raise CheckpointError(f"{path}: cannot write ({error.strerror or error})") from None
    except DataError as error:
        raise CheckpointError(str(error)) from None


def step_file_name(step: int) -> str:
    """The name of the checkpoint kept for averaging at a validation step."""
    return f"step-{step:06d}.pt"


def prune_step_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete the oldest ``step-XXXXXX.pt`` files so that ``keep`` remain."""
    for old in step_checkpoints(run_dir)[:-keep] if keep > 0 else step_checkpoints(run_dir):
        old.unlink(missing_ok=True)


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The run's ``step-XXXXXX.pt`` files, oldest step first."""
    found = [
        (int(m.group(1)), p)
        for p in run_dir.glob("step-*.pt")
        if (m := STEP_FILE.fullmatch(p.name))
    ]
    return [p for _, p in sorted(found)]


def remove_stale_temp_files(run_dir: Path) -> int:
    """Delete temp files left by a save that was killed (``.NAME.pt.XXXX.tmp``)."""
    removed = 0
    for temp in run_dir.glob(".*.pt.*.tmp"):
        temp.unlink(missing_ok=True)
        removed += 1
    return removed


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
    for key in _REQUIRED:
        if key not in payload:
            raise CheckpointError(f"{file}: incomplete mtkit checkpoint (no {key!r})")
    return payload


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def codec_from_payload(payload: dict[str, Any], source: str) -> TextCodec:
    """The checkpoint's text codec; damaged sentencepiece bytes are a CheckpointError."""
    state = payload["codec"]
    if not isinstance(state, dict) or not isinstance(state.get("src_model"), bytes):
        raise CheckpointError(f"{source}: damaged checkpoint (its 'codec' entry is not valid)")
    try:
        return TextCodec.from_state(state)
    except Exception as error:  # sentencepiece raises RuntimeError/TypeError/OSError
        raise CheckpointError(
            f"{source}: damaged checkpoint (its sentencepiece model does not load: "
            f"{_first_line(error)})"
        ) from None


def model_from_payload(payload: dict[str, Any], source: str) -> tuple[Seq2Seq, TextCodec]:
    """Rebuild the model (in eval mode) and its text codec from a loaded checkpoint."""
    try:
        model_cfg: ModelConfig = from_dict(ModelConfig, payload["model_config"])
    except ConfigError as error:
        raise CheckpointError(f"{source}: invalid model settings ({error})") from None
    codec = codec_from_payload(payload, source)
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


def load_model(path: str | Path) -> tuple[Seq2Seq, TextCodec, dict[str, Any]]:
    """Model (eval mode), codec and the payload itself, from a checkpoint file."""
    payload = load_checkpoint(path)
    model, codec = model_from_payload(payload, str(path))
    return model, codec, payload


def decode_config_from_payload(payload: dict[str, Any], source: str = "checkpoint") -> DecodeConfig:
    try:
        return from_dict(DecodeConfig, payload["decode_config"])
    except ConfigError as error:
        raise CheckpointError(f"{source}: invalid search settings ({error})") from None


# -- training state (last.pt) ------------------------------------------------------------------


def training_state(
    optimizer: torch.optim.Optimizer,
    schedules: dict[str, Any],
    progress: dict[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """What an exact resume needs: optimizer, schedules (``state_dict`` objects), progress, RNG."""
    return {
        "optimizer": optimizer.state_dict(),
        **{name: schedule.state_dict() for name, schedule in schedules.items()},
        "progress": progress,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def restore_training(
    path: str | Path,
    model: Seq2Seq,
    codec: TextCodec,
    optimizer: torch.optim.Optimizer,
    schedules: dict[str, Any],
) -> dict[str, Any]:
    """Load ``last.pt`` into the model, optimizer and schedules; return its training state.

    The checkpoint must match the current run's model and text processing. The returned
    dict still holds ``progress`` and the RNG states, which the trainer applies per rank.
    """
    payload = load_checkpoint(path)
    state = payload.get("train_state")
    if state is None:
        raise CheckpointError(f"{path}: holds no training state (resume from last.pt, not best.pt)")
    differing = incompatible_settings(payload, model.cfg, codec.to_state())
    if differing:
        raise CheckpointError(
            f"{path}: cannot resume, settings differ from this run: {', '.join(differing)}"
        )
    model.load_state_dict(payload["weights"])
    optimizer.load_state_dict(state["optimizer"])
    old = state["progress"]  # written before early stopping had its own state: it was here
    legacy = {
        "early_stopping": {
            "best": old.get("best_metric"),
            "bad_validations": old.get("bad_validations"),
        }
    }
    for name, schedule in schedules.items():
        schedule.load_state_dict(state.get(name) or legacy[name])
    return state


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
