"""``python -m mtkit.train``, ``mtkit.translate`` and ``mtkit.evaluate`` turn user mistakes
(and a full disk, a closed stream) into one line on stderr and exit code 2.

Every training case must fail before any training starts, and every translate case that
can be found before translating is found before the checkpoint is even read, so each run
takes a few seconds (mostly Python start-up and imports).
"""

from __future__ import annotations

import importlib
import os
import resource
import socket
import stat
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
        ("train.processes=64", "train.processes=64 is not valid; expected an integer from 1 to"),
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


def call_main(
    main: Callable[[list[str]], None], args: list[str], capsys: pytest.CaptureFixture[str]
) -> subprocess.CompletedProcess[str]:
    """``main(args)`` in this process, as :func:`run_cli` would report it. For the cases
    that vary one message: each command's own subprocess case shows that its error also
    reaches a real terminal as one line, without the seconds of a start-up per case."""
    capsys.readouterr()
    environment = dict(os.environ)  # a command may set variables for its child processes
    threads = torch.get_num_threads()  # and its own thread count (--threads)
    try:
        main(args)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(environment)
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


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
def test_damaged_codec_in_a_checkpoint(
    checkpoint: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each damage is found while the checkpoint loads: by the Translator, and by both
    commands (as real commands for the first damage, in this process for the others)."""
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
    source = write_lines(tmp_path / "src.txt", ["red cat"])
    translate = ["-i", str(source), str(damaged)]
    evaluate = [str(damaged), "--src", str(source), "--ref", str(source)]
    if name == "junk-spm":
        results = (
            run_cli("mtkit.translate", *translate, cwd=tmp_path),
            run_cli("mtkit.evaluate", *evaluate, cwd=tmp_path),
        )
    else:
        from mtkit import evaluate as evaluate_command
        from mtkit import translate as translate_command

        results = (
            call_main(translate_command.main, translate, capsys),
            call_main(evaluate_command.main, evaluate, capsys),
        )
    assert f"{damaged}: damaged checkpoint" in error_line(results[0], TRANSLATE)
    assert f"{damaged}: damaged checkpoint" in error_line(results[1], EVALUATE)


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
        (["-o", "{tmp}"], "{tmp}: is a folder, not a regular file; give a file name"),
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


# -- outputs that are no regular file -------------------------------------------------------


def special_node(folder: Path, kind: str) -> Path:
    """A node of ``kind`` in ``folder``: a folder, a named pipe, a socket, a character
    device (a private copy of /dev/null, made only where this process may) or a symbolic
    link to such a device."""
    path = folder / f"node-{kind}"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
    else:
        device = folder / "null-device"
        try:
            os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a device node needs root")
        if kind == "device":
            return device
        path.symlink_to(device)
    return path


def node_type(path: Path) -> int:
    return stat.S_IFMT(path.lstat().st_mode)


SPECIAL = ["folder", "fifo", "socket", "device", "link-to-device"]
KIND_WORDS = {
    "folder": "a folder",
    "fifo": "a named pipe",
    "socket": "a socket",
    "device": "a character device",
    "link-to-device": "a character device",
}


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("command", ["average", "shortlist"])
def test_checkpoint_outputs_refuse_special_files_and_leave_them_alone(
    checkpoint: Path, tmp_path: Path, command: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-o`` of mtkit-average and mtkit-shortlist: a folder, a pipe, a socket or a device
    (also behind a link) is a one-line error before any work, and stays what it was (the
    named pipe's case as a real command, the others in this process)."""
    node = special_node(tmp_path, kind)
    before = {p.name: node_type(p) for p in tmp_path.iterdir()}
    args = [str(checkpoint), "-o", str(node)]
    if kind == "fifo":
        result = run_cli(f"mtkit.{command}", *args, cwd=tmp_path)
    else:
        main = importlib.import_module(f"mtkit.{command}").main
        result = call_main(main, args, capsys)
    line = error_line(result, f"mtkit-{command}: error:")
    assert line == (
        f"mtkit-{command}: error: -o {node}: is {KIND_WORDS[kind]}, not a regular file; "
        "give a file name"
    )
    assert {p.name: node_type(p) for p in tmp_path.iterdir()} == before  # nothing replaced


def test_a_checkpoint_output_through_a_link_replaces_the_file_it_points_at(
    checkpoint: Path, tmp_path: Path
) -> None:
    target = tmp_path / "avg.pt"
    target.write_bytes(b"an older file")
    link = tmp_path / "link.pt"
    link.symlink_to(target)
    result = run_cli("mtkit.average", str(checkpoint), "-o", str(link), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and link.resolve() == target
    assert len(Translator.from_checkpoint(link).translate(["red cat"])) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avg.pt", "link.pt"]  # no temp file


@pytest.mark.parametrize("kind", ["device", "link-to-device"])
def test_translations_are_written_into_a_device(
    checkpoint: Path, tmp_path: Path, kind: str
) -> None:
    """A stream (``-o /dev/null``, a character device behind a link) is written into, as
    before; the node stays."""
    node = special_node(tmp_path, kind)
    result = run_cli("mtkit.translate", str(checkpoint), "-o", str(node), cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert node_type(node) == (stat.S_IFCHR if kind == "device" else stat.S_IFLNK)
    devnull = run_cli("mtkit.translate", str(checkpoint), "-o", os.devnull, cwd=tmp_path)
    assert devnull.returncode == 0, devnull.stderr
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_translations_are_written_into_a_named_pipe(checkpoint: Path, tmp_path: Path) -> None:
    pipe = special_node(tmp_path, "fifo")
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # a reader waits: the write never blocks
    try:
        result = run_cli(
            "mtkit.translate", str(checkpoint), "-o", str(pipe), cwd=tmp_path,
            stdin="red cat\n\nblue dog\n",
        )  # fmt: skip
        received = os.read(reader, 1 << 16)  # what the command left in the pipe
    finally:
        os.close(reader)
    assert result.returncode == 0, result.stderr
    assert received.count(b"\n") == 3 and stat.S_ISFIFO(pipe.lstat().st_mode)


@pytest.mark.parametrize("kind", ["socket", "folder"])
def test_translations_refuse_a_socket_or_a_folder(tmp_path: Path, kind: str) -> None:
    node = special_node(tmp_path, kind)
    missing = str(tmp_path / "missing.pt")  # refused before the checkpoint is read
    line = error_line(run_cli("mtkit.translate", missing, "-o", str(node), cwd=tmp_path), TRANSLATE)
    assert f"{node}: is {KIND_WORDS[kind]}, not a regular file; give a file name" in line
    assert node_type(node) == (stat.S_IFSOCK if kind == "socket" else stat.S_IFDIR)


@pytest.mark.parametrize("kind", ["fifo", "link-to-device", "folder"])
@pytest.mark.parametrize("name", ["train.log", "metrics.csv", "best.pt", "step-000005.pt"])
def test_run_files_that_are_no_regular_file_are_refused(
    tmp_path: Path, corpus: Path, name: str, kind: str
) -> None:
    """A run directory whose train.log, metrics.csv or checkpoint is a pipe, a device or a
    folder: one line before training (a pipe would block, a device would be replaced)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    node = special_node(tmp_path, kind)
    node.rename(run_dir / name)
    before = node_type(run_dir / name)
    line = error_line(run_train(tmp_path, *local(corpus)))
    assert line == (
        f"{PREFIX} {run_dir / name}: is {KIND_WORDS[kind]}, not a regular file; a run writes "
        f"its {name} there: remove it or choose another hydra.run.dir"
    )
    assert sorted(p.name for p in run_dir.iterdir()) == [name]
    assert node_type(run_dir / name) == before  # still there, not replaced


def test_processes_beyond_the_usable_cores_are_a_usage_error(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert cores
    missing = str(tmp_path / "missing.pt")
    many = ["--processes", str(cores + 1)]
    for command, args in (
        ("translate", [missing, *many]),
        ("evaluate", [missing, "--src", missing, "--ref", missing, *many]),
    ):
        result = run_cli(f"mtkit.{command}", *args, cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"mtkit-{command}: error: --processes must be auto or an integer from 1 to "
            f"{cores} (the cores this process may use), not '{cores + 1}'"
        )
    usage = run_cli("mtkit.translate", "--help", cwd=tmp_path)
    assert f"N from 1 to the cores this process may use ({cores} here)" in " ".join(
        usage.stdout.split()
    )


def test_ensemble_weights_with_an_infinite_sum_are_named_as_given(
    checkpoint: Path, tmp_path: Path
) -> None:
    args = [str(checkpoint), str(checkpoint), "--weights", "1e308", "1e308"]
    line = error_line(run_cli("mtkit.translate", *args, cwd=tmp_path), TRANSLATE)
    assert line == (
        f"{TRANSLATE} --weights 1e+308 1e+308: expected numbers >= 0 with a positive sum "
        "below 1.8e308"
    )


def test_data_help_is_its_usage(tmp_path: Path) -> None:
    for flag in ("--help", "-h"):
        result = run_cli("mtkit.data", flag, cwd=tmp_path)
        assert result.returncode == 0 and result.stderr == ""
        assert result.stdout.startswith("usage: mtkit-data [KEY=VALUE ...]")
