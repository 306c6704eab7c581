"""Typed configuration: dataclass schemas for every config group, plus Hydra glue.

The dataclasses are the single source of truth for option names, types and defaults.
Hydra composes ``conf/`` against them (so a misspelt key fails at compose time), and
:func:`to_run_config` turns the composed tree into plain dataclasses whose
``__post_init__`` checks values, so everything below the entry point is testable
without Hydra.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtkit.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent


def _project_dir(name: str) -> Path:
    """The top-level ``conf``/``data`` folder: the copy a wheel ships inside the package
    (``mtkit/_conf``, ``mtkit/_data``), else the checkout's own (editable installs)."""
    shipped = PACKAGE_DIR / f"_{name}"
    return shipped if shipped.is_dir() else PROJECT_ROOT / name


CONF_DIR = _project_dir("conf")
DATA_DIR = _project_dir("data")


def _choice(section: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value == MISSING:
        return
    if value not in choices:
        raise ConfigError(
            f"{section}.{key}={value!r} is not valid; expected one of: {', '.join(choices)}"
        )


def _check(condition: bool, section: str, key: str, value: Any, expected: str) -> None:
    if not condition and value != MISSING:
        raise ConfigError(f"{section}.{key}={value!r} is not valid; expected {expected}")


@dataclass
class DataConfig:
    """Where the parallel text comes from and how it is turned into batches.

    ``format`` picks the reader: ``dir`` reads ``{dir}/{split}.{lang}`` files, ``files``
    reads explicit ``[source, target]`` file pairs, ``tsv`` reads ``source<TAB>target``
    lines, ``jsonl`` reads ``{"translation": {lang: text}}`` lines, and ``hf`` reads a
    Hugging Face dataset by hub id or local path (``name``).
    """

    format: str = "dir"
    dir: str | None = None
    name: str | None = None
    hf_config: str | None = None
    src_lang: str = MISSING
    tgt_lang: str = MISSING
    train_split: str = "train"
    valid_split: str = "valid"
    test_split: str | None = "test"
    train: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    reverse_source: bool = True
    max_len: int = 100
    batch_tokens: int = 4000
    buckets: list[list[int]] | None = None
    pool_batches: int = 64
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        s = "data"
        _choice(s, "format", self.format, ("dir", "files", "tsv", "jsonl", "hf"))
        per_split = {"files": 2, "tsv": 1, "jsonl": 1}.get(self.format)
        if per_split is not None:
            for key in ("train", "valid", "test"):
                paths = getattr(self, key)
                ok = len(paths) == per_split or (key == "test" and not paths)
                what = "[SOURCE_FILE, TARGET_FILE]" if per_split == 2 else "[FILE]"
                _check(ok, s, key, paths, f"a list {what}")
        if MISSING not in (self.src_lang, self.tgt_lang):
            ok = self.src_lang != self.tgt_lang
            _check(ok, s, "tgt_lang", self.tgt_lang, "a language other than data.src_lang")
        _check(self.max_len >= 1, s, "max_len", self.max_len, "an integer >= 1")
        _check(self.batch_tokens >= 1, s, "batch_tokens", self.batch_tokens, "an integer >= 1")
        _check(self.pool_batches >= 1, s, "pool_batches", self.pool_batches, "an integer >= 1")
        if self.buckets is not None:
            ok = len(self.buckets) > 0 and all(
                len(b) == 2 and b[0] >= 1 and b[1] >= 1 for b in self.buckets
            )
            _check(ok, s, "buckets", self.buckets, "a list of [source_len, target_len] pairs")


@dataclass
class TokenizerConfig:
    """Sentencepiece subwords, trained on the training split only."""

    type: str = "unigram"
    vocab_size: int = 8000
    joint: bool = True
    character_coverage: float = 1.0
    max_sentences: int = 2_000_000

    def __post_init__(self) -> None:
        s = "tokenizer"
        _choice(s, "type", self.type, ("unigram", "bpe"))
        _check(self.vocab_size >= 16, s, "vocab_size", self.vocab_size, "an integer >= 16")
        ok = 0.9 <= self.character_coverage <= 1.0
        _check(ok, s, "character_coverage", self.character_coverage, "a number in [0.9, 1]")
        _check(self.max_sentences >= 1, s, "max_sentences", self.max_sentences, "an int >= 1")


ATTENTION_TYPES = ("none", "bahdanau", "luong_dot", "luong_general", "luong_concat")


@dataclass
class ModelConfig:
    """The encoder-decoder: sizes, cell, attention, bridge and embeddings."""

    cell: str = "gru"
    embed_dim: int = 256
    encoder_hidden: int = 256
    decoder_hidden: int = 512
    layers: int = 1
    decoder_layers: int | None = None
    bidirectional: bool = True
    dropout: float = 0.3
    attention: str = "bahdanau"
    input_feed: bool = True
    bridge: str = "learned"
    tie_embeddings: bool = False
    output_vocab: str = "observed"
    init_range: float = 0.1
    pretrained_src_embeddings: str | None = None
    pretrained_tgt_embeddings: str | None = None

    def __post_init__(self) -> None:
        s = "model"
        _choice(s, "cell", self.cell, ("gru", "lstm"))
        _choice(s, "attention", self.attention, ATTENTION_TYPES)
        _choice(s, "bridge", self.bridge, ("learned", "zero"))
        _choice(s, "output_vocab", self.output_vocab, ("observed", "full"))
        for key in ("embed_dim", "encoder_hidden", "decoder_hidden", "layers"):
            value = getattr(self, key)
            _check(value >= 1, s, key, value, "an integer >= 1")
        if self.decoder_layers is not None:
            ok = self.decoder_layers >= 1
            _check(ok, s, "decoder_layers", self.decoder_layers, "an integer >= 1 or null")
        _check(0.0 <= self.dropout < 1.0, s, "dropout", self.dropout, "a number in [0, 1)")
        _check(self.init_range >= 0.0, s, "init_range", self.init_range, "a number >= 0")
        if self.tie_embeddings:
            ok = self.embed_dim == self.decoder_hidden
            _check(ok, s, "tie_embeddings", True, "model.embed_dim == model.decoder_hidden")
            ok = self.output_vocab == "full"
            _check(ok, s, "tie_embeddings", True, "model.output_vocab=full (one row per piece)")
        if self.attention == "luong_dot":
            ok = self.decoder_hidden == self.encoder_output_dim
            expected = "model.decoder_hidden == encoder output size for luong_dot"
            _check(ok, s, "attention", self.attention, expected)

    @property
    def num_decoder_layers(self) -> int:
        return self.layers if self.decoder_layers is None else self.decoder_layers

    @property
    def encoder_output_dim(self) -> int:
        return self.encoder_hidden * (2 if self.bidirectional else 1)


@dataclass
class LossConfig:
    """Full softmax cross-entropy (with label smoothing) or sampled softmax for training."""

    label_smoothing: float = 0.1
    sampled_softmax: bool = False
    num_samples: int = 512
    proposal: str = "log_uniform"

    def __post_init__(self) -> None:
        s = "loss"
        ok = 0.0 <= self.label_smoothing < 1.0
        _check(ok, s, "label_smoothing", self.label_smoothing, "a number in [0, 1)")
        _check(self.num_samples >= 1, s, "num_samples", self.num_samples, "an integer >= 1")
        _choice(s, "proposal", self.proposal, ("log_uniform", "unigram", "uniform"))


@dataclass
class TrainConfig:
    """Optimisation, budgets, validation, checkpoints and hardware."""

    seed: int = 1234
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    optimizer: str = "adam"
    lr: float = 2e-3
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip_norm: float = 5.0
    warmup_steps: int = 0
    schedule: str = "plateau"
    decay_factor: float = 0.5
    decay_patience: int = 1
    min_lr: float = 1e-5
    teacher_forcing: float = 1.0
    teacher_forcing_schedule: str = "constant"
    teacher_forcing_min: float = 0.0
    teacher_forcing_steps: int = 10000
    teacher_forcing_k: float = 1000.0
    max_epochs: int | None = None
    max_steps: int | None = None
    max_minutes: float | None = None
    valid_every: int | None = None
    valid_bleu: bool = True
    early_stopping_metric: str = "bleu"
    patience: int | None = 10
    log_every: int = 50
    max_bad_steps: int = 20
    resume: str | None = None
    test_at_end: bool = True

    def __post_init__(self) -> None:
        s = "train"
        ok = self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)
        _check(bool(ok), s, "device", self.device, "one of: auto, cpu, cuda, cuda:N")
        _choice(s, "precision", self.precision, ("auto", "fp32", "bf16"))
        _choice(s, "optimizer", self.optimizer, ("adam", "sgd"))
        _choice(s, "schedule", self.schedule, ("constant", "plateau"))
        _choice(
            s,
            "teacher_forcing_schedule",
            self.teacher_forcing_schedule,
            ("constant", "linear", "inverse_sigmoid"),
        )
        _choice(s, "early_stopping_metric", self.early_stopping_metric, ("bleu", "loss", "ppl"))
        if self.early_stopping_metric == "bleu" and not self.valid_bleu:
            _check(
                False, s, "early_stopping_metric", "bleu", "loss or ppl when train.valid_bleu=false"
            )
        _check(self.lr > 0, s, "lr", self.lr, "a number > 0")
        _check(len(self.adam_betas) == 2, s, "adam_betas", self.adam_betas, "[beta1, beta2]")
        _check(
            0.0 <= self.teacher_forcing <= 1.0,
            s,
            "teacher_forcing",
            self.teacher_forcing,
            "a number in [0, 1]",
        )
        _check(
            0.0 <= self.teacher_forcing_min <= 1.0,
            s,
            "teacher_forcing_min",
            self.teacher_forcing_min,
            "a number in [0, 1]",
        )
        _check(
            0.0 < self.decay_factor <= 1.0,
            s,
            "decay_factor",
            self.decay_factor,
            "a number in (0, 1]",
        )
        if self.valid_every is not None:
            valid = self.valid_every >= 1
            _check(valid, s, "valid_every", self.valid_every, "an integer >= 1 or null")
        _check(self.log_every >= 1, s, "log_every", self.log_every, "an integer >= 1")
        _check(self.clip_norm >= 0, s, "clip_norm", self.clip_norm, "a number >= 0 (0 = off)")
        if self.threads is not None:
            _check(self.threads >= 1, s, "threads", self.threads, "an integer >= 1 or null")
        for key in ("max_epochs", "max_steps", "patience"):
            value = getattr(self, key)
            if value is not None:
                _check(value >= 1, s, key, value, "an integer >= 1 or null")
        if self.max_minutes is not None:
            _check(self.max_minutes > 0, s, "max_minutes", self.max_minutes, "a number > 0")


