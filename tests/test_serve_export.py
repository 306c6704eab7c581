"""``mtkit-serve DIR`` on an ONNX export folder: the same HTTP API, decoded by the runtime.

The service is built as the command line builds it (``served_model(parse_args(...))``)
for each worker kind an export serves: a model process, two of them, a worker thread.
Its answers must equal ``mtkit-onnx``'s output for the same lines and options; what the
runtime cannot do is a one-line start-up error or a 422; and the hostile requests of
tests/test_serve_hostile.py run against it unchanged (imported below, so they use this
module's ``service`` and ``translator`` fixtures), with SIGTERM under load here too.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi", reason="the service needs the serve extra")
pytest.importorskip("onnxruntime", reason="serving an export needs the onnx extra")

from test_ensemble import trained_checkpoint
from test_serve import ServerThread, call
from test_serve_faults import assert_stops_under_load
from test_serve_hostile import (  # noqa: F401  (the hostile tests, run on an export)
    Service,
    test_malformed_unicode_is_a_422_naming_the_field_and_position,
    test_non_finite_huge_and_wrong_numbers_are_a_422_naming_the_field,
    test_the_body_limit_counts_the_bytes_read_whatever_the_framing,
)

from mtkit.export.writer import export_loaded
from mtkit.onnx_runtime.__main__ import main as onnx_main
from mtkit.onnx_runtime.translator import OnnxTranslator
from mtkit.search.load import load
from mtkit.serve.__main__ import main, parse_args
from mtkit.serve.app import create_app
from mtkit.serve.batcher import Batcher, Request
from mtkit.serve.export import NO_ATTENTION
from mtkit.serve.onnx import ExportTranslator
from mtkit.serve.setup import served_model

TEXTS = ["red cat sleeps", "", "the big dog runs near the house", "a tree", "green dog"]
LIMITS = ["--max-beam", "8", "--max-lines", "20", "--max-chars", "2000", "--queue-size", "64"]
KINDS = {  # the worker kinds an export serves, as command-line options
    "process": [],
    "workers2": ["--workers", "2"],
    "thread": ["--worker", "thread"],
}


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_kept() -> Iterator[None]:
    """served_model sets this process's torch threads (to --threads); put them back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export of the tiny trained test model, with its int8 step graph."""
    out = tmp_path_factory.mktemp("export") / "model"
    export_loaded(load(trained_checkpoint(tmp_path_factory, seed=1)), out, int8=True)
    return out


@pytest.fixture(scope="module")
def translator(folder: Path) -> OnnxTranslator:
    """The runtime's own translator: what every answer must equal."""
    return OnnxTranslator.from_folder(folder)


@pytest.fixture(scope="module", params=list(KINDS))
def service(request: pytest.FixtureRequest, folder: Path) -> Iterator[Service]:
    argv = [str(folder), "--threads", "1", *KINDS[request.param], *LIMITS]
    app = create_app(*served_model(parse_args(argv)))
    worker = app.state.batcher

    def pids() -> set[int]:
        members = getattr(worker, "members", [worker])
        return {member.pid for member in members if getattr(member, "pid", None)}

    with ServerThread(app) as server:
        yield Service(request.param, server.port, pids)


def _onnx_lines(folder: Path, tmp_path: Path, texts: list[str], *options: str) -> list[str]:
    """``mtkit-onnx FOLDER -i IN -o OUT OPTIONS``'s output lines."""
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        onnx_main([str(folder), "-i", str(source), "-o", str(target), *options])
    assert stop.value.code == 0
    return target.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize(("beam", "nbest"), [(1, 1), (3, 1), (4, 3)])
def test_answers_equal_mtkit_onnx(
    service: Service,
    folder: Path,
    translator: OnnxTranslator,
    tmp_path: Path,
    beam: int,
    nbest: int,
):
    """Texts and 4-decimal scores as mtkit-onnx prints them, exact scores as the runtime's."""
    status, _, answer = call(
        service.port, "POST", "/v1/translate", {"text": TEXTS, "beam_size": beam, "nbest": nbest}
    )
    assert status == 200, answer
    assert (answer["beam_size"], answer["nbest"]) == (beam, nbest)
    results = answer["translations"]
    if nbest == 1:
        lines = _onnx_lines(folder, tmp_path, TEXTS, "--beam-size", str(beam), "--scores")
        assert [f"{r['score']:.4f}\t{r['text']}" for r in results] == lines
    else:
        lines = _onnx_lines(
            folder, tmp_path, TEXTS, "--beam-size", str(beam), "--nbest", str(nbest)
        )
        got = [
            f"{index}\t{rank}\t{hyp['score']:.4f}\t{hyp['text']}"
            for index, result in enumerate(results)
            for rank, hyp in enumerate(result["nbest"])
        ]
        assert got == lines
    want = translator.translate_nbest(TEXTS, beam_size=beam, nbest=nbest)
    for result, hyps in zip(results, want, strict=True):
        assert [(h["text"], h["score"]) for h in result["nbest"]] == [
            (h.text, h.score) for h in hyps
        ]
        assert (result["text"], result["score"]) == (hyps[0].text, hyps[0].score)
        assert "attention" not in result


def test_concurrent_requests_each_get_what_they_get_alone(
    service: Service, translator: OnnxTranslator
):
    """Requests decoded together (greedy ones grouped like beam ones) answer as alone."""
    bodies = [{"text": TEXTS[i:] + TEXTS[:i], "beam_size": 1 + i % 3} for i in range(12)]
    answers: list[Any] = [None] * len(bodies)

    def send(index: int) -> None:
        answers[index] = call(service.port, "POST", "/v1/translate", bodies[index])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for body, (status, _, answer) in zip(bodies, answers, strict=True):
        assert status == 200
        want = translator.translate_nbest(body["text"], beam_size=body["beam_size"])
        results = answer["translations"]
        assert [t["text"] for t in results] == [hyps[0].text for hyps in want]
        # in a batch of other lengths, the same tokens; scores equal up to float rounding
        scores = [hyps[0].score for hyps in want]
        assert [t["score"] for t in results] == pytest.approx(scores, abs=1e-5)


