"""A checkpoint written by the previous release loads and translates as it did then.

``tests/data/previous_release`` holds a very small model trained by mtkit at commit
fa34593 (the flat layout, before the subpackages), 20 lines of the embedded test set, and
that code's translations of them: greedy, beam 3 (also 2-best with scores) and int8.
Today's code must load the file as it is and give the same text and the same scores,
through the command line and through :class:`~mtkit.Translator`. The folder's README
says how the files were made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import run_module

from mtkit import Translator

HERE = Path(__file__).parent / "data" / "previous_release"
CHECKPOINT = HERE / "best.pt"
INPUT = HERE / "input.en"

# expected output -> (translate options, Translator precision, search options)
CASES: dict[str, tuple[list[str], str, dict[str, int]]] = {
    "greedy.txt": (["--beam-size", "1"], "fp32", {"beam_size": 1}),
    "beam3.txt": (["--beam-size", "3"], "fp32", {"beam_size": 3}),
    "beam3-nbest2-scores.txt": (
        ["--beam-size", "3", "--nbest", "2", "--scores"],
        "fp32",
        {"beam_size": 3, "nbest": 2},
    ),
    "int8-greedy.txt": (["--beam-size", "1", "--precision", "int8"], "int8", {"beam_size": 1}),
    "int8-beam3.txt": (["--beam-size", "3", "--precision", "int8"], "int8", {"beam_size": 3}),
}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The expected files were written with ``--threads 1``; the API tests match it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("expected", sorted(CASES))
def test_the_command_line_translates_as_the_previous_release(expected: str, tmp_path: Path) -> None:
    options, _, _ = CASES[expected]
    output = tmp_path / expected
    result = run_module(
        "mtkit.translate",
        str(CHECKPOINT),
        "-i",
        str(INPUT),
        "-o",
        str(output),
        "--threads",
        "1",
        *options,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_text(encoding="utf-8") == (HERE / expected).read_text(encoding="utf-8")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_translator_translates_as_the_previous_release(
    precision: str, one_thread: None
) -> None:
    sources = INPUT.read_text(encoding="utf-8").splitlines()
    cases = {name: case for name, case in CASES.items() if case[1] == precision}
    with Translator.from_checkpoint(CHECKPOINT, precision=precision) as translator:
        for name, (_, _, search) in cases.items():
            expected = (HERE / name).read_text(encoding="utf-8").splitlines()
            if search.get("nbest", 1) > 1:
                results = translator.translate_nbest(sources, **search)
                lines = [
                    f"{index}\t{rank}\t{hyp.score:.4f}\t{hyp.text}"
                    for index, hyps in enumerate(results)
                    for rank, hyp in enumerate(hyps)
                ]
            else:
                lines = translator.translate(sources, **search)
            assert lines == expected, name