@dataclass
class DecodeConfig:
    """Search settings, used for validation BLEU and as translation defaults."""

    beam_size: int = 5
    nbest: int = 1
    length_norm: str = "gnmt"
    length_penalty: float = 0.6
    max_len_a: float = 1.5
    max_len_b: int = 10
    min_len: int = 0
    coverage_penalty: float = 0.0
    no_repeat_ngram: int = 0
    batch_tokens: int = 12000

    def __post_init__(self) -> None:
        s = "decode"
        _check(self.beam_size >= 1, s, "beam_size", self.beam_size, "an integer >= 1")
        ok = 1 <= self.nbest <= self.beam_size
        _check(ok, s, "nbest", self.nbest, "an integer in [1, beam_size]")
        _choice(s, "length_norm", self.length_norm, ("none", "average", "gnmt"))
        _check(self.max_len_a >= 0, s, "max_len_a", self.max_len_a, "a number >= 0")
        _check(self.max_len_b >= 1, s, "max_len_b", self.max_len_b, "an integer >= 1")
        _check(self.min_len >= 0, s, "min_len", self.min_len, "an integer >= 0")
        ok = self.no_repeat_ngram >= 0
        _check(ok, s, "no_repeat_ngram", self.no_repeat_ngram, "an integer >= 0 (0 = off)")
        _check(self.batch_tokens >= 1, s, "batch_tokens", self.batch_tokens, "an integer >= 1")


