"""Decoding in several single-threaded processes (``processes=2``, ``--processes``): the
same translations as one process, one-line errors, and helpers that never outlive it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import tiny_pairs, write_lines
from helpers import run_module
from test_translator import SENTENCES, checkpoint  # noqa: F401 - the shared trained model

from mtkit.cli.options import AUTO_MIN_SENTENCES, parse_processes, resolve_processes
from mtkit.errors import ConfigError, MtkitError
from mtkit.runtime import single_thread, usable_cpus
from mtkit.search.int8 import int8_available
from mtkit.search.load import LoadSpec
from mtkit.search.pool import DecodePool
from mtkit.search.translator import Translator

# Enough lines for several batches at a small budget, with short and long ones mixed.
LINES = SENTENCES * 4 + tiny_pairs(40, seed=7)[0]


@pytest.fixture(scope="module")
def alone(checkpoint: Path) -> Translator:  # noqa: F811
    return Translator.from_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def shared(checkpoint: Path) -> Iterator[Translator]:  # noqa: F811
    with Translator.from_checkpoint(checkpoint, processes=2) as translator:
        yield translator


def one_thread(translator: Translator, beam_size: int, **options: object) -> list:
    """What one process with one thread finds (each process of a pool runs one thread)."""
    with single_thread():
        return translator.translate_nbest(LINES, beam_size=beam_size, batch_tokens=60, **options)


@pytest.mark.parametrize("beam_size", [1, 5])
def test_two_processes_translate_as_one(alone: Translator, shared: Translator, beam_size: int):
    assert shared.processes == 2 and alone.processes == 1
    want = one_thread(alone, beam_size, nbest=beam_size)
    got = shared.translate_nbest(LINES, beam_size=beam_size, nbest=beam_size, batch_tokens=60)
    # Each part is a batch of its own: the same hypotheses, scores up to float rounding
    # (as for a line alone and in a batch, tests/test_translator.py).
    assert [[(h.text, h.tokens) for h in hyps] for hyps in got] == [
        [(h.text, h.tokens) for h in hyps] for hyps in want
    ]
    scores = [h.score for hyps in got for h in hyps]
    assert scores == pytest.approx([h.score for hyps in want for h in hyps], abs=1e-4)
    again = shared.translate_nbest(LINES, beam_size=beam_size, nbest=beam_size, batch_tokens=60)
    assert [[h.score for h in hyps] for hyps in again] == [[h.score for h in hyps] for hyps in got]


def test_attention_comes_back_from_the_helpers(alone: Translator, shared: Translator):
    want = one_thread(alone, 1, return_attention=True)
    got = shared.translate_nbest(LINES, beam_size=1, batch_tokens=60, return_attention=True)
    for mine, theirs in zip(got, want, strict=True):
        assert mine[0].attention is not None and theirs[0].attention is not None
        assert torch.allclose(mine[0].attention, theirs[0].attention, atol=1e-5)


def test_a_batch_smaller_than_the_pool_and_empty_lines(alone: Translator, shared: Translator):
    lines = ["", "red cat", ""]
    assert shared.translate(lines, batch_tokens=1) == alone.translate(lines, batch_tokens=1)
    assert shared.translate([]) == []


@pytest.mark.skipif(not int8_available(), reason="no int8 CPU backend in this torch")
def test_int8_and_ensembles_share_too(checkpoint: Path):  # noqa: F811
    int8 = Translator.from_checkpoint(checkpoint, precision="int8")
    count = min(3, usable_cpus())  # 3 where the cores allow it (the cap)
    with Translator.from_checkpoint(checkpoint, precision="int8", processes=count) as pooled:
        assert pooled.processes == count
        with single_thread():
            want = int8.translate(LINES, beam_size=5, batch_tokens=60)
        assert pooled.translate(LINES, beam_size=5, batch_tokens=60) == want
    pair = [checkpoint, checkpoint]
    with Translator.from_checkpoints(pair, [1.0, 2.0], processes=2) as ensemble:
        single = Translator.from_checkpoints(pair, [1.0, 2.0])
        with single_thread():
            want = single.translate(LINES, batch_tokens=60)
        assert ensemble.translate(LINES, batch_tokens=60) == want


def test_more_processes_than_cores_are_refused(checkpoint: Path):  # noqa: F811
    too_many = usable_cpus() + 1
    with pytest.raises(ConfigError, match=rf"processes={too_many} is more than the"):
        Translator.from_checkpoint(checkpoint, processes=too_many)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_bad_process_counts_are_one_line_errors(checkpoint: Path, bad: object):  # noqa: F811
    with pytest.raises(ConfigError, match=r"processes=.*expected an integer >= 1"):
        Translator.from_checkpoint(checkpoint, processes=bad)  # type: ignore[arg-type]


def test_processes_decode_on_the_cpu_only(checkpoint: Path):  # noqa: F811
    with pytest.raises(ConfigError):
        Translator.from_checkpoint(checkpoint, device="cuda", processes=2)


def test_a_helper_that_cannot_load_is_a_one_line_error(tmp_path: Path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    pool = DecodePool(LoadSpec((str(broken),), None, "fp32", False), 1)
    with pytest.raises(MtkitError, match=r"broken\.pt") as raised:
        pool.wait_ready()
    assert "\n" not in str(raised.value)


def test_a_helper_that_dies_is_an_error_not_a_hang(checkpoint: Path):  # noqa: F811
    translator = Translator.from_checkpoint(checkpoint, processes=2)
    assert translator.pool is not None
    helper = translator.pool._processes[0]
    os.kill(helper.pid, signal.SIGKILL)
    helper.wait(10)
    with pytest.raises(MtkitError, match=r"decoding process 1 stopped .*exit -9"):
        translator.translate(LINES, batch_tokens=60)
    translator.close()


def test_close_stops_the_helpers_and_the_translator_goes_on_alone(
    checkpoint: Path,  # noqa: F811
    alone: Translator,
):
    translator = Translator.from_checkpoint(checkpoint, processes=2)
    assert translator.pool is not None
    helpers = list(translator.pool._processes)
    translator.close()
    assert all(process.poll() is not None for process in helpers)
    assert translator.processes == 1
    assert translator.translate(SENTENCES) == alone.translate(SENTENCES)


def test_auto_is_two_processes_only_where_they_pay():
    many = AUTO_MIN_SENTENCES
    assert resolve_processes("auto", "cpu", "auto", 2, many) == 2
    assert resolve_processes("auto", "cpu", "auto", 8, many) == 2
    assert resolve_processes("auto", "cpu", "auto", 1, many) == 1  # one core
    assert resolve_processes("auto", "cpu", "auto", 2, many - 1) == 1  # a short input
    assert resolve_processes("auto", "cpu", 2, 2, many) == 1  # pinned threads
    assert resolve_processes("auto", "cuda", "auto", 2, many) == 1
    assert resolve_processes(3, "cpu", "auto", 1, 5) == 3  # asked for: as asked
    assert parse_processes("auto") == "auto" and parse_processes("2") == 2
    for bad in ("0", "-1", "x", "1.5", ""):
        with pytest.raises(ConfigError, match="--processes must be auto or an integer >= 1"):
            parse_processes(bad)


def test_the_command_line_with_two_processes(checkpoint: Path, tmp_path: Path):  # noqa: F811
    source = write_lines(tmp_path / "in.txt", LINES)
    outputs = []
    for options in (["--processes", "2"], ["--processes", "1", "--threads", "1"]):
        out = tmp_path / f"out{len(outputs)}.txt"
        result = run_module(
            "mtkit.translate", str(checkpoint), "-i", str(source), "-o", str(out),
            "--beam-size", "3", "--batch-tokens", "60", *options, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == len(LINES)
    bad = run_module("mtkit.translate", str(checkpoint), "--processes", "0", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "mtkit-translate: error: --processes must be auto or an integer >= 1, not '0'"
    )
    reference = write_lines(tmp_path / "ref.txt", LINES)
    scored = run_module(
        "mtkit.evaluate", str(checkpoint), "--src", str(source), "--ref", str(reference),
        "--processes", "2", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
