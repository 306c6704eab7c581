"""The weights' moving average (``train.ema_decay``): its arithmetic, ema.pt, exact resume."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytest
import torch
from helpers import DETERMINISTIC_COLUMNS, load_weights, read_metrics, tiny_run

from mtkit.config import TrainConfig
from mtkit.errors import ConfigError
from mtkit.model.checkpoint import load_checkpoint
from mtkit.search.translator import Translator
from mtkit.training.run_files import EMA_FIELDS
from mtkit.training.trainer import Trainer, fit

COLUMNS = DETERMINISTIC_COLUMNS + EMA_FIELDS


def test_the_average_after_k_updates_is_the_closed_form(tiny_corpus_dir: Path, tmp_path: Path):
    """ema_k = d^(k-1) w_1 + (1 - d) * sum_{j=2..k} d^(k-j) w_j (the first update copies)."""
    decay, k = 0.6, 4
    trainer = Trainer(tiny_run(tiny_corpus_dir, ema_decay=decay), tmp_path)
    assert trainer.average is not None
    recorded = []  # the model's weights after each update
    for indices in trainer._epoch_batches(0)[:k]:
        trainer.train_step([indices], time.perf_counter())
        recorded.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    assert trainer.average.updates == k

    averaged = dict(trainer.average.model.named_parameters())
    for name in averaged:
        want = decay ** (k - 1) * recorded[0][name]
        for j in range(2, k + 1):
            want = want + (1 - decay) * decay ** (k - j) * recorded[j - 1][name]
        torch.testing.assert_close(averaged[name], want, rtol=1e-5, atol=1e-6)
        assert not torch.equal(averaged[name], recorded[-1][name])
    buffers = dict(trainer.average.model.named_buffers())
    assert torch.equal(buffers["output_ids"], dict(trainer.model.named_buffers())["output_ids"])


def test_ema_pt_is_an_ordinary_checkpoint_that_translates(
    tiny_corpus_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO, logger="mtkit"):
        summary = fit(tiny_run(tiny_corpus_dir, ema_decay=0.9, test_at_end=True), tmp_path)
    payload = load_checkpoint(tmp_path / "ema.pt")
    assert "train_state" not in payload
    last = load_weights(tmp_path / "last.pt")
    assert any(not torch.equal(payload["weights"][k], last[k]) for k in last)
    assert set(payload["weights"]) == set(last)  # the model's keys, not AveragedModel's
    saved_average = load_checkpoint(tmp_path / "last.pt")["train_state"]["ema"]
    for key, value in payload["weights"].items():
        assert torch.equal(saved_average["module." + key], value)
    assert int(saved_average["n_averaged"]) == 10

    translator = Translator.from_checkpoint(tmp_path / "ema.pt")
    assert len(translator.translate(["red cat sleeps", ""])) == 2
    rows = read_metrics(tmp_path, COLUMNS)
    assert [r["step"] for r in rows] == ["5", "10"]
    assert all(math.isfinite(float(r[c])) for r in rows for c in EMA_FIELDS)
    assert rows[-1]["ema_val_loss"] != rows[-1]["val_loss"]
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["test_ema"] == summary["test_ema"]
    assert set(summary["test_ema"]) == {"bleu_greedy", "signature"}
    assert "step 10 EMA validation: loss" in caplog.text
    assert "test (ema.pt, greedy): BLEU" in caplog.text


def test_a_run_without_ema_writes_no_ema_files_or_columns(tiny_corpus_dir: Path, tmp_path: Path):
    fit(tiny_run(tiny_corpus_dir, max_steps=5, ema_decay=0), tmp_path)
    assert not (tmp_path / "ema.pt").exists()
    assert "ema" not in load_checkpoint(tmp_path / "last.pt")["train_state"]
    assert "ema_val_loss" not in (tmp_path / "metrics.csv").read_text()


def test_resume_with_ema_continues_exactly(tiny_corpus_dir: Path, tmp_path: Path):
    """10 updates, stop, resume to 20 == 20 straight: metrics (EMA columns too) and ema.pt."""
    fit(tiny_run(tiny_corpus_dir, ema_decay=0.8, max_steps=20), tmp_path / "straight")
    fit(tiny_run(tiny_corpus_dir, ema_decay=0.8, max_steps=10), tmp_path / "first")
    resumed = tiny_run(
        tiny_corpus_dir, ema_decay=0.8, max_steps=20, resume=str(tmp_path / "first" / "last.pt")
    )
    fit(resumed, tmp_path / "resumed")

    expected = read_metrics(tmp_path / "straight", COLUMNS)
    assert [row["step"] for row in expected] == ["5", "10", "15", "20"]
    assert read_metrics(tmp_path / "resumed", COLUMNS) == expected
    want = load_weights(tmp_path / "straight" / "ema.pt")
    got = load_weights(tmp_path / "resumed" / "ema.pt")
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_resuming_a_run_without_ema_starts_the_average_there(tiny_corpus_dir: Path, tmp_path: Path):
    fit(tiny_run(tiny_corpus_dir, max_steps=5), tmp_path / "first")
    resumed = tiny_run(
        tiny_corpus_dir, ema_decay=0.5, max_steps=10, resume=str(tmp_path / "first" / "last.pt")
    )
    fit(resumed, tmp_path / "resumed")
    saved = load_checkpoint(tmp_path / "resumed" / "last.pt")["train_state"]["ema"]
    assert int(saved["n_averaged"]) == 5  # the updates after the resume
    rows = read_metrics(tmp_path / "resumed", ["step", *EMA_FIELDS])
    assert rows[0]["ema_val_loss"] == "" and rows[1]["ema_val_loss"] != ""


@pytest.mark.parametrize("value", [1.0, 1.5, -0.1, math.nan])
def test_a_bad_decay_names_the_key(value: float):
    with pytest.raises(ConfigError, match=r"^train\.ema_decay=.* is not valid; expected a number"):
        TrainConfig(ema_decay=value)