def test_attention_is_a_422_naming_the_field(service: Service, translator: OnnxTranslator):
    pids = service.worker_pids()
    status, _, answer = call(
        service.port, "POST", "/v1/translate", {"text": "red cat", "attention": True}
    )
    assert (status, answer) == (422, {"detail": NO_ATTENTION})
    assert NO_ATTENTION.startswith("attention: ")
    status, _, answer = call(
        service.port, "POST", "/v1/translate", {"text": "red cat", "attention": False}
    )
    assert status == 200
    assert answer["translations"][0]["text"] == translator.translate(["red cat"])[0]
    assert service.worker_pids() == pids


def test_model_description_names_the_export(
    service: Service, folder: Path, translator: OnnxTranslator
):
    status, _, info = call(service.port, "GET", "/v1/model")
    assert status == 200
    assert info["backend"] == "onnx" and info["checkpoints"] == [folder.name]
    assert info["models"][0]["cell"] == translator.model.meta["members"][0]["architecture"]["cell"]
    assert info["vocabulary"]["output"] == len(translator.model.output_ids)
    assert info["vocabulary"]["reverse_source"] is True
    assert info["decoding"]["beam_size"] == translator.defaults.beam_size
    assert info["server"]["beam_size"] == translator.defaults.beam_size
    threads = 2 if service.kind == "workers2" else 1  # the model processes' threads, summed
    assert (info["device"], info["precision"], info["server"]["threads"]) == (
        "cpu",
        "fp32",
        threads,
    )
    status, _, health = call(service.port, "GET", "/healthz")
    assert (status, health["status"]) == (200, "ok")
    status, _, page = call(service.port, "GET", "/static/app.js")
    assert status == 200 and "attention: withAttention" in page


def test_a_failing_translation_fails_that_request_alone(folder: Path, translator: OnnxTranslator):
    served = ExportTranslator.open(folder)
    original = served.runtime.translate_nbest
    failures = [RuntimeError("a bug in the runtime")]

    def search(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return original(*args, **kwargs)

    served.runtime.translate_nbest = search  # type: ignore[method-assign]
    batcher = Batcher(served, wait_ms=0)
    batcher.start()
    try:
        error = batcher.submit(Request(("red cat",), 1)).exception(30)
        assert isinstance(error, RuntimeError) and str(error) == "a bug in the runtime"
        assert batcher.health == ("ok", None)
        got = batcher.submit(Request(("red cat", "a tree"), 2)).result(30)
        assert [hyps[0].text for hyps in got] == translator.translate(
            ["red cat", "a tree"], beam_size=2
        )
    finally:
        batcher.close()


def test_int8_serves_the_int8_step_graph(folder: Path):
    argv = [str(folder), "--precision", "int8", "--worker", "thread", "--threads", "1"]
    served, _ = served_model(parse_args(argv))
    want = OnnxTranslator.from_folder(folder, "int8").translate_nbest(TEXTS, beam_size=2)
    got = served.translator.translate_nbest(TEXTS, beam_size=2)
    assert [(h[0].text, h[0].score) for h in got] == [(h[0].text, h[0].score) for h in want]
    assert served.info["precision"] == "int8"


def _error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    return int(stop.value.code or 0), capsys.readouterr().err.strip()


def test_options_an_export_cannot_serve_are_one_line_errors(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    refused = {
        ("--shortlist",): "--shortlist: an ONNX export has no shortlist",
        ("--weights", "1"): "--weights: an export's ensemble weights are in its model.json",
        ("--device", "cuda"): "--device cuda: an ONNX export runs on the CPU",
        ("--precision", "bf16"): "--precision bf16: an ONNX export runs in fp32 or int8",
        ("--worker", "inline"): "--worker inline: not available for an ONNX export (it steps "
        "PyTorch's greedy stream); use --worker process or thread",
    }
    for options, message in refused.items():
        status, err = _error_line(capsys, str(folder), *options)
        assert (status, err.splitlines()[-1]) == (2, f"mtkit-serve: error: {message}"), options
    status, err = _error_line(capsys, str(folder), str(folder))
    assert status == 2 and err.splitlines()[-1] == (
        f"mtkit-serve: error: {folder} is an ONNX export folder, served alone; export an "
        "ensemble as one folder (mtkit-export CKPT CKPT -o DIR)"
    )
    # a folder that is not an export, and an export without the int8 graph: the runtime's lines
    status, err = _error_line(capsys, str(tmp_path), "--port", "0")
    assert status == 2 and err == (
        f"mtkit-serve: error: {tmp_path / 'model.json'}: missing; is {tmp_path} an export "
        "folder of mtkit-export?"
    )
    fp32_only = tmp_path / "fp32"
    shutil.copytree(folder, fp32_only, ignore=shutil.ignore_patterns("*int8*"))
    status, err = _error_line(capsys, str(fp32_only), "--precision", "int8", "--port", "0")
    assert status == 2 and err.startswith(f"mtkit-serve: error: {fp32_only}") and "\n" not in err


@pytest.mark.parametrize("kind", list(KINDS))
def test_sigterm_under_load_stops_an_export_service_within_two_seconds(
    folder: Path, tmp_path: Path, kind: str
):
    argv = [str(folder), "--threads", "1", *KINDS[kind]]
    banner = f"({folder.name}, ONNX export) on http://"
    assert_stops_under_load(argv, TEXTS, tmp_path / "stderr.txt", kind, banner)
