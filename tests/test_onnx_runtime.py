"""The ONNX runtime: parity with PyTorch on a trained model, the search invariants, the
line guarantees of mtkit-translate, one-line errors, int8, and that it needs no torch
(an import check here, and a fresh virtual environment without torch)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, run_module
from test_ensemble import SENTENCES, trained_checkpoint

from mtkit.errors import CheckpointError
from mtkit.export.writer import export_loaded
from mtkit.onnx_runtime.folder import open_export
from mtkit.onnx_runtime.greedy import forced_scores
from mtkit.onnx_runtime.translator import OnnxTranslator, pad
from mtkit.search.load import load
from mtkit.search.translator import Translator

MORE = [*SENTENCES, "green tree", "small red cat under the big blue house near a dog"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The trained test model and its export (with the int8 step graph)."""
    checkpoint = trained_checkpoint(tmp_path_factory)
    folder = tmp_path_factory.mktemp("onnx") / "model"
    export_loaded(load(checkpoint), folder, int8=True)
    return checkpoint, folder


@pytest.mark.parametrize("beam", [1, 5])
def test_parity_with_pytorch(exported: tuple[Path, Path], beam: int) -> None:
    """Greedy and beam 5 (3-best): the same tokens as PyTorch fp32, scores within 1e-4."""
    checkpoint, folder = exported
    nbest = 1 if beam == 1 else 3
    expected = Translator.from_checkpoint(checkpoint).translate_nbest(
        MORE, beam_size=beam, nbest=nbest
    )
    got = OnnxTranslator.from_folder(folder).translate_nbest(MORE, beam_size=beam, nbest=nbest)
    for mine, theirs in zip(got, expected, strict=True):
        assert [h.tokens for h in mine] == [h.tokens for h in theirs]
        assert [h.text for h in mine] == [h.text for h in theirs]
        assert [h.score for h in mine] == pytest.approx([h.score for h in theirs], abs=1e-4)


def test_search_invariants(exported: tuple[Path, Path]) -> None:
    """Beam 1 == greedy; a batch == each sentence alone; scores == forced scores."""
    _, folder = exported
    translator = OnnxTranslator.from_folder(folder)
    greedy = translator.translate_nbest(MORE, beam_size=1)
    options = translator.options(beam_size=1)
    from mtkit.onnx_runtime.beam import beam_search

    src, lengths = pad(translator.model.codec.encode_source(MORE))
    beam_one = beam_search(translator.model, src, lengths, options)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam_one]
    assert [g[0].score for g in greedy] == pytest.approx([b[0].score for b in beam_one], abs=1e-5)
    for beam in (1, 4):
        batch = translator.translate_nbest(MORE, beam_size=beam)
        alone = [translator.translate_nbest([s], beam_size=beam)[0] for s in MORE]
        assert [h[0].tokens for h in batch] == [h[0].tokens for h in alone]
        assert [h[0].score for h in batch] == pytest.approx([h[0].score for h in alone], abs=1e-5)
        forced = forced_scores(translator.model, src, lengths, [h[0].tokens for h in batch],
                               translator.options(beam_size=beam))  # fmt: skip
        assert forced == pytest.approx([h[0].score for h in batch], abs=1e-5)


def test_codec_is_the_checkpoints(exported: tuple[Path, Path]) -> None:
    """The runtime's source ids and detokenization are the checkpoint codec's."""
    checkpoint, folder = exported
    codec = Translator.from_checkpoint(checkpoint).codec
    mine = open_export(folder).codec
    texts = [*MORE, "unknown wörds ünd  spaces", ""]
    assert mine.encode_source(texts) == codec.encode_source(texts)
    ids = [[5, 6, 3, 7], [2, 8, 0, 9], []]
    assert mine.decode_target(ids) == codec.decode_target(ids)


