"""``mtkit.search.load.load``: the one way checkpoints become a model to decode with (one
checkpoint or an ensemble, fp32 / bf16 / int8, with a shortlist), and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_translator import SENTENCES, checkpoint  # noqa: F401 - the shared trained model

from mtkit.errors import CheckpointError, ConfigError
from mtkit.model.checkpoint import load_checkpoint, model_from_payload, save_checkpoint
from mtkit.model.seq2seq import Seq2Seq
from mtkit.search.ensemble import Ensemble
from mtkit.search.int8 import Int8Linear, int8_available
from mtkit.search.load import LoadSpec, load, load_spec, prepare
from mtkit.search.shortlist import Shortlisted
from mtkit.search.translator import Translator


def test_one_checkpoint_in_fp32_is_the_model_and_what_search_needs(checkpoint: Path):  # noqa: F811
    loaded = load(checkpoint)
    payload = load_checkpoint(checkpoint)
    assert isinstance(loaded.model, Seq2Seq) and not loaded.model.training
    assert loaded.precision == "fp32" and loaded.dtype == torch.float32
    assert loaded.device == torch.device("cpu")
    assert loaded.train_max_len == payload["data"]["max_len"]
    assert loaded.data == [payload["data"]]
    assert loaded.defaults.beam_size == payload["decode_config"]["beam_size"]
    expected = Translator.from_checkpoint(checkpoint).translate(SENTENCES, beam_size=3)
    assert Translator.of(loaded).translate(SENTENCES, beam_size=3) == expected
    # A list of one checkpoint without weights is that model too (the commands' case).
    assert isinstance(load([str(checkpoint)]).model, Seq2Seq)
    assert load_spec(LoadSpec((str(checkpoint),))).precision == "fp32"


def test_bf16_and_int8_are_copies_at_that_precision(checkpoint: Path):  # noqa: F811
    bf16 = load(checkpoint, precision="bf16")
    assert bf16.dtype == torch.bfloat16 and bf16.precision == "bf16"
    if not int8_available():
        pytest.skip("no int8 CPU backend in this torch")
    int8 = load(checkpoint, precision="int8")
    assert isinstance(int8.model.output, Int8Linear) and int8.precision == "int8"
    reference = Translator.from_checkpoint(checkpoint, precision="int8")
    assert Translator.of(int8).translate(SENTENCES) == reference.translate(SENTENCES)
    plain = load(checkpoint).model
    prepare(plain, int8.codec, precision="int8")  # the caller's model is left in fp32
    assert isinstance(plain.output, torch.nn.Linear)


def test_several_checkpoints_or_weights_make_an_ensemble(checkpoint: Path):  # noqa: F811
    pair = load([checkpoint, checkpoint], [1.0, 2.0])
    assert isinstance(pair.model, Ensemble)
    assert pair.model.weights == pytest.approx((1 / 3, 2 / 3))
    assert len(pair.data) == 2 and pair.train_max_len == pair.data[0]["max_len"]
    one = load([checkpoint], [1.0])
    assert isinstance(one.model, Ensemble) and len(one.model.members) == 1
    with pytest.raises(ConfigError, match="--weights: expected 2 numbers"):
        load([checkpoint, checkpoint], [1.0])


def test_a_shortlist_is_loaded_for_one_checkpoint_only(
    checkpoint: Path,  # noqa: F811
    tmp_path: Path,
):
    payload = load_checkpoint(checkpoint)
    model, _ = model_from_payload(payload, str(checkpoint))
    sources, targets = model.encoder.embed.num_embeddings, model.decoder.embed.num_embeddings
    generator = torch.Generator().manual_seed(0)
    table = {
        "candidates": torch.randint(4, targets, (sources, 3), generator=generator).int(),
        "frequent": torch.arange(4, 10, dtype=torch.int32),
        "pairs": 0,
    }
    listed = tmp_path / "listed.pt"
    save_checkpoint({**payload, "shortlist": table}, listed)
    loaded = load(listed, shortlist=True)
    assert isinstance(loaded.model, Shortlisted)
    expected = Translator.from_checkpoint(listed, shortlist=True).translate(SENTENCES)
    assert Translator.of(loaded).translate(SENTENCES) == expected
    with pytest.raises(CheckpointError) as plain:
        load(checkpoint, shortlist=True)
    assert str(checkpoint) in str(plain.value) and "\n" not in str(plain.value)
    for given in (([listed, listed], None), ([listed], [1.0])):
        with pytest.raises(ConfigError, match="--shortlist works with one checkpoint, not an"):
            load(*given, shortlist=True)
    with pytest.raises(ConfigError, match="--shortlist works with one checkpoint"):
        LoadSpec((str(listed), str(listed)), shortlist=True)


@pytest.mark.parametrize("bad", ["missing.pt", "notes.txt", "folder"])
def test_bad_paths_are_one_line_errors_naming_them(tmp_path: Path, bad: str):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "folder").mkdir()
    for given in (tmp_path / bad, [tmp_path / bad, tmp_path / bad]):
        with pytest.raises(CheckpointError) as error:
            load(given)
        message = str(error.value)
        assert message.startswith(str(tmp_path / bad)) and "\n" not in message


def test_options_are_checked_before_anything_loads(tmp_path: Path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(ConfigError, match="precision='int4'; expected fp32, bf16 or int8"):
        load(missing, precision="int4")
    with pytest.raises(ConfigError, match="an ensemble needs at least one checkpoint"):
        load([])
