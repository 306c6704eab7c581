"""Fine-tuning (``train.init_from``) and existing sentencepiece models (``tokenizer.model``):
the checkpoint's weights and subwords, a fresh optimizer and step count, one-line refusals."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from conftest import tiny_pairs, write_lines
from helpers import TINY_OVERRIDES, load_weights, run_module, tiny_run

from mtkit.config import TokenizerConfig
from mtkit.corpus.cache import cache_folder, load_corpus
from mtkit.errors import ConfigError, DataError
from mtkit.training.trainer import Trainer, fit


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained 60 steps on one corpus: the model to fine-tune."""
    corpus = tmp_path_factory.mktemp("base-corpus")
    for split, n, seed in (("train", 300, 1), ("valid", 40, 2)):
        src, tgt = tiny_pairs(n, seed)
        write_lines(corpus / f"{split}.xx", src)
        write_lines(corpus / f"{split}.yy", tgt)
    run_dir = tmp_path_factory.mktemp("base-run")
    run = tiny_run(corpus, max_steps=60, valid_every=30, lr=0.01)
    run.data.test_split = None
    fit(run, run_dir)
    return run_dir / "best.pt"


def new_domain(folder: Path) -> Path:
    """Other sentences, the same task, and words the base corpus never had."""
    for split, n, seed in (("train", 120, 11), ("valid", 20, 12), ("test", 20, 13)):
        src, tgt = tiny_pairs(n, seed)
        src = [s + " lamp" for s in src]
        tgt = ["LAMP " + t for t in tgt]
        write_lines(folder / f"{split}.xx", src)
        write_lines(folder / f"{split}.yy", tgt)
    return folder


def test_the_run_starts_from_the_checkpoints_weights_and_subwords(base: Path, tmp_path: Path):
    corpus = new_domain(tmp_path / "new")
    run = tiny_run(corpus, max_steps=10, valid_every=5, init_from=str(base))
    run.data.test_split = None
    trainer = Trainer(run, tmp_path / "tuned")
    saved = torch.load(base, weights_only=True)
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved["weights"].items())
    assert trainer.corpus.codec.src.model_bytes == saved["codec"]["src_model"]  # not retrained
    assert trainer.progress.step == 0
    assert trainer.run.tokenizer.model == str(tmp_path / "tuned" / "init_from" / "src.model")


