"""mtkit-export: the encoder and step graphs compute what the model computes, for every
cell and attention type, at any batch size and source length; the export folder and its
one-line errors.

Graph parity is checked on small random models (every configuration, one step from
several states); search parity on a trained model is in tests/test_onnx_runtime.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import ROOT, run_module
from test_ensemble import trained_checkpoint

from mtkit.config import ModelConfig
from mtkit.errors import DataError
from mtkit.export.writer import FORMAT_VERSION, export_encoder, export_step
from mtkit.model.seq2seq import Seq2Seq

CONFIGS = {
    "gru-bi-2layers-bahdanau": dict(cell="gru", layers=2, attention="bahdanau"),
    "lstm-bi-peepholes-luong_general-feed": dict(
        cell="lstm", peepholes=True, layers=2, decoder_layers=1, attention="luong_general"
    ),
    "lstm-uni-luong_dot-nofeed": dict(
        cell="lstm",
        bidirectional=False,
        encoder_hidden=10,
        attention="luong_dot",
        input_feed=False,
    ),
    "gru-bi-luong_concat-zero-bridge": dict(cell="gru", attention="luong_concat", bridge="zero"),
    "lstm-bi-none-3dec-layers": dict(cell="lstm", attention="none", decoder_layers=3),
}


def small_model(**settings: object) -> Seq2Seq:
    torch.manual_seed(0)
    base: dict[str, object] = dict(embed_dim=8, encoder_hidden=6, decoder_hidden=10, dropout=0.2)
    return Seq2Seq(ModelConfig(**{**base, **settings}), 40, 40).eval()  # type: ignore[arg-type]


def sources(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (B, S) ending in EOS, of random lengths (the longest is S), PAD after."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length
    src = np.zeros((batch, length), dtype=np.int64)
    for row, n in enumerate(lengths):
        src[row, : n - 1] = rng.integers(4, 40, size=n - 1)
        src[row, n - 1] = 3
    return torch.from_numpy(src), torch.from_numpy(lengths.astype(np.int64))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_graphs_compute_the_models_encoder_and_steps(name: str, tmp_path: Path) -> None:
    """Encoder outputs, then three steps (log-probs, state, attention), within 1e-5 of
    PyTorch, at batch sizes and lengths other than the traced ones (1 x 1 included)."""
    model = small_model(**CONFIGS[name])
    export_encoder(model, tmp_path / "encoder.onnx")
    export_step(model, tmp_path / "step.onnx")
    encoder = ort.InferenceSession(str(tmp_path / "encoder.onnx"))
    step = ort.InferenceSession(str(tmp_path / "step.onnx"))
    for batch, length, seed in ((1, 1, 0), (2, 4, 1), (5, 11, 2)):
        src, lengths = sources(batch, length, seed)
        with torch.no_grad():
            enc = model.encode(src, lengths)
            state = model.init_state(enc)
        got = dict(zip([o.name for o in encoder.get_outputs()],
                       encoder.run(None, {"src": src.numpy(), "lengths": lengths.numpy()}),
                       strict=True))  # fmt: skip
        expected = {"states": enc.states, "keys": enc.keys, "hidden": state.hidden,
                    "cell": state.cell, "feed": state.feed}  # fmt: skip
        for key, value in got.items():
            np.testing.assert_allclose(value, expected[key].numpy(), atol=1e-5, err_msg=key)
        feeds = {**got, "mask": enc.mask.numpy()}
        prev = torch.full((batch,), 2)
        for t in range(3):
            names = [i.name for i in step.get_inputs()]
            inputs = {"prev_ids": prev.numpy(), **{n: feeds[n] for n in names[1:]}}
            outputs = dict(zip([o.name for o in step.get_outputs()], step.run(None, inputs),
                               strict=True))  # fmt: skip
            with torch.no_grad():
                log_probs, state, attention = model.step(prev, state, enc)
            np.testing.assert_allclose(outputs["log_probs"], log_probs.numpy(), atol=1e-5)
            for key in ("hidden", "cell", "feed"):
                if f"new_{key}" in outputs:
                    value = getattr(state, key).numpy()
                    np.testing.assert_allclose(outputs[f"new_{key}"], value, atol=1e-5)
                    feeds[key] = outputs[f"new_{key}"]
            if attention is not None:
                np.testing.assert_allclose(outputs["attention"], attention.numpy(), atol=1e-6)
            prev = log_probs.argmax(-1) + 4 * t  # any ids: the graphs take what they are fed


def test_peephole_weights_are_used(tmp_path: Path) -> None:
    """Large diagonal weights change the exported encoder's states as they change the
    model's (the ONNX LSTM's P input is the model's peepholes, not dropped)."""
    model = small_model(cell="lstm", peepholes=True)
    src, lengths = sources(2, 6, 3)
    states = []
    for large in (False, True):
        if large:
            with torch.no_grad():
                for name, parameter in model.encoder.rnn.named_parameters():
                    if name.startswith("weight_c"):
                        parameter.fill_(3.0)
        path = tmp_path / f"encoder{int(large)}.onnx"
        export_encoder(model, path)
        session = ort.InferenceSession(str(path))
        states.append(session.run(["states"], {"src": src.numpy(), "lengths": lengths.numpy()})[0])
        with torch.no_grad():
            expected = model.encode(src, lengths).states.numpy()
        np.testing.assert_allclose(states[-1], expected, atol=1e-5)
    assert np.abs(states[0] - states[1]).max() > 1e-2


def test_export_folder_and_errors(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The command writes the folder (graphs, sentencepiece models, model.json with the
    format version, output ids and defaults); an existing -o, a missing checkpoint and a
    bad --weights count are one line each, and the existing folder is left alone."""
    checkpoint = trained_checkpoint(tmp_path_factory)
    out = tmp_path_factory.mktemp("export") / "model"
    done = run_module("mtkit.export", str(checkpoint), "-o", str(out), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "encoder.onnx", "model.json", "source.model", "step.onnx", "target.model",
    ]  # fmt: skip
    meta = json.loads((out / "model.json").read_text())
    payload = torch.load(checkpoint, weights_only=True)
    assert meta["version"] == FORMAT_VERSION
    assert meta["output_ids"] == payload["weights"]["output_ids"].tolist()
    assert meta["reverse_source"] is True
    assert meta["decode"]["beam_size"] == payload["decode_config"]["beam_size"]
    assert meta["members"][0]["architecture"] == payload["model_config"]
    before = sorted(p.name for p in out.iterdir())
    again = run_module("mtkit.export", str(checkpoint), "-o", str(out), cwd=ROOT)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == before
    missing = run_module("mtkit.export", "nope.pt", "-o", str(out.parent / "x"), cwd=ROOT)
    assert missing.returncode == 2 and "nope.pt" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert not (out.parent / "x").exists()
    weights = run_module(
        "mtkit.export", str(checkpoint), "--weights", "1", "2", "-o", "y", cwd=ROOT
    )
    assert weights.returncode == 2 and "--weights" in weights.stderr


def test_building_leaves_nothing_on_failure(tmp_path: Path) -> None:
    """A failure inside the build leaves neither the target nor a temp folder."""
    from mtkit.export.writer import _building

    target = tmp_path / "model"
    with pytest.raises(RuntimeError), _building(target) as folder:
        (folder / "encoder.onnx").write_bytes(b"half")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    with pytest.raises(DataError, match="already exists"), _building(target):
        pass
