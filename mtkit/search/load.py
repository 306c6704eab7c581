"""Loading a model for decoding: one checkpoint or an ensemble, at a precision, on a device.

:func:`load` is the one way checkpoints become something to decode with: the
:class:`~mtkit.search.translator.Translator`, the decoding pool's helper processes
(:mod:`mtkit.search.pool`, which are sent a :class:`LoadSpec`), the translate and evaluate
commands and the service all call it. It returns a :class:`LoadedModel`: the model
prepared for its precision (:func:`prepare`) with what search needs beside it, the
codec, the checkpoint's search defaults and its training length limit.

Precision copies. ``bf16`` decodes a bf16 copy (inference needs no fp32 master weights,
and the copy saves autocast's per-step casts); ``int8`` decodes a copy whose step
products run in int8 (:mod:`mtkit.search.quantize`, CPU only). A model given in memory
(one being trained, for validation) is copied, never changed, for either; in fp32 it is
used as it is.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mtkit.config import DecodeConfig, SearchOptions
from mtkit.corpus.batching import pad_sequences
from mtkit.corpus.tokenizer import TextCodec
from mtkit.errors import ConfigError
from mtkit.model.checkpoint import decode_config_from_payload, load_checkpoint, model_from_payload
from mtkit.runtime import resolve_device
from mtkit.search.beam import beam_search
from mtkit.search.ensemble import load_ensemble
from mtkit.search.greedy import greedy_search
from mtkit.search.hypothesis import Hypothesis, StepModel
from mtkit.search.quantize import check_int8, quantize_for_inference
from mtkit.search.spec import LoadSpec, check_model_options

__all__ = ["LoadSpec", "LoadedModel", "load", "load_spec", "prepare"]

CheckpointPaths = str | Path | Sequence[str | Path]


@dataclass
class LoadedModel:
    """A model ready to decode, with what search needs beside it.

    ``model`` is a Seq2Seq, an Ensemble or a Shortlisted one, already on ``device``, in
    eval mode and at ``precision``; ``data`` holds each checkpoint's ``data`` section
    (languages, length limit), empty for a model given in memory.
    """

    model: nn.Module
    codec: TextCodec
    defaults: DecodeConfig
    device: torch.device
    precision: str
    train_max_len: int | None = None  # the longest training sentence, in subwords
    data: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stepper(self) -> StepModel:
        """The model as search sees it (encode, init_state, step)."""
        return cast(StepModel, self.model)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """``torch.inference_mode``, without cuDNN's note about non-contiguous bf16 RNN
        weights (PyTorch packs only fp16/fp32/fp64 weights for cuDNN; the bf16 copy is
        still the faster choice)."""
        with torch.inference_mode(), warnings.catch_warnings():
            if self.dtype == torch.bfloat16:
                warnings.filterwarnings("ignore", message="RNN module weights are not part")
            yield

    def search(
        self,
        sources: list[list[int]],
        options: SearchOptions,
        return_attention: bool = False,
        prefixes: list[list[int]] | None = None,
    ) -> list[list[Hypothesis]]:
        """Search encoded sources (id lists ending in EOS) as one batch, in this process;
        ``prefixes``: target ids each output must begin with (:mod:`mtkit.search.prefix`).

        Greedy search for a beam of 1 without coverage penalty (the same result as beam
        search, faster). The hypotheses' ``text`` is left empty (the caller detokenizes).
        """
        src, lengths = pad_sequences(sources)
        search = greedy_search
        if options.beam_size > 1 or options.coverage_penalty != 0.0:
            search = beam_search
        with self.inference():
            return search(
                self.stepper,
                src.to(self.device),
                lengths.to(self.device),
                options,
                return_attention,
                prefixes,
            )


def load(
    checkpoints: CheckpointPaths,
    weights: Sequence[float] | None = None,
    precision: str = "fp32",
    shortlist: bool = False,
    device: str = "cpu",
) -> LoadedModel:
    """The model of ``checkpoints``, prepared for ``precision`` on ``device``.

    One checkpoint without ``weights`` is that model; several, or any with ``weights``
    (one number per checkpoint), decode as an ensemble (:mod:`mtkit.search.ensemble`),
    which must share its sentencepiece models, source processing and output vocabulary.
    ``shortlist`` decodes one checkpoint through its lexical shortlist. A bad path,
    file, option or mismatch is a one-line MtkitError naming it.
    """
    paths = [checkpoints] if isinstance(checkpoints, str | Path) else list(checkpoints)
    check_model_options(paths, weights, precision, shortlist)
    if len(paths) == 1 and weights is None:
        return _load_one(paths[0], precision, shortlist, device)
    members = load_ensemble(paths, weights)
    return prepare(
        members.model,
        members.codec,
        members.defaults,
        device,
        precision,
        members.train_max_len,
        members.data,
    )


def load_spec(spec: LoadSpec) -> LoadedModel:
    """:func:`load` with a :class:`~mtkit.search.spec.LoadSpec`'s arguments."""
    return load(spec.checkpoints, spec.weights, spec.precision, spec.shortlist, spec.device)


def _load_one(path: str | Path, precision: str, shortlist: bool, device: str) -> LoadedModel:
    payload = load_checkpoint(path)
    model: nn.Module
    model, codec = model_from_payload(payload, str(path))
    if shortlist:
        from mtkit.search.shortlist import with_shortlist  # the corpus code: only when asked

        model = with_shortlist(model, payload, str(path))
    data = dict(payload["data"])
    defaults = decode_config_from_payload(payload)
    del payload  # the raw weights: the model holds its own copy
    return prepare(model, codec, defaults, device, precision, data.get("max_len"), [data])


def prepare(
    model: nn.Module,
    codec: TextCodec,
    defaults: DecodeConfig | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    train_max_len: int | None = None,
    data: Sequence[dict[str, Any]] = (),
) -> LoadedModel:
    """``model`` ready to decode at ``precision`` on ``device`` (see the module's note on
    precision copies), with its codec and search defaults (``decode``'s when None)."""
    where = resolve_device(device) if isinstance(device, str) else device
    if precision == "bf16":
        model = copy.deepcopy(model).to(torch.bfloat16)
    elif precision == "int8":
        check_int8(where)
        model = quantize_for_inference(model)
    elif precision != "fp32":
        raise ConfigError(f"precision={precision!r}; expected fp32, bf16 or int8")
    model = model.to(where).eval()
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            module.flatten_parameters()  # cuDNN wants one weight block after a copy
    return LoadedModel(
        model, codec, defaults or DecodeConfig(), where, precision, train_max_len, list(data)
    )
