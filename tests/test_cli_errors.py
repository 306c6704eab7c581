"""``python -m mtkit.train``, ``mtkit.translate`` and ``mtkit.evaluate`` turn user mistakes
(and a full disk, a closed stream) into one line on stderr and exit code 2.

Every training case must fail before any training starts, and every translate case that
can be found before translating is found before the checkpoint is even read, so each run
takes a few seconds (mostly Python start-up and imports).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import tiny_pairs, write_lines
from helpers import tiny_run

from mtkit.errors import CheckpointError
from mtkit.search.translator import Translator
from mtkit.training.trainer import fit

PREFIX = "mtkit-train: error:"


def run_train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """Run the entry point with a run directory in ``cwd`` (the cache comes from the env)."""
    args = [sys.executable, "-m", "mtkit.train", f"hydra.run.dir={cwd / 'run'}"]
    args += ["train.device=cpu", *overrides]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess[str], prefix: str = PREFIX) -> str:
    """The single error line; fails on a traceback, a second error line or another exit code."""
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(prefix)]
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


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("decode.length_penalty=nan", "decode.length_penalty=nan is not valid"),
        ("decode.max_len_a=-5", "decode.max_len_a=-5.0 is not valid"),
        ("train.keep_checkpoints=-1", "train.keep_checkpoints=-1 is not valid"),
        ("train.processes=0", "train.processes=0 is not valid"),
    ],
)
def test_bad_number(tmp_path: Path, override: str, fragment: str) -> None:
    line = error_line(run_train(tmp_path, override))
    assert fragment in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--max-len-ratio", "-5", "decode.max_len_a=-5.0 is not valid"),
        ("--length-penalty", "nan", "decode.length_penalty=nan is not valid"),
    ],
)
def test_bad_translate_search_flag(tmp_path: Path, flag: str, value: str, fragment: str) -> None:
    """Search flags are checked before the checkpoint is read (this one does not exist)."""
    result = subprocess.run(
        [sys.executable, "-m", "mtkit.translate", str(tmp_path / "missing.pt"), flag, value],
        cwd=tmp_path,
        input="red cat\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = error_line(result, "mtkit-translate: error:")
    assert line.startswith(f"mtkit-translate: error: {flag}: ") and fragment in line


# -- translate and evaluate ----------------------------------------------------------------

TRANSLATE = "mtkit-translate: error:"
EVALUATE = "mtkit-evaluate: error:"


def run_cli(
    module: str,
    *args: str,
    cwd: Path,
    stdin: str | None = "red cat\n",
    before: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` with ``stdin`` as input; ``before`` runs in the child
    just before the command (to close a stream or limit file sizes)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=before,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained for a few steps (what it translates does not matter here)."""
    corpus = tmp_path_factory.mktemp("corpus")
    for split, n, seed in (("train", 100, 1), ("valid", 10, 2), ("test", 10, 3)):
        src, tgt = tiny_pairs(n, seed)
        write_lines(corpus / f"{split}.xx", src)
        write_lines(corpus / f"{split}.yy", tgt)
    run_dir = tmp_path_factory.mktemp("run")
    fit(tiny_run(corpus, max_steps=2, valid_every=2), run_dir)
    return run_dir / "best.pt"


def test_evaluate_empty_files(tmp_path: Path) -> None:
    empty = write_lines(tmp_path / "empty.txt", [])
    result = run_cli("mtkit.evaluate", "--hyp", str(empty), "--ref", str(empty), cwd=tmp_path)
    assert "empty.txt is empty: there is nothing to score" in error_line(result, EVALUATE)


