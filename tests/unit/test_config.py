"""Every preset in conf/ composes against the schema; bad overrides give one-line errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import MISSING, OmegaConf

import mtkit.config
from mtkit.config import (
    CONF_DIR,
    DATA_DIR,
    BudgetConfig,
    DecodeConfig,
    LoopConfig,
    OptimizerConfig,
    RunConfig,
    RunDirConfig,
    RuntimeConfig,
    ScheduleConfig,
    SearchOptions,
    TrainConfig,
    from_dict,
    paths,
    register_configs,
    to_run_config,
)
from mtkit.errors import ConfigError

GROUPS = ("data", "decode", "loss", "model", "train")

# Values for the keys a preset leaves mandatory (``???``).
FILL: dict[str, list[str]] = {
    "files": [
        "data.train=[a.xx,a.yy]",
        "data.valid=[b.xx,b.yy]",
        "data.src_lang=xx",
        "data.tgt_lang=yy",
    ],
    "tsv": ["data.train=[a.tsv]", "data.valid=[b.tsv]", "data.src_lang=xx", "data.tgt_lang=yy"],
    "jsonl": [
        "data.train=[a.jsonl]",
        "data.valid=[b.jsonl]",
        "data.src_lang=xx",
        "data.tgt_lang=yy",
    ],
    "hub": ["data.name=some/dataset", "data.src_lang=xx", "data.tgt_lang=yy"],
    "local": ["data.dir=/corpora/x", "data.src_lang=xx", "data.tgt_lang=yy"],
    "multi30k": ["data.dir=/corpora/multi30k"],
    "multi30k_long": ["data.dir=/corpora/multi30k-long"],
    "tatoeba_en_fr": ["data.dir=/corpora/tatoeba"],
}


def presets() -> list[tuple[str, str]]:
    # conf/experiment/ holds specifications for mtkit.experiment, not presets of mtkit.train
    paths = [p for p in CONF_DIR.glob("*/*.yaml") if p.parent.name != "experiment"]
    found = sorted((p.parent.name, p.stem) for p in paths)
    assert {group for group, _ in found} == set(GROUPS)
    return found


@pytest.fixture(scope="module", autouse=True)
def _schema() -> None:
    register_configs()


def composed(overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def run_config(overrides: list[str]) -> RunConfig:
    return to_run_config(composed(overrides))


def flat(prefix: str, node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from flat(f"{prefix}.{key}" if prefix else str(key), value)
    else:
        yield prefix, node


def lookup(run: RunConfig, dotted: str) -> Any:
    value: Any = asdict(run)
    for part in dotted.split("."):
        value = value[part]
    return value


def preset_values(group: str, name: str) -> dict[str, Any]:
    """The keys a preset file sets, as dotted paths from the root, with ??? left out."""
    node = OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
    text = (CONF_DIR / group / f"{name}.yaml").read_text()
    package_global = "# @package _global_" in text
    raw = OmegaConf.to_container(node, resolve=False)
    assert isinstance(raw, dict)
    values = dict(flat("" if package_global else group, raw))
    return {k: v for k, v in values.items() if v != MISSING}


@pytest.mark.parametrize(("group", "name"), presets(), ids=lambda v: str(v))
def test_every_preset_composes_and_keeps_its_values(group: str, name: str) -> None:
    overrides = [f"{group}={name}"]
    if group == "data":
        overrides += FILL.get(name, [])
    else:
        # the default data preset (synth) sets train.* keys itself; keep it out of the way
        overrides += ["data=local", *FILL["local"]]
    run = run_config(overrides)
    assert isinstance(run, RunConfig)
    expected = preset_values(group, name)
    assert expected, f"{group}/{name}.yaml sets nothing"
    for key, value in expected.items():
        if isinstance(value, str) and value.startswith("${mtkit_data:"):
            value = str(DATA_DIR / value[len("${mtkit_data:") : -1])
        assert lookup(run, key) == value, key
    for override in overrides[1:]:
        key, value = override.split("=", 1)
        if key == "data":
            continue
        got = lookup(run, key)
        if value.startswith("["):
            assert got == value[1:-1].split(","), key
        else:
            assert got == value, key


def test_default_composition_is_the_embedded_corpus() -> None:
    run = run_config([])
    assert run.data.format == "dir"
    assert Path(run.data.dir or "") == DATA_DIR / "synth"
    assert (run.data.src_lang, run.data.tgt_lang) == ("en", "zd")
    assert (Path(run.data.dir or "") / "train.en").is_file()
    assert run.model.cell == "gru" and run.model.attention == "bahdanau"
    # the synth preset's budget (a number of updates, the same on every machine) wins over
    # train/default.yaml
    assert run.train.max_steps == 400 and run.train.valid_every == 100
    assert run.train.max_minutes is None
    assert run.data.batch_tokens == 2000


def test_synth_preset_sets_its_vocabulary() -> None:
    assert run_config([]).tokenizer.vocab_size == 1000


def test_groups_combine() -> None:
    run = run_config(
        [
            "data=multi30k",
            "data.dir=/c",
            "model=sutskever",
            "train=sgd_plateau",
            "loss=sampled",
            "decode=greedy",
            "model.cell=gru",
            "tokenizer.type=bpe",
        ]
    )
    assert run.model.attention == "none" and run.model.layers == 2
    assert run.model.cell == "gru"  # the command line wins over the preset
    assert run.train.optimizer == "sgd" and run.train.schedule == "plateau"
    assert run.loss.sampled_softmax is True
    assert run.decode.beam_size == 1
    assert run.tokenizer.type == "bpe"
    assert run.data.valid_split == "val"
    assert run.train.max_steps is None  # the synth preset's budget does not leak


@pytest.mark.parametrize(
    ("override", "key", "some_valid"),
    [
        ("model.hiddn=3", "model.hiddn", ["encoder_hidden", "decoder_hidden", "cell"]),
        ("data.nope=1", "data.nope", ["dir", "max_len", "batch_tokens"]),
        ("trian.lr=1", "trian", ["data", "model", "train"]),
        ("tokenizer.vocab=10", "tokenizer.vocab", ["vocab_size", "joint"]),
    ],
)
def test_unknown_key_named_with_valid_keys(override: str, key: str, some_valid: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        run_config_checked([override])
    message = str(info.value)
    assert f"unknown config key '{key}'" in message
    listed = message.split("valid keys: ", 1)[1].split(", ")
    assert set(some_valid) <= set(listed)
    assert "\n" not in message


def run_config_checked(overrides: list[str]) -> RunConfig:
    """Compose like the command line does: a Hydra error becomes a ConfigError."""
    from mtkit.config.compose import check_overrides

    check_overrides(overrides)
    return run_config(overrides)


def test_unknown_key_via_compose_names_the_key() -> None:
    # Hydra itself refuses the key at compose time, naming it
    with pytest.raises(Exception, match=r"model\.hiddn"):
        composed(["model.hiddn=3"])


def test_valid_keys_follow_the_schema() -> None:
    assert mtkit.config.valid_keys(RunConfig, ["model"])[:3] == ["cell", "peepholes", "embed_dim"]
    assert mtkit.config.valid_keys(RunConfig, []) == [
        "data",
        "tokenizer",
        "model",
        "loss",
        "train",
        "decode",
    ]
    assert mtkit.config.valid_keys(RunConfig, ["model", "cell"]) == []


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("model.cell=rnn", "model.cell='rnn' is not valid; expected one of: gru, lstm"),
        ("model.attention=dot", "expected one of: none, bahdanau, luong_dot"),
        ("tokenizer.type=wordpiece", "tokenizer.type='wordpiece' is not valid"),
        ("train.precision=fp16", "train.precision='fp16' is not valid; expected one of: auto"),
        ("train.device=gpu", "train.device='gpu' is not valid"),
        ("data.format=csv", "data.format='csv' is not valid; expected one of: dir, files"),
        ("decode.length_norm=max", "decode.length_norm='max'"),
        ("train.lr=0", "train.lr=0.0 is not valid; expected a number > 0"),
        ("model.dropout=1.0", "model.dropout=1.0 is not valid"),
        ("data.max_len=0", "data.max_len=0 is not valid"),
        ("decode.length_penalty=nan", "decode.length_penalty=nan is not valid; expected a finite"),
        ("decode.max_len_a=-5", "decode.max_len_a=-5.0 is not valid; expected a finite number"),
        ("decode.coverage_penalty=inf", "decode.coverage_penalty=inf is not valid"),
        ("train.keep_checkpoints=-1", "train.keep_checkpoints=-1 is not valid"),
        ("train.lr=nan", "train.lr=nan is not valid"),
    ],
)
def test_bad_value_names_key_and_choices(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_config([override])
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.max_len=abc", "data.max_len"),
        ("tokenizer.vocab_size=big", "tokenizer.vocab_size"),
        ("model.bidirectional=maybe", "model.bidirectional"),
        ("train.lr=fast", "train.lr"),
    ],
)
def test_type_error_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_config_checked([override])
    message = str(info.value)
    assert f"config key '{key}'" in message
    assert override.split("=")[1] in message


def test_type_error_in_to_run_config_names_the_key() -> None:
    """A wrongly typed value that reaches to_run_config (e.g. from a saved config)."""
    cfg = OmegaConf.create({"data": {"max_len": "abc"}})
    with pytest.raises(ConfigError, match=r"data\.max_len"):
        to_run_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data=local", "data.dir=/x", "data.tgt_lang=yy"], "data.src_lang"),
        (["data=local", "data.dir=/x", "data.src_lang=xx"], "data.tgt_lang"),
        (["data=hub", "data.name=x", "data.src_lang=xx"], "data.tgt_lang"),
        (["data=tsv", "data.train=[a]", "data.valid=[b]", "data.tgt_lang=yy"], "data.src_lang"),
    ],
)
def test_missing_mandatory_value_names_the_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_config(overrides)
    assert f"config key '{key}' must be set" in str(info.value)


def test_missing_file_list_named() -> None:
    with pytest.raises(ConfigError, match=r"data\.train=\[\] is not valid"):
        run_config(["data=files", "data.src_lang=xx", "data.tgt_lang=yy"])


def test_missing_data_dir_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"data\.dir"):
        run_config(["data=multi30k"])


def test_appended_unknown_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.hiden"):
        run_config_checked(["+model.hiden=1024"])


def test_same_languages_rejected() -> None:
    with pytest.raises(ConfigError, match=r"data\.tgt_lang='xx'"):
        run_config(["data=local", "data.dir=/x", "data.src_lang=xx", "data.tgt_lang=xx"])


def test_cross_field_checks() -> None:
    with pytest.raises(ConfigError, match=r"model\.tie_embeddings"):
        run_config(["model.tie_embeddings=true"])
    with pytest.raises(ConfigError, match=r"decode\.nbest"):
        run_config(["decode.beam_size=2", "decode.nbest=3"])
    with pytest.raises(ConfigError, match=r"train\.early_stopping_metric"):
        run_config(["train.valid_bleu=false"])
    # a consistent combination is accepted
    run = run_config(
        ["model.tie_embeddings=true", "model.embed_dim=512", "model.output_vocab=full"]
    )
    assert run.model.tie_embeddings


def test_unknown_preset_is_a_hydra_error_listing_options() -> None:
    with pytest.raises(ConfigError) as info:
        run_config_checked(["data=nope"])
    message = str(info.value)
    assert "data/nope" in message
    for option in ("multi30k", "local", "synth", "tsv"):
        assert option in message


def test_hydra_key_is_ignored_by_to_run_config() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=small"], return_hydra_config=True)
    assert "hydra" in cfg
    assert to_run_config(cfg).model.embed_dim == 64


def test_yaml_round_trip() -> None:
    run = run_config(["model=luong", "data=multi30k", "data.dir=/c"])
    again = to_run_config(OmegaConf.create(mtkit.config.to_yaml(run)))
    assert again == run


def test_a_wheel_install_reads_the_copies_shipped_in_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    package = tmp_path / "site-packages" / "mtkit"
    monkeypatch.setattr(paths, "PACKAGE_DIR", package)
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "checkout")
    assert paths.project_dir("conf") == tmp_path / "checkout" / "conf"
    (package / "_conf").mkdir(parents=True)
    assert paths.project_dir("conf") == package / "_conf"
    assert paths.project_dir("data") == tmp_path / "checkout" / "data"


TRAIN_GROUPS = (
    RuntimeConfig,
    OptimizerConfig,
    ScheduleConfig,
    BudgetConfig,
    LoopConfig,
    RunDirConfig,
)


def test_train_keys_stay_flat_in_group_order() -> None:
    assert mtkit.config.TRAIN_GROUPS == TRAIN_GROUPS
    names = [f.name for group in TRAIN_GROUPS for f in fields(group)]
    assert len(names) == len(set(names)) == 39
    assert [f.name for f in fields(TrainConfig)] == names
    assert mtkit.config.valid_keys(RunConfig, ["train"]) == names
    assert names[:2] == ["seed", "device"] and names[-4:] == [
        "resume",
        "init_from",
        "overwrite",
        "keep_checkpoints",
    ]
    optimizer = [f.name for f in fields(OptimizerConfig)]
    assert optimizer[-3:] == ["clip_norm", "accumulate", "ema_decay"]


@pytest.mark.parametrize(
    ("group", "key", "value"),
    [
        (RuntimeConfig, "device", "gpu"),
        (OptimizerConfig, "lr", 0.0),
        (OptimizerConfig, "adam_betas", [0.9]),
        (OptimizerConfig, "accumulate", 0),
        (OptimizerConfig, "ema_decay", 1.0),
        (ScheduleConfig, "decay_factor", 0.0),
        (ScheduleConfig, "teacher_forcing", 1.5),
        (BudgetConfig, "max_steps", 0),
        (BudgetConfig, "early_stopping_metric", "bleu4"),
        (LoopConfig, "log_every", 0),
        (RunDirConfig, "keep_checkpoints", -1),
    ],
)
def test_each_train_group_checks_its_own_keys(group: type, key: str, value: Any) -> None:
    for schema in (group, TrainConfig):
        with pytest.raises(ConfigError, match=rf"^train\.{key}=.* is not valid"):
            schema(**{key: value})


def test_new_train_keys_have_defaults_and_overrides() -> None:
    train = run_config([]).train
    assert (train.tensorboard, train.keep_checkpoints, train.overwrite) == (False, 3, False)
    overrides = ["train.tensorboard=true", "train.keep_checkpoints=0", "train.overwrite=true"]
    train = run_config(overrides).train
    assert (train.tensorboard, train.keep_checkpoints, train.overwrite) == (True, 0, True)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"length_penalty": float("nan")}, "decode.length_penalty=nan is not valid"),
        ({"length_penalty": float("-inf")}, "decode.length_penalty=-inf is not valid"),
        ({"max_len_a": -5}, "decode.max_len_a=-5 is not valid; expected a finite number >= 0"),
        ({"max_len_a": float("inf")}, "decode.max_len_a=inf is not valid"),
        ({"coverage_penalty": -0.2}, "decode.coverage_penalty=-0.2 is not valid"),
        ({"beam_size": 0}, "decode.beam_size=0 is not valid; expected an integer >= 1"),
        ({"beam_size": 2.0}, "decode.beam_size=2.0 is not valid"),
        ({"beam_size": True}, "decode.beam_size=True is not valid"),
        ({"beam_size": "5"}, "decode.beam_size='5' is not valid"),
        ({"nbest": 6}, "decode.nbest=6 is not valid; expected an integer in [1, beam_size=5]"),
        ({"length_norm": "max"}, "decode.length_norm='max' is not valid"),
        ({"max_len_b": 0}, "decode.max_len_b=0 is not valid"),
        ({"min_len": -1}, "decode.min_len=-1 is not valid"),
        ({"no_repeat_ngram": -1}, "decode.no_repeat_ngram=-1 is not valid"),
    ],
)
def test_search_options_check_values_from_python(changes: dict[str, Any], fragment: str) -> None:
    for schema in (SearchOptions, DecodeConfig):
        with pytest.raises(ConfigError) as info:
            schema(**changes)
        assert fragment in str(info.value) and "\n" not in str(info.value)


def test_decode_config_is_search_options_with_a_batch_size() -> None:
    decode = run_config(["decode=greedy"]).decode
    assert isinstance(decode, DecodeConfig) and isinstance(decode, SearchOptions)
    assert decode.beam_size == 1 and decode.batch_tokens == 12000
    # a checkpoint's stored decode_config (the same ten keys as ever) still loads
    stored = asdict(DecodeConfig(beam_size=4, max_len_a=2.0, batch_tokens=500))
    assert list(stored) == [f.name for f in fields(SearchOptions)] + ["batch_tokens"]
    assert from_dict(DecodeConfig, stored) == DecodeConfig(
        beam_size=4, max_len_a=2.0, batch_tokens=500
    )
    with pytest.raises(ConfigError, match=r"decode\.batch_tokens=0"):
        DecodeConfig(batch_tokens=0)


def test_config_module_does_not_import_torch() -> None:
    code = "import sys, mtkit.config; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_only_compose_loads_hydra() -> None:
    """The layers below the commands import mtkit.config; Hydra loads only for composing."""
    code = (
        "import sys, mtkit.config, mtkit.config.run; print('hydra' in sys.modules);"
        "from mtkit.config import register_configs; print('hydra' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def test_compose_run_gives_one_line_errors_and_the_run() -> None:
    from mtkit.config.compose import compose_run

    run = compose_run(["model=small", "train.max_steps=7"])
    assert run.model.embed_dim == 64 and run.train.max_steps == 7
    for bad, fragment in (
        (["model.hiddn=3"], "unknown config key 'model.hiddn'"),
        (["train.lr=fast"], "config key 'train.lr'"),
        (["data=nope"], "data/nope"),
    ):
        with pytest.raises(ConfigError) as info:
            compose_run(bad)
        assert fragment in str(info.value) and "\n" not in str(info.value)


def test_check_overrides_refuses_an_unwritable_run_directory(tmp_path: Path) -> None:
    from mtkit.config.compose import check_overrides

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"cannot write the run directory .*hydra\.run\.dir"):
        check_overrides([f"hydra.run.dir={blocker / 'run'}"])
    assert check_overrides([f"hydra.run.dir={tmp_path / 'run'}"]).train.seed == 1234
