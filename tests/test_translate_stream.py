"""mtkit-translate reads and answers in buffers: each line is answered before the next is
read (a coprocess), any buffer size gives the same output, line numbers in messages are
those of the whole input, and the 1:1 line guarantees and -o atomicity hold."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_lines
from helpers import ROOT, run_module
from test_translator import SENTENCES, checkpoint, translator  # noqa: F401 - shared model

from mtkit.cli.stream import LineReader
from mtkit.errors import DataError
from mtkit.search.translator import Translator

ANSWER_TIMEOUT_S = 240.0  # start-up (torch, the model, a helper) on a busy machine
LONG = "red cat sleeps near the big house " * 20  # more subwords than any training sentence


def read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """One line of the process's stdout, or a test failure after ``timeout`` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no answer within {timeout:.0f} s"
    return process.stdout.readline()


@pytest.mark.parametrize("processes", ["1", "2"])
def test_each_line_is_answered_before_stdin_closes(
    checkpoint: Path,  # noqa: F811
    translator: Translator,  # noqa: F811
    processes: str,
):
    command = [sys.executable, "-m", "mtkit.translate", str(checkpoint), "--beam-size", "2",
               "--processes", processes]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None and process.stderr is not None
    try:
        answers = []
        for line in [SENTENCES[0], "", SENTENCES[2]]:
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()  # stdin stays open: the answer must come all the same
            answers.append(read_line(process, ANSWER_TIMEOUT_S).decode().rstrip("\n"))
        expected = translator.translate([SENTENCES[0], "", SENTENCES[2]], beam_size=2)
        assert answers == expected
        process.stdin.close()
        assert process.wait(60) == 0, process.stderr.read().decode()
        assert process.stdout is not None and process.stdout.read() == b""
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("size", ["0", "-3"])
def test_a_buffer_size_below_one_is_one_line(tmp_path: Path, size: str):
    result = run_module(
        "mtkit.translate", str(tmp_path / "missing.pt"), "--buffer-size", size, cwd=tmp_path,
        stdin="red cat\n",
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "mtkit-translate: error: --buffer-size must be >= 1"
    )