@dataclass
class RunConfig:
    """Everything one training run needs; saved resolved as ``config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore and the ``${mtkit_data:NAME}`` resolver.

    The resolver gives the embedded corpora a location that does not depend on the
    directory the user starts from.
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="mtkit_schema", node=RunConfig)
    if not OmegaConf.has_resolver("mtkit_data"):
        OmegaConf.register_new_resolver("mtkit_data", lambda name: str(DATA_DIR / name))


def valid_keys(schema: type, path: list[str]) -> list[str]:
    """The field names of the dataclass reached by following ``path`` from ``schema``."""
    node: Any = schema
    for key in path:
        found = {f.name: f for f in fields(node)}.get(key)
        if found is None or not is_dataclass(found.default_factory):  # type: ignore[arg-type]
            return []
        node = found.default_factory
    return [f.name for f in fields(node)]


def describe_omegaconf_error(error: OmegaConfBaseException) -> str:
    """Turn an OmegaConf/Hydra error into one line that names the key and what is valid."""
    key = getattr(error, "full_key", None) or ""
    message = str(getattr(error, "msg", None) or error).splitlines()[0]
    unknown = re.search(r"Key '([^']+)' (?:is )?not in", message)
    if unknown:
        parts = key.split(".") if key else [unknown.group(1)]
        choices = valid_keys(RunConfig, parts[:-1])
        where = ".".join(parts)
        hint = f"; valid keys: {', '.join(choices)}" if choices else ""
        return f"unknown config key '{where}'{hint}"
    if "missing mandatory value" in message.lower():
        return f"config key '{key}' must be set (for example {key}=VALUE on the command line)"
    return f"config key '{key}': {message}" if key else message


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Resolve a composed config and build the checked :class:`RunConfig`."""
    try:
        if "hydra" in cfg:
            cfg = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
        _reject_unknown_keys(cfg, RunConfig, [])
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
        run = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(describe_omegaconf_error(error)) from None
    assert isinstance(run, RunConfig)
    _require_data_source(run.data)
    return run


