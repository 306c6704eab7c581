"""Typed configuration: dataclass schemas for every config group, plus Hydra glue.

The dataclasses are the single source of truth for option names, types and defaults.
Hydra composes ``conf/`` against them (so a misspelt key fails at compose time), and
:func:`to_run_config` turns the composed tree into plain dataclasses whose
``__post_init__`` checks values, so everything below the entry point is testable
without Hydra.

The ``train`` keys are defined in six small groups (runtime, optimizer, schedule, budget,
loop, run directory) that :class:`TrainConfig` inherits, so they stay flat
(``train.lr``) while each group checks its own values. :class:`SearchOptions` is the one
search-options type; the ``decode`` group (:class:`DecodeConfig`) extends it.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtkit.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent.parent
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


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A real number, neither NaN nor infinite (a bool is no number here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


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


# -- train: six groups of keys, flat under ``train.*`` ---------------------------------------


@dataclass
class RuntimeConfig:
    """Where training computes, and what makes it repeatable."""

    seed: int = 1234  # initialisation, dropout and batch order
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16
    # CPU intra-op threads: an integer >= 1, auto (one per available core, passive OpenMP
    # waiting; mtkit.runtime.resolve_threads) or None (PyTorch's default). Typed Any
    # because OmegaConf 2.3 has no int-or-str fields; __post_init__ checks the value.
    threads: Any = "auto"
    # Data-parallel CPU training processes that python -m mtkit.train starts itself
    # (mtkit.training.launch), each training on its part of every batch: an integer >= 1, or auto
    # (2 on a CPU of 2 or more cores when threads=auto, else 1; see
    # mtkit.training.launch.resolve_processes).
    processes: Any = "auto"

    def __post_init__(self) -> None:
        s = "train"
        ok = self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)
        _check(bool(ok), s, "device", self.device, "one of: auto, cpu, cuda, cuda:N")
        _choice(s, "precision", self.precision, ("auto", "fp32", "bf16"))
        good = self.threads in (None, "auto") or (_is_int(self.threads) and self.threads >= 1)
        _check(good, s, "threads", self.threads, "an integer >= 1, auto or null")
        count = self.processes
        good = count == "auto" or (_is_int(count) and count >= 1)
        _check(good, s, "processes", count, "an integer >= 1 or auto")


@dataclass
class OptimizerConfig:
    """The optimizer and gradient clipping."""

    optimizer: str = "adam"  # adam | sgd
    lr: float = 2e-3
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    clip_norm: float = 5.0  # gradient-norm clipping (0: off)

    def __post_init__(self) -> None:
        s = "train"
        _choice(s, "optimizer", self.optimizer, ("adam", "sgd"))
        _check(0 < self.lr < math.inf, s, "lr", self.lr, "a number > 0")
        ok = len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas)
        _check(ok, s, "adam_betas", self.adam_betas, "[beta1, beta2], each in [0, 1)")
        for key in ("momentum", "weight_decay"):
            value = getattr(self, key)
            _check(0 <= value < math.inf, s, key, value, "a number >= 0")
        _check(0 <= self.clip_norm < math.inf, s, "clip_norm", self.clip_norm, "a number >= 0")


@dataclass
class ScheduleConfig:
    """What changes during training: the learning rate and the teacher-forcing ratio."""

    warmup_steps: int = 0  # linear warmup
    schedule: str = "plateau"  # plateau (decay when the validation loss stalls) | constant
    decay_factor: float = 0.5
    decay_patience: int = 1  # validations without improvement before a decay
    min_lr: float = 1e-5
    teacher_forcing: float = 1.0  # probability of feeding the gold previous token
    teacher_forcing_schedule: str = "constant"  # constant | linear | inverse_sigmoid
    teacher_forcing_min: float = 0.0
    teacher_forcing_steps: int = 10000  # length of the linear schedule
    teacher_forcing_k: float = 1000.0  # k of the inverse sigmoid

    def __post_init__(self) -> None:
        s = "train"
        _choice(s, "schedule", self.schedule, ("constant", "plateau"))
        schedules = ("constant", "linear", "inverse_sigmoid")
        _choice(s, "teacher_forcing_schedule", self.teacher_forcing_schedule, schedules)
        for key in ("warmup_steps", "decay_patience"):
            value = getattr(self, key)
            _check(value >= 0, s, key, value, "an integer >= 0")
        ok = 0.0 < self.decay_factor <= 1.0
        _check(ok, s, "decay_factor", self.decay_factor, "a number in (0, 1]")
        _check(0 <= self.min_lr < math.inf, s, "min_lr", self.min_lr, "a number >= 0")
        for key in ("teacher_forcing", "teacher_forcing_min"):
            value = getattr(self, key)
            _check(0.0 <= value <= 1.0, s, key, value, "a number in [0, 1]")
        steps = self.teacher_forcing_steps
        _check(steps >= 1, s, "teacher_forcing_steps", steps, "an integer >= 1")
        ok = 0 < self.teacher_forcing_k < math.inf
        _check(ok, s, "teacher_forcing_k", self.teacher_forcing_k, "a number > 0")


@dataclass
class BudgetConfig:
    """When training stops: the first budget reached, early stopping, or a diverged loss."""

    max_epochs: int | None = None
    max_steps: int | None = None
    max_minutes: float | None = None  # wall-clock budget
    early_stopping_metric: str = "bleu"  # bleu | loss | ppl (best.pt follows it)
    patience: int | None = 10  # validations without improvement before stopping (None: never)
    max_bad_steps: int = 20  # stop after this many non-finite losses in a row

    def __post_init__(self) -> None:
        s = "train"
        for key in ("max_epochs", "max_steps", "patience"):
            value = getattr(self, key)
            if value is not None:
                _check(value >= 1, s, key, value, "an integer >= 1 or null")
        if self.max_minutes is not None:
            _check(self.max_minutes > 0, s, "max_minutes", self.max_minutes, "a number > 0")
        _choice(s, "early_stopping_metric", self.early_stopping_metric, ("bleu", "loss", "ppl"))
        _check(self.max_bad_steps >= 1, s, "max_bad_steps", self.max_bad_steps, "an integer >= 1")


@dataclass
class LoopConfig:
    """How often the loop validates and logs, and what it reports."""

    valid_every: int | None = None  # steps (None: twice per epoch, at most every 2000 steps)
    valid_bleu: bool = True  # BLEU at each validation
    log_every: int = 50  # a progress line every N steps
    test_at_end: bool = True  # score best.pt on the test split when training ends
    # also write TensorBoard event files into the run directory
    tensorboard: bool = False

    def __post_init__(self) -> None:
        s = "train"
        if self.valid_every is not None:
            ok = self.valid_every >= 1
            _check(ok, s, "valid_every", self.valid_every, "an integer >= 1 or null")
        _check(self.log_every >= 1, s, "log_every", self.log_every, "an integer >= 1")


@dataclass
class RunDirConfig:
    """The run directory: where a run restarts from, and what it may write there."""

    resume: str | None = None  # a last.pt to resume from
    # allow training into a run directory that already holds a checkpoint
    overwrite: bool = False
    # keep the last N validation checkpoints (step-XXXXXX.pt); 0 = none
    keep_checkpoints: int = 3

    def __post_init__(self) -> None:
        ok = self.keep_checkpoints >= 0
        _check(ok, "train", "keep_checkpoints", self.keep_checkpoints, "an integer >= 0")


# Dataclass fields follow the bases in reverse order, so the runtime keys come first.
@dataclass
class TrainConfig(
    RunDirConfig, LoopConfig, BudgetConfig, ScheduleConfig, OptimizerConfig, RuntimeConfig
):
    """The ``train`` group: every key of the six groups above, flat (``train.lr``)."""

    def __post_init__(self) -> None:
        RuntimeConfig.__post_init__(self)
        OptimizerConfig.__post_init__(self)
        ScheduleConfig.__post_init__(self)
        BudgetConfig.__post_init__(self)
        LoopConfig.__post_init__(self)
        RunDirConfig.__post_init__(self)
        if self.early_stopping_metric == "bleu" and not self.valid_bleu:
            expected = "loss or ppl when train.valid_bleu=false"
            _check(False, "train", "early_stopping_metric", "bleu", expected)


# -- decode ----------------------------------------------------------------------------------


@dataclass
class SearchOptions:
    """How search ranks and limits hypotheses (docs/model.md, "Search").

    The one options type of :mod:`mtkit.search`; the ``decode`` group extends it. Values
    are checked on construction, also when they come from Python rather than Hydra.
    """

    beam_size: int = 5  # 1 = greedy
    nbest: int = 1  # hypotheses returned per input, at most beam_size
    length_norm: str = "gnmt"  # none | average | gnmt (Wu et al. 2016)
    length_penalty: float = 0.6  # alpha of the length normaliser
    max_len_a: float = 1.5  # maximum output length = a * source length + b
    max_len_b: int = 10
    max_len_cap: int | None = None  # an absolute ceiling on that length (null: none)
    min_len: int = 0  # no EOS before this many pieces
    coverage_penalty: float = 0.0  # GNMT beta (0: off)
    no_repeat_ngram: int = 0  # block repeated n-grams of pieces (0: off)

    def __post_init__(self) -> None:
        s = "decode"
        for key, least in (("beam_size", 1), ("max_len_b", 1), ("min_len", 0)):
            value = getattr(self, key)
            _check(_is_int(value) and value >= least, s, key, value, f"an integer >= {least}")
        ok = _is_int(self.nbest) and 1 <= self.nbest <= self.beam_size
        _check(ok, s, "nbest", self.nbest, f"an integer in [1, beam_size={self.beam_size}]")
        _choice(s, "length_norm", self.length_norm, ("none", "average", "gnmt"))
        ok = _is_finite(self.length_penalty)
        _check(ok, s, "length_penalty", self.length_penalty, "a finite number")
        for key in ("max_len_a", "coverage_penalty"):
            value = getattr(self, key)
            _check(_is_finite(value) and value >= 0, s, key, value, "a finite number >= 0")
        value = self.no_repeat_ngram
        ok = _is_int(value) and value >= 0
        _check(ok, s, "no_repeat_ngram", value, "an integer >= 0 (0 = off)")
        cap = self.max_len_cap
        ok = cap is None or (_is_int(cap) and cap >= 1)
        _check(ok, s, "max_len_cap", cap, "an integer >= 1 or null")


@dataclass
class DecodeConfig(SearchOptions):
    """The ``decode`` group: search options plus the batch size of translation.

    Stored in checkpoints as the translation defaults. A DecodeConfig is a SearchOptions,
    so it goes to the search functions as it is.
    """

    batch_tokens: int = 12000  # source tokens x beams per search batch

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = _is_int(self.batch_tokens) and self.batch_tokens >= 1
        _check(ok, "decode", "batch_tokens", self.batch_tokens, "an integer >= 1")


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