def test_any_buffer_size_gives_the_same_output(checkpoint: Path, tmp_path: Path):  # noqa: F811
    """Indices of the n-best lines run over the whole input, whatever the buffers."""
    lines = [*SENTENCES, "", "green dog", *SENTENCES[:2]]
    source = write_lines(tmp_path / "in.xx", lines)
    args = [str(checkpoint), "-i", str(source), "--beam-size", "3", "--nbest", "2",
            "--format", "marian"]  # fmt: skip
    outputs = {}
    for size in ["1", "3", str(len(lines))]:
        result = run_module("mtkit.translate", *args, "--buffer-size", size, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        outputs[size] = result.stdout
    assert outputs["1"] == outputs["3"] == outputs[str(len(lines))]
    indices = [int(line.split(" ||| ")[0]) for line in outputs["1"].splitlines()]
    assert sorted(set(indices)) == list(range(len(lines)))
    piped = run_module(
        "mtkit.translate", *args[:1], *args[3:], "--buffer-size", "2", "--processes", "2",
        cwd=ROOT, stdin="".join(line + "\n" for line in lines),
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == outputs["1"]


def test_prefixes_are_read_in_step_with_the_buffers(
    checkpoint: Path,  # noqa: F811
    translator: Translator,  # noqa: F811
    tmp_path: Path,
):
    source = write_lines(tmp_path / "in.xx", SENTENCES)
    given = ["", "THE BIG", "", "HOUSE"]
    prefixes = write_lines(tmp_path / "prefix.yy", given)
    args = [str(checkpoint), "-i", str(source), "--prefix", str(prefixes), "--buffer-size", "1"]
    result = run_module("mtkit.translate", *args, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == translator.translate(SENTENCES, prefix=given)
    # through a pipe the prefix count is known only as it is read: a short one is one line
    command = (f"{sys.executable} -m mtkit.translate {checkpoint} -i {source} --buffer-size 1 "
               f"--prefix <(head -n 2 {prefixes})")  # fmt: skip
    short = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert short.returncode == 2, short.stderr
    assert (
        "has 2 lines but the input has more than 2; expected one prefix per input line"
        in (short.stderr.strip().splitlines()[-1])
    )


def test_messages_name_lines_of_the_whole_input(checkpoint: Path, tmp_path: Path):  # noqa: F811
    """With buffers of 2 lines, line 5 is the first line of the third buffer."""
    source = write_lines(tmp_path / "in.xx", [*SENTENCES, LONG, "a tree"])
    result = run_module(
        "mtkit.translate", str(checkpoint), "-i", str(source), "--buffer-size", "2", cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "line(s) 5: translating anyway" in result.stderr
    assert len(result.stdout.splitlines()) == 6

    prefixes = write_lines(tmp_path / "prefix.yy", ["", "", "", "日本", "", ""])
    refused = run_module(
        "mtkit.translate", str(checkpoint), "-i", str(source), "--prefix", str(prefixes),
        "--buffer-size", "3", cwd=ROOT,
    )  # fmt: skip
    assert refused.returncode == 2
    assert f"--prefix {prefixes}: prefix of line 4 " in refused.stderr.strip().splitlines()[-1]


def test_an_error_mid_input_keeps_what_was_answered(
    checkpoint: Path,  # noqa: F811
    translator: Translator,  # noqa: F811
    tmp_path: Path,
):
    """stdout holds the buffers answered before the bad line; an -o file stays as it was."""
    bad = tmp_path / "bad.txt"
    good = [SENTENCES[0], SENTENCES[2], "", SENTENCES[1]]
    bad.write_bytes("".join(line + "\n" for line in good).encode() + b"\xff oops\nred cat\n")
    args = [str(checkpoint), "-i", str(bad), "--buffer-size", "2"]
    result = run_module("mtkit.translate", *args, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"mtkit-translate: error: {bad}:5: invalid UTF-8 (invalid start byte at byte 0); "
        "use --errors replace to substitute"
    )
    assert result.stdout.splitlines() == translator.translate(good)
    kept = write_lines(tmp_path / "out.txt", ["an earlier translation"])
    refused = run_module("mtkit.translate", *args, "-o", str(kept), cwd=ROOT)
    assert refused.returncode == 2
    assert kept.read_text() == "an earlier translation\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "out.txt"]


# -- the line reader ------------------------------------------------------------------------


def test_a_read_takes_only_the_lines_already_there():
    """The writer keeps the pipe open: a read answers what came instead of waiting."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"\xef\xbb\xbfone\r\ntwo\nthr")
        reader = LineReader(f"/dev/fd/{read_end}", "the test pipe")
        started = time.monotonic()
        assert reader.read(10) == ["one", "two"]
        assert time.monotonic() - started < 5  # it did not wait for ten lines
        os.write(write_end, b"ee\nfour\n")
        assert reader.read(1) == ["three"]
        assert reader.read(5) == ["four"]
        os.write(write_end, b"last, without a line end")
        os.close(write_end)
        write_end = -1
        assert reader.read(5) == ["last, without a line end"]
        assert reader.read(5) == []
        assert reader.lines_read == 5
        reader.__exit__()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_a_file_is_read_in_full_buffers_and_counted(tmp_path: Path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"a\n\nb\xff\r\n" + "c\u2028d\n".encode() + b"e")
    with LineReader(str(path), "the input", errors="replace") as reader:
        assert reader.count_remaining() == 5
        assert reader.read(2) == ["a", ""]
        assert reader.read(2) == ["b\ufffd", "c\u2028d"]
        assert reader.read(2) == ["e"]
        assert reader.read(2) == []
    with LineReader(str(path), "the input") as strict, pytest.raises(DataError) as error:
        strict.read(10)
    assert str(error.value).startswith(f"{path}:3: invalid UTF-8")