def _reject_unknown_keys(node: Any, schema: type, path: list[str]) -> None:
    """Catch keys added with Hydra's ``+key=value``, which bypass the schema."""
    if not isinstance(node, DictConfig):
        return
    known = {f.name: f for f in fields(schema)}
    for key in node:
        name = str(key)
        if name not in known:
            where = ".".join([*path, name])
            raise ConfigError(f"unknown config key '{where}'; valid keys: {', '.join(known)}")
        factory = known[name].default_factory
        if is_dataclass(factory):
            _reject_unknown_keys(node[name], factory, [*path, name])  # type: ignore[arg-type]


def _require_data_source(data: DataConfig) -> None:
    if data.format == "dir" and not data.dir:
        raise ConfigError("config key 'data.dir' must be set (a folder of {split}.{lang} files)")
    if data.format == "hf" and not data.name:
        raise ConfigError("config key 'data.name' must be set (a dataset id or local path)")


def to_yaml(run: RunConfig) -> str:
    """The resolved configuration as YAML (what ``config.yaml`` holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(run))


def from_dict(section: type, values: dict[str, Any]) -> Any:
    """Rebuild one config section (e.g. :class:`ModelConfig`) from a plain dict, checked."""
    try:
        node = OmegaConf.merge(OmegaConf.structured(section), values)
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as error:
        raise ConfigError(describe_omegaconf_error(error)) from None
