"""Small run configurations and helpers shared by the training, translation and CLI tests."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch

from mtkit.config import (
    DataConfig,
    DecodeConfig,
    LossConfig,
    ModelConfig,
    RunConfig,
    TokenizerConfig,
    TrainConfig,
)
from mtkit.search.translator import Translator
from mtkit.training.run_files import METRIC_FIELDS

ROOT = Path(__file__).resolve().parent.parent
# metrics.csv columns that a fixed seed reproduces exactly (timings are left out)
DETERMINISTIC_COLUMNS = [c for c in METRIC_FIELDS if c not in ("tokens_per_s", "elapsed_min")]


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module, for the tests of a script's functions."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tiny_run(corpus_dir: Path, **train: object) -> RunConfig:
    """A run that trains a very small model on a ``tiny_corpus_dir`` in seconds."""
    train_cfg = TrainConfig(
        device="cpu",
        precision="fp32",
        threads=1,
        lr=0.005,
        valid_every=5,
        max_steps=10,
        log_every=5,
        patience=None,
        test_at_end=False,
    )
    for key, value in train.items():
        setattr(train_cfg, key, value)
    return RunConfig(
        data=DataConfig(
            format="dir",
            dir=str(corpus_dir),
            src_lang="xx",
            tgt_lang="yy",
            batch_tokens=120,
            max_len=50,
        ),
        tokenizer=TokenizerConfig(vocab_size=60),
        model=ModelConfig(embed_dim=16, encoder_hidden=16, decoder_hidden=24, dropout=0.1),
        loss=LossConfig(label_smoothing=0.1),
        train=train_cfg,
        decode=DecodeConfig(beam_size=3, max_len_b=12, batch_tokens=400),
    )


TINY_OVERRIDES = [
    "data=local",
    "data.src_lang=xx",
    "data.tgt_lang=yy",
    "data.batch_tokens=120",
    "tokenizer.vocab_size=60",
    "model=small",
    "model.embed_dim=16",
    "model.encoder_hidden=16",
    "model.decoder_hidden=24",
    "train.device=cpu",
    "train.precision=fp32",
    "train.threads=1",
    "train.valid_every=5",
    "train.log_every=5",
    "train.test_at_end=false",
]


def read_metrics(run_dir: Path, columns: list[str] = DETERMINISTIC_COLUMNS) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return [{c: row[c] for c in columns} for row in csv.DictReader(handle)]


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["weights"]


def run_module(
    module: str,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` and capture its text output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_beam_of_one_is_greedy(translator: Translator, sentences: list[str]) -> None:
    """Beam search with beam 1 picks greedy search's tokens, with its scores."""
    import pytest

    from mtkit.corpus.batching import pad_sequences
    from mtkit.search import beam_search

    greedy = translator.translate_nbest(sentences, beam_size=1)
    src, lengths = pad_sequences(translator.codec.encode_source(sentences))
    with translator.inference():
        beam = beam_search(translator.stepper, src, lengths, translator.options(beam_size=1))
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    assert [g[0].score for g in greedy] == pytest.approx([b[0].score for b in beam], abs=1e-5)
