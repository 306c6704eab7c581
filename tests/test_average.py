"""Checkpoint averaging: exact means, a normal loadable checkpoint, and one-line refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_ensemble import trained_checkpoint

from mtkit.average import average_checkpoints, last_checkpoints, main
from mtkit.model.checkpoint import load_checkpoint, save_checkpoint
from mtkit.search.translator import Translator


@pytest.fixture(scope="module")
def model_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory, seed=1)


@pytest.fixture(scope="module")
def model_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory, seed=2)


def _average(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``mtkit-average`` in this process: (exit status, stderr)."""
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    return int(stop.value.code or 0), capsys.readouterr().err


def test_the_average_of_one_checkpoint_is_that_checkpoint(model_a: Path):
    original = load_checkpoint(model_a)["weights"]
    averaged = average_checkpoints([model_a])["weights"]
    assert averaged.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(averaged[name], tensor), name


def test_the_average_of_two_is_the_elementwise_mean(model_a: Path, model_b: Path):
    a, b = load_checkpoint(model_a)["weights"], load_checkpoint(model_b)["weights"]
    averaged = average_checkpoints([model_a, model_b])["weights"]
    floating = [name for name, tensor in a.items() if tensor.is_floating_point()]
    assert floating and any(not torch.equal(a[name], b[name]) for name in floating)
    for name in floating:
        assert averaged[name].dtype == a[name].dtype
        assert torch.equal(averaged[name], ((a[name].double() + b[name].double()) / 2).float())
    assert torch.equal(averaged["output_ids"], a["output_ids"])  # integer buffer: copied


def test_the_output_is_a_normal_checkpoint_that_translates(
    model_a: Path, model_b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    output = tmp_path / "avg.pt"
    status, err = _average(capsys, str(model_a), str(model_b), "-o", str(output))
    assert status == 0 and "the average of 2 checkpoint(s)" in err
    payload = load_checkpoint(output)
    assert "train_state" not in payload
    assert payload["data"]["averaged"] == [str(model_a), str(model_b)]
    assert payload["model_config"] == load_checkpoint(model_a)["model_config"]
    translator = Translator.from_checkpoint(output)
    out = translator.translate(["red cat sleeps", "", "a tree"], beam_size=2)
    assert len(out) == 3 and out[1] == ""


def test_last_n_takes_the_latest_steps_by_number(
    model_a: Path, model_b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, source in (
        ("step-000500.pt", model_b),
        ("step-999999.pt", model_a),
        ("step-1000000.pt", model_b),  # sorts before step-999999 as text, after it by number
        ("best.pt", model_a),
        ("last.pt", model_a),
    ):
        shutil.copy(source, run_dir / name)
    assert [p.name for p in last_checkpoints(run_dir, 2)] == ["step-999999.pt", "step-1000000.pt"]
    output = tmp_path / "avg2.pt"
    status, _ = _average(capsys, "--last", "2", str(run_dir), "-o", str(output))
    assert status == 0
    expected = average_checkpoints([model_a, model_b])["weights"]
    for name, tensor in load_checkpoint(output)["weights"].items():
        assert torch.equal(tensor, expected[name]), name

    status, err = _average(capsys, "--last", "4", str(run_dir), "-o", str(tmp_path / "x.pt"))
    assert status == 2
    assert err.strip() == (
        f"mtkit-average: error: --last 4 {run_dir}: the run directory has 3 step-XXXXXX.pt "
        "checkpoint(s); keep more with train.keep_checkpoints=4"
    )


def _altered(source: Path, target: Path, change: str) -> Path:
    payload = load_checkpoint(source)
    if change == "config":
        payload["model_config"]["decoder_hidden"] += 1
    elif change == "shape":
        name = "output.bias"
        payload["weights"][name] = torch.zeros(payload["weights"][name].numel() + 1)
    elif change == "buffer":
        payload["weights"]["output_ids"] = payload["weights"]["output_ids"].flip(0)
    elif change == "tokenizer":
        payload["codec"]["src_model"] = payload["codec"]["src_model"] + b"x"
    save_checkpoint(payload, target)
    return target


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("config", "model.decoder_hidden=25 (the first has 24)"),
        ("shape", "weight output.bias of shape"),
        ("buffer", "different values of the integer buffer output_ids"),
        ("tokenizer", "a different sentencepiece model"),
    ],
)
def test_different_architectures_are_refused_in_one_line(
    model_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, expected: str
):
    other = _altered(model_a, tmp_path / f"{change}.pt", change)
    status, err = _average(capsys, str(model_a), str(other), "-o", str(tmp_path / "avg.pt"))
    assert status == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"mtkit-average: error: {other}: cannot be averaged with {model_a}")
    assert expected in err
    assert not (tmp_path / "avg.pt").exists()


def test_writing_over_an_input_is_refused(
    model_a: Path, model_b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    copy = tmp_path / "b.pt"
    shutil.copy(model_b, copy)
    before = copy.read_bytes()
    status, err = _average(capsys, str(model_a), str(copy), "-o", str(copy))
    assert status == 2 and "is one of the input checkpoints" in err
    assert copy.read_bytes() == before


def test_a_missing_input_is_a_one_line_error(
    model_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    missing = tmp_path / "nope.pt"
    status, err = _average(capsys, str(model_a), str(missing), "-o", str(tmp_path / "o.pt"))
    assert status == 2
    assert err.strip() == f"mtkit-average: error: {missing}: no such checkpoint file"
    assert not (tmp_path / "o.pt").exists()