def test_fine_tuning_trains_afresh_and_writes_an_ordinary_model(
    base: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    corpus = new_domain(tmp_path / "new")
    run = tiny_run(corpus, max_steps=10, valid_every=5, lr=0.01, init_from=str(base))
    run.data.test_split = None
    run_dir = tmp_path / "tuned"
    with caplog.at_level(logging.INFO, logger="mtkit"):
        summary = fit(run, run_dir)
    with open(run_dir / "metrics.csv") as f:
        assert [row["step"] for row in csv.DictReader(f)] == ["5", "10"]  # a new step count
    assert summary["steps"] == 10
    tuned, before = load_weights(run_dir / "last.pt"), load_weights(base)
    assert not torch.equal(tuned["decoder.embed.weight"], before["decoder.embed.weight"])
    assert torch.equal(tuned["output_ids"], before["output_ids"])  # its output columns stay
    payload = torch.load(run_dir / "best.pt", weights_only=True)
    assert payload["codec"] == torch.load(base, weights_only=True)["codec"]
    assert "init_from/src.model" in (run_dir / "config.yaml").read_text()
    assert "fresh optimizer, schedule and step count" in caplog.text
    assert "of the new training target pieces are outside them" in caplog.text
    out = run_module("mtkit.translate", str(run_dir / "best.pt"), stdin="red cat lamp\n",
                     cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1, out.stderr


def cli(base: Path, corpus: Path, run_dir: Path, *overrides: str):
    return run_module(
        "mtkit.train", *TINY_OVERRIDES, f"data.dir={corpus}", "data.test_split=null",
        "train.max_steps=2", f"train.init_from={base}", *overrides,
        f"hydra.run.dir={run_dir}", cwd=run_dir.parent,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.cell=lstm"], "model.cell='lstm' does not match train.init_from="),
        (["model.decoder_hidden=32"], "model.decoder_hidden=32 does not match"),
        (["data.reverse_source=false"], "data.reverse_source=False does not match"),
        (["tokenizer.model=x.model"], "tokenizer.model / src_model / tgt_model are not valid"),
        (["train.resume=last.pt"], "train.init_from="),
    ],
)
def test_what_cannot_work_is_one_line(base: Path, tmp_path: Path, overrides, message):
    corpus = new_domain(tmp_path / "new")
    done = cli(base, corpus, tmp_path / "run", *overrides)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert message in done.stderr.strip().splitlines()[-1], done.stderr


def test_a_missing_checkpoint_is_one_line(tmp_path: Path):
    corpus = new_domain(tmp_path / "new")
    done = cli(tmp_path / "nope.pt", corpus, tmp_path / "run")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "train.init_from" in last and "no such checkpoint file" in last


def test_an_existing_sentencepiece_model_encodes_a_new_run(base: Path, tmp_path: Path):
    """``tokenizer.model=PATH`` trains from scratch with that model, never retrained; the
    same model under another path shares the corpus cache."""
    model_bytes = torch.load(base, weights_only=True)["codec"]["src_model"]
    first = tmp_path / "a" / "sp.model"
    first.parent.mkdir()
    first.write_bytes(model_bytes)
    corpus = new_domain(tmp_path / "new")
    run = tiny_run(corpus)
    run.data.test_split = None
    run.tokenizer.model = str(first)
    loaded = load_corpus(run.data, run.tokenizer)
    assert loaded.codec.joint and loaded.codec.src.model_bytes == model_bytes
    second = tmp_path / "sp-copy.model"
    second.write_bytes(model_bytes)
    run.tokenizer.model = str(second)
    assert cache_folder(run.data, run.tokenizer) == loaded.folder
    fresh = tiny_run(corpus, max_steps=5)
    fresh.data.test_split = None
    fresh.tokenizer.model = str(first)
    assert fit(fresh, tmp_path / "trained")["steps"] == 5  # new weights, the given subwords
    trained = torch.load(tmp_path / "trained" / "best.pt", weights_only=True)
    assert trained["codec"]["src_model"] == model_bytes


def test_unusable_sentencepiece_files_are_one_line(tmp_path: Path):
    corpus = new_domain(tmp_path / "new")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    buffer = io.BytesIO()
    src, _ = tiny_pairs(200, 5)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(src), model_writer=buffer,
                                   vocab_size=30, minloglevel=2)  # fmt: skip
    default_ids = tmp_path / "default.model"  # sentencepiece's own ids: unk=0 bos=1 eos=2
    default_ids.write_bytes(buffer.getvalue())
    cases = [
        (tmp_path / "missing.model", "no such file"),
        (junk, "not a sentencepiece model"),
        (default_ids, "its special ids are pad=-1 unk=0 bos=1 eos=2; mtkit needs"),
    ]
    for path, message in cases:
        run = tiny_run(corpus)
        run.tokenizer.model = str(path)
        with pytest.raises(DataError, match=message) as caught:
            load_corpus(run.data, run.tokenizer)
        assert str(caught.value).startswith(f"tokenizer.model={path}")
    with pytest.raises(ConfigError, match=r"tokenizer\.src_model=.* expected tokenizer\.tgt_model"):
        TokenizerConfig(src_model="a.model")
    with pytest.raises(ConfigError, match=r"tokenizer\.model=.* expected null when"):
        TokenizerConfig(model="a.model", src_model="b.model", tgt_model="c.model")
    assert TokenizerConfig().given_models is None
    assert TokenizerConfig(model="m").given_models == {"src": "m", "tgt": "m"}