def test_evaluate_names_only_its_own_options(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"red cat\n\xff oops\n")
    ref = write_lines(tmp_path / "ref.txt", ["red cat", "blue dog"])
    line = error_line(
        run_cli("mtkit.evaluate", "--hyp", str(bad), "--ref", str(ref), cwd=tmp_path), EVALUATE
    )
    assert f"{bad}:2: invalid UTF-8" in line
    missing = run_cli("mtkit.evaluate", "--hyp", str(ref), "--ref", "nope.txt", cwd=tmp_path)
    line += error_line(missing, EVALUATE)
    assert "nope.txt: no such file (expected the --ref file)" in line
    assert "--errors" not in line and "-i/--input" not in line


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path: Path) -> None:
    text = ["the red cat sleeps near the big house", "a small dog runs under the green tree"]
    hyp = write_lines(tmp_path / "hyp.txt", text)
    ref = tmp_path / "ref.txt"
    ref.write_bytes(b"\xef\xbb\xbf" + hyp.read_bytes())
    result = run_cli("mtkit.evaluate", "--hyp", str(hyp), "--ref", str(ref), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("BLEU = 100.00 "), result.stdout


@pytest.mark.parametrize("name", ["junk-spm", "codec-not-a-dict", "junk-target-spm"])
def test_damaged_codec_in_a_checkpoint(checkpoint: Path, tmp_path: Path, name: str) -> None:
    payload = torch.load(checkpoint, weights_only=True)
    if name == "junk-spm":
        payload["codec"]["src_model"] = b"not a sentencepiece model"
    elif name == "codec-not-a-dict":
        payload["codec"] = ["src_model"]
    else:
        payload["codec"]["tgt_model"] = b"\x0a\x05junk"
    damaged = tmp_path / f"{name}.pt"
    torch.save(payload, damaged)
    with pytest.raises(CheckpointError, match=f"{name}.pt: damaged checkpoint"):
        Translator.from_checkpoint(damaged)
    line = error_line(run_cli("mtkit.translate", str(damaged), cwd=tmp_path), TRANSLATE)
    assert f"{damaged}: damaged checkpoint" in line
    source = write_lines(tmp_path / "src.txt", ["red cat"])
    result = run_cli(
        "mtkit.evaluate", str(damaged), "--src", str(source), "--ref", str(source), cwd=tmp_path
    )
    assert f"{damaged}: damaged checkpoint" in error_line(result, EVALUATE)


def test_a_full_disk_is_one_line(checkpoint: Path, tmp_path: Path) -> None:
    to_file = run_cli("mtkit.translate", str(checkpoint), "-o", "/dev/full", cwd=tmp_path)
    line = error_line(to_file, TRANSLATE)
    assert line == f"{TRANSLATE} /dev/full: cannot write (No space left on device)"

    def stdout_on_full_disk() -> None:
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, 1)

    to_stdout = run_cli(
        "mtkit.translate", str(checkpoint), cwd=tmp_path, before=stdout_on_full_disk
    )
    assert "cannot write to stdout (No space left on device)" in error_line(to_stdout, TRANSLATE)


def test_a_failed_write_keeps_the_old_output_file(checkpoint: Path, tmp_path: Path) -> None:
    """A write that fails half-way (here: a file size limit) leaves the old file as it was."""
    output = tmp_path / "out.txt"
    output.write_text("an earlier translation\n")
    output.chmod(0o640)

    def tiny_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4, 4))

    many = "".join("red cat sleeps\n" for _ in range(50))
    result = run_cli(
        "mtkit.translate", str(checkpoint), "-o", str(output), cwd=tmp_path, stdin=many,
        before=tiny_files,
    )  # fmt: skip
    assert f"{output}: cannot write (File too large)" in error_line(result, TRANSLATE)
    assert output.read_text() == "an earlier translation\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temp file left
    done = run_cli("mtkit.translate", str(checkpoint), "-o", str(output), cwd=tmp_path, stdin=many)
    assert done.returncode == 0, done.stderr
    assert len(output.read_text().splitlines()) == 50
    assert output.stat().st_mode & 0o777 == 0o640  # the replaced file keeps its permissions


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-o", "{blocker}/out.txt"], "{blocker}/out.txt: cannot write (Not a directory)"),
        (["-o", "{tmp}"], "{tmp}: is a directory (-o/--output needs a file name)"),
        (
            ["--attention-plots", "{blocker}/plots"],
            "{blocker}/plots: cannot create the --attention-plots folder (Not a directory)",
        ),
        (["--attention-plots", "{blocker}"], "{blocker}: exists and is not a folder"),
        (["-i", "{tmp}/nope.txt"], "{tmp}/nope.txt: no such file (expected the -i/--input file)"),
        ([], "{tmp}/missing.pt: no such checkpoint file"),  # the temp output file is removed
    ],
)
def test_unusable_paths_are_found_before_the_checkpoint_is_read(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    """The checkpoint does not exist: each other problem is reported before it would be read."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    names = {"blocker": str(blocker), "tmp": str(tmp_path)}
    result = run_cli(
        "mtkit.translate",
        str(tmp_path / "missing.pt"),
        "-o",
        str(tmp_path / "kept.txt"),
        *[arg.format(**names) for arg in args],
        cwd=tmp_path,
    )
    assert fragment.format(**names) in error_line(result, TRANSLATE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no output, no temp file


def test_closed_streams(tmp_path: Path) -> None:
    def close(fd: int) -> Callable[[], None]:
        return lambda: os.close(fd)

    missing = str(tmp_path / "missing.pt")
    no_stdin = run_cli("mtkit.translate", missing, cwd=tmp_path, stdin=None, before=close(0))
    line = error_line(no_stdin, TRANSLATE)
    assert line == f"{TRANSLATE} no input: stdin is closed (give the -i/--input file)"
    no_stdout = run_cli("mtkit.translate", missing, cwd=tmp_path, before=close(1))
    assert "stdout is closed; give an output file with -o/--output" in error_line(
        no_stdout, TRANSLATE
    )
    ref = write_lines(tmp_path / "ref.txt", ["red cat"])
    evaluate = run_cli(
        "mtkit.evaluate", "--hyp", str(ref), "--ref", str(ref), cwd=tmp_path, before=close(1)
    )
    assert error_line(evaluate, EVALUATE) == f"{EVALUATE} cannot write: stdout is closed"