def test_ensemble_parity(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A weighted ensemble of two checkpoints: one graph pair per member, the same beam-3
    results as PyTorch's ensemble."""
    paths = [trained_checkpoint(tmp_path_factory, seed=s) for s in (1, 2)]
    folder = tmp_path_factory.mktemp("onnx-ensemble") / "model"
    export_loaded(load(paths, (0.7, 0.3)), folder)
    meta = json.loads((folder / "model.json").read_text())
    assert [m["step"] for m in meta["members"]] == ["step.0.onnx", "step.1.onnx"]
    assert [m["weight"] for m in meta["members"]] == pytest.approx([0.7, 0.3])
    expected = Translator.from_checkpoints(paths, (0.7, 0.3)).translate_nbest(MORE, beam_size=3)
    got = OnnxTranslator.from_folder(folder).translate_nbest(MORE, beam_size=3)
    assert [h[0].tokens for h in got] == [h[0].tokens for h in expected]
    assert [h[0].score for h in got] == pytest.approx([h[0].score for h in expected], abs=1e-4)


def test_command_keeps_the_line_guarantees(exported: tuple[Path, Path], tmp_path: Path) -> None:
    """One line per input line in order, empty lines empty, the n-best format of
    mtkit-translate, and its exact output for the same input; ``mtkit-translate
    --backend onnx`` on the export gives the same."""
    checkpoint, folder = exported
    lines = ["red cat sleeps", "", "a tree", "   ", "the big dog runs near the house"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n")
    for flags in ([], ["--scores", "--beam-size", "1"], ["--nbest", "2", "--beam-size", "3"]):
        mine = run_module("mtkit.onnx_runtime", str(folder), "-i", str(source), *flags, cwd=ROOT)
        theirs = run_module("mtkit.translate", str(checkpoint), "-i", str(source), *flags,
                            cwd=ROOT)  # fmt: skip
        backend = run_module("mtkit.translate", str(folder), "--backend", "onnx", "-i",
                             str(source), *flags, cwd=ROOT)  # fmt: skip
        assert mine.returncode == 0, mine.stderr
        assert mine.stdout == theirs.stdout == backend.stdout
        if not flags:
            out = mine.stdout.split("\n")
            assert len(out) == len(lines) + 1 and out[1] == "" and out[3] == ""
    target = tmp_path / "out.txt"
    done = run_module("mtkit.onnx_runtime", str(folder), "-i", str(source), "-o", str(target),
                      cwd=ROOT)  # fmt: skip
    assert done.returncode == 0 and len(target.read_text().splitlines()) == len(lines)


def _one_line_error(args: list[str], needle: str) -> None:
    done = run_module("mtkit.onnx_runtime", *args, cwd=ROOT, stdin="a tree\n")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert needle in done.stderr


def test_errors_are_one_line(exported: tuple[Path, Path], tmp_path: Path) -> None:
    """Missing or corrupt graphs, another format version, mismatched graphs, a missing
    folder, bad input: one line each; -o keeps its old content on an error."""
    _, folder = exported
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "step.onnx").unlink()
    _one_line_error([str(broken)], "step.onnx: missing graph file")
    shutil.copy(folder / "step.onnx", broken / "step.onnx")
    (broken / "encoder.onnx").write_bytes(b"not a graph")
    _one_line_error([str(broken)], "encoder.onnx: not a loadable ONNX graph")
    shutil.copy(folder / "step.onnx", broken / "encoder.onnx")  # the step where the encoder is
    _one_line_error([str(broken)], "does not match model.json")
    shutil.copy(folder / "encoder.onnx", broken / "encoder.onnx")
    meta = json.loads((folder / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps({**meta, "version": 99}))
    _one_line_error([str(broken)], "format version 99")
    (broken / "model.json").write_text("{")
    _one_line_error([str(broken)], "not readable JSON")
    (broken / "model.json").write_text(json.dumps({**meta, "output_ids": meta["output_ids"][:5]}))
    _one_line_error([str(broken)], "output columns")
    _one_line_error([str(tmp_path / "nowhere")], "no such export folder")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a tree\n\xff\xfe\n")
    kept = tmp_path / "kept.txt"
    kept.write_text("old\n")
    _one_line_error([str(folder), "-i", str(bad), "-o", str(kept)], "bad.txt:2: not valid UTF-8")
    assert kept.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.txt", "broken", "kept.txt",
    ]  # fmt: skip


def test_other_architecture_is_a_mismatch(
    exported: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A step graph of a model of other sizes in the folder: one line naming it."""
    _, folder = exported
    other = trained_checkpoint(tmp_path_factory, vocab_size=80)
    other_folder = tmp_path_factory.mktemp("onnx-other") / "model"
    export_loaded(load(other), other_folder)
    mixed = tmp_path_factory.mktemp("mixed") / "model"
    shutil.copytree(folder, mixed)
    shutil.copy(other_folder / "step.onnx", mixed / "step.onnx")
    with pytest.raises(CheckpointError, match="mixes graphs of different models"):
        open_export(mixed)


def test_int8_step(exported: tuple[Path, Path]) -> None:
    """The int8 step graph scores close to fp32 (log-probs within 0.1 on every column of
    the first step) and translates most test sentences as fp32 does."""
    _, folder = exported
    fp32, int8 = open_export(folder), open_export(folder, "int8")
    src, lengths = pad(fp32.codec.encode_source(MORE))
    prev = np.full(len(MORE), 2, dtype=np.int64)
    first = [
        m.step(prev, m.init_state(e), e)[0] for m in (fp32, int8) for e in [m.encode(src, lengths)]
    ]
    assert np.abs(first[0] - first[1]).max() < 0.1
    same = [
        a == b
        for a, b in zip(
            OnnxTranslator(fp32).translate(MORE, beam_size=1),
            OnnxTranslator(int8).translate(MORE, beam_size=1),
            strict=True,
        )
    ]
    assert sum(same) >= len(MORE) - 1


def test_runtime_imports_no_torch() -> None:
    """Translating with an export loads neither torch nor the configuration libraries."""
    code = (
        "import sys, mtkit, mtkit.onnx_runtime.__main__, mtkit.onnx_runtime.translator\n"
        "bad = [m for m in ('torch', 'omegaconf', 'hydra', 'mtkit.config') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_translates_in_a_venv_without_torch(exported: tuple[Path, Path], tmp_path: Path) -> None:
    """A fresh venv with numpy, onnxruntime and sentencepiece and mtkit without its
    dependencies translates the export as PyTorch does, and has no torch."""
    if not _pypi_reachable():
        pytest.skip("PyPI (pypi.org:443) is unreachable: cannot install the runtime's packages")
    checkpoint, folder = exported
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "numpy", "onnxruntime", "sentencepiece"], check=True, timeout=600)
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True, timeout=600)
    lines = "\n".join([*MORE, ""]) + "\n"
    check = subprocess.run([python, "-c", "import torch"], capture_output=True, cwd=tmp_path)
    assert check.returncode != 0  # no torch in this venv
    done = subprocess.run(
        [str(venv / "bin" / "mtkit-onnx"), str(folder), "--beam-size", "5"],
        input=lines, capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = Translator.from_checkpoint(checkpoint).translate([*MORE, ""], beam_size=5)
    assert done.stdout.splitlines() == expected
