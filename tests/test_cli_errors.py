"""``python -m mtkit.train`` turns user mistakes into one line on stderr and exit code 2.

Every case here must fail before any training starts, so each run takes a few seconds
(mostly Python start-up and imports).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_pairs, write_lines

PREFIX = "mtkit-train: error:"


def run_train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """Run the entry point with a run directory in ``cwd`` (the cache comes from the env)."""
    args = [sys.executable, "-m", "mtkit.train", f"hydra.run.dir={cwd / 'run'}"]
    args += ["train.device=cpu", *overrides]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single error line; fails on a traceback, a second error line or another exit code."""
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(PREFIX)]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], "the error is the last thing printed"
    assert not any("error" in line.lower() for line in lines[:-1]), result.stderr
    return errors[0]


def assert_nothing_trained(cwd: Path) -> None:
    run_dir = cwd / "run"
    if run_dir.exists():
        produced = {p.name for p in run_dir.rglob("*") if p.is_file()}
        assert not {name for name in produced if name.endswith(".pt")}, produced
        assert produced <= {"train.log", "config.yaml", "overrides.yaml", "hydra.yaml"}, produced


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small ``{split}.{lang}`` corpus (xx -> yy) under ``tmp_path/corpus``."""
    directory = tmp_path / "corpus"
    for split, n, seed in (("train", 50, 1), ("valid", 10, 2), ("test", 10, 3)):
        src, tgt = tiny_pairs(n, seed)
        write_lines(directory / f"{split}.xx", src)
        write_lines(directory / f"{split}.yy", tgt)
    return directory


def local(corpus: Path) -> list[str]:
    return ["data=local", f"data.dir={corpus}", "data.src_lang=xx", "data.tgt_lang=yy"]


def test_unknown_config_key(tmp_path: Path) -> None:
    line = error_line(run_train(tmp_path, "model.hiddn=64"))
    assert "unknown config key 'model.hiddn'" in line
    assert "valid keys:" in line and "decoder_hidden" in line
    assert_nothing_trained(tmp_path)


def test_bad_choice_value(tmp_path: Path) -> None:
    line = error_line(run_train(tmp_path, "model.cell=rnn"))
    assert "model.cell='rnn'" in line
    assert "gru, lstm" in line
    assert not (tmp_path / "run").exists()


def test_bad_typed_value(tmp_path: Path) -> None:
    line = error_line(run_train(tmp_path, "data.max_len=abc"))
    assert "data.max_len" in line and "abc" in line
    assert not (tmp_path / "run").exists()


def test_unknown_preset(tmp_path: Path) -> None:
    line = error_line(run_train(tmp_path, "data=nope"))
    assert "data/nope" in line
    assert "multi30k" in line and "local" in line  # the available presets
    assert not (tmp_path / "run").exists()


def test_missing_mandatory_value(tmp_path: Path, corpus: Path) -> None:
    line = error_line(run_train(tmp_path, "data=local", f"data.dir={corpus}", "data.src_lang=xx"))
    assert "data.tgt_lang" in line and "must be set" in line


def test_line_count_mismatch(tmp_path: Path, corpus: Path) -> None:
    write_lines(corpus / "valid.yy", tiny_pairs(10, 2)[1][:8])
    line = error_line(run_train(tmp_path, *local(corpus)))
    assert "line count mismatch" in line
    assert str(corpus / "valid.xx") in line and str(corpus / "valid.yy") in line
    assert "has 10 lines" in line and "has 8" in line
    assert_nothing_trained(tmp_path)


def test_missing_file(tmp_path: Path, corpus: Path) -> None:
    (corpus / "test.yy").unlink()
    line = error_line(run_train(tmp_path, *local(corpus)))
    assert str(corpus / "test.yy") in line
    assert_nothing_trained(tmp_path)


def test_invalid_utf8(tmp_path: Path, corpus: Path) -> None:
    bad = corpus / "train.yy"
    lines = bad.read_bytes().splitlines(keepends=True)
    lines[2] = b"ok \xff\xfe bad\n"
    bad.write_bytes(b"".join(lines))
    line = error_line(run_train(tmp_path, *local(corpus)))
    assert f"{bad}:3:" in line and "UTF-8" in line
    assert_nothing_trained(tmp_path)


def test_unwritable_run_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    run_dir = blocker / "run"
    result = subprocess.run(
        [sys.executable, "-m", "mtkit.train", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = error_line(result)
    assert str(run_dir) in line and "hydra.run.dir" in line
    assert blocker.read_text() == "not a directory\n"
