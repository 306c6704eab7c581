"""Fine-tuning (``train.init_from=CKPT``): a new run that starts from a trained model.

What fairseq's ``--finetune-from-model``, OpenNMT-py's ``train_from`` with
``reset_optim=all`` and Marian's ``--pretrained-model`` do: the checkpoint gives

- the **weights**, output vocabulary included (its output columns stay; pieces of the new
  targets outside them are learned as ``<unk>``, and the log says how many there are);
- the **sentencepiece models**, which encode the new data as they are, never retrained:
  they are written into the run directory (``init_from/src.model``, ``tgt.model``) and the
  run's ``tokenizer.model`` (or ``src_model``/``tgt_model``) points at them, so the saved
  ``config.yaml`` reproduces the run.

The optimizer, the learning-rate schedule, early stopping and the step count start
afresh (``train.resume`` is the way to continue a run instead). The model keys that
shape the weights must be the checkpoint's; a difference is one line naming the key.
Keys that shape no weight, such as ``model.dropout``, are the new run's.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mtkit.config import ModelConfig, RunConfig
from mtkit.corpus.tokenizer import UNK_ID, TextCodec
from mtkit.errors import CheckpointError, ConfigError
from mtkit.model.checkpoint import codec_from_payload, load_checkpoint
from mtkit.model.seq2seq import Seq2Seq

log = logging.getLogger("mtkit")

# ModelConfig keys that decide the weights' shapes or meaning: a fine-tuned run keeps them.
SHAPE_KEYS = (
    "cell", "peepholes", "embed_dim", "encoder_hidden", "decoder_hidden", "layers",
    "decoder_layers", "bidirectional", "attention", "input_feed", "bridge", "tie_embeddings",
    "output_vocab",
)  # fmt: skip
FOLDER = "init_from"


def start_from_checkpoint(run: RunConfig, run_dir: Path) -> tuple[RunConfig, dict[str, Any]]:
    """Check ``train.init_from`` against the run; return the run with its tokenizer keys
    set to the checkpoint's sentencepiece models (written into ``run_dir``), and the
    loaded checkpoint."""
    source = f"train.init_from={run.train.init_from}"
    try:
        payload = load_checkpoint(str(run.train.init_from))
    except CheckpointError as error:
        raise CheckpointError(f"train.init_from: {error}") from None
    check_compatible(payload, run, source)
    codec = codec_from_payload(payload, source)
    return replace(run, tokenizer=_tokenizer_files(run, codec, run_dir / FOLDER)), payload


def check_compatible(payload: dict[str, Any], run: RunConfig, source: str) -> None:
    """One line for the first setting that cannot work with the checkpoint's weights."""
    defaults = {f.name: f.default for f in fields(ModelConfig)}
    saved = payload["model_config"]
    for key in SHAPE_KEYS:
        mine, theirs = getattr(run.model, key), saved.get(key, defaults[key])
        if mine != theirs:
            raise ConfigError(
                f"model.{key}={mine!r} does not match {source}, which has {key}={theirs!r}; "
                f"set model.{key}={theirs!r} (a fine-tuned model keeps the checkpoint's shape)"
            )
    for key in ("pretrained_src_embeddings", "pretrained_tgt_embeddings"):
        if getattr(run.model, key):
            raise ConfigError(
                f"model.{key} is not valid with {source}: the checkpoint's embeddings are "
                f"used; set model.{key}=null"
            )
    reverse = bool(payload["codec"].get("reverse_source"))
    if run.data.reverse_source != reverse:
        raise ConfigError(
            f"data.reverse_source={run.data.reverse_source} does not match {source}, which "
            f"was trained with data.reverse_source={reverse}; set data.reverse_source={reverse}"
        )
    if run.tokenizer.given_models is not None:
        raise ConfigError(
            f"tokenizer.model / src_model / tgt_model are not valid with {source}: the "
            "checkpoint's sentencepiece models encode the data; leave them null"
        )


def _tokenizer_files(run: RunConfig, codec: TextCodec, folder: Path) -> Any:
    """The tokenizer config pointing at the codec's models, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    src = _write(folder / "src.model", codec.src.model_bytes)
    if codec.joint:
        return replace(run.tokenizer, model=str(src))
    tgt = _write(folder / "tgt.model", codec.tgt.model_bytes)
    return replace(run.tokenizer, src_model=str(src), tgt_model=str(tgt))


def _write(path: Path, data: bytes) -> Path:
    """Atomically (every process of a run writes the same bytes)."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def initial_model(
    payload: dict[str, Any], run: RunConfig, codec: TextCodec, target_ids: np.ndarray
) -> Seq2Seq:
    """The run's model (its ``model`` keys) holding the checkpoint's weights.

    ``target_ids`` are the new training targets' ids: the share of them outside the
    checkpoint's output vocabulary is logged, since they are learned as ``<unk>``.
    """
    source = f"train.init_from={run.train.init_from}"
    weights = payload["weights"]
    output_ids = weights.get("output_ids")
    model = Seq2Seq(run.model, codec.src.vocab_size, codec.tgt.vocab_size, output_ids)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        details = "; ".join(line.strip() for line in str(error).splitlines()[1:3])
        raise CheckpointError(f"{source}: weights do not fit the model ({details})") from None
    outside = ~np.isin(target_ids, model.output_ids.numpy()) & (target_ids != UNK_ID)
    log.info(
        "initialised from %s (fresh optimizer, schedule and step count): %d output columns; "
        "%.2f%% of the new training target pieces are outside them and count as <unk>",
        run.train.init_from,
        len(model.output_ids),
        100.0 * float(outside.mean()) if len(target_ids) else 0.0,
    )
    return model
