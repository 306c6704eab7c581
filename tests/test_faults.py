"""The fault suite: kill -9 at random moments, stop signals everywhere, a fuzzed input.

- ``kill -9`` of a training run at seeded random moments, among them inside a corpus
  cache build and inside checkpoint writes: every checkpoint left behind loads, and the
  next run (``train.resume=last.pt``, or a fresh one with ``train.overwrite=true``)
  starts and finishes cleanly, leaving no temp file or half-built cache behind.
- SIGINT and SIGTERM during start-up (corpus preparation), training steps, validation
  and translation: the command exits 130 / 143 within :data:`STOP_SECONDS`, without a
  traceback.
- A 10,000-line fuzzed input comes back from ``mtkit.translate`` line for line.

Everything runs on tiny corpora and models in subprocesses, as a user would run it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import WORDS, tiny_pairs, write_lines
from helpers import TINY_OVERRIDES, tiny_run

from mtkit.model.checkpoint import load_checkpoint
from mtkit.search.translator import Translator
from mtkit.training.trainer import fit

pytestmark = pytest.mark.faults

SEED = 1123
STOP_SECONDS = 2.0  # from the signal to the end of the process
STEPS = 30  # of each killed run: six validations, at least twelve checkpoint writes


# -- running and watching commands --------------------------------------------------------


@dataclass
class Command:
    """A command started in the background, its stderr going to a file."""

    process: subprocess.Popen[bytes]
    stderr: Path

    def text(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 240.0) -> None:
        """Poll ``ready`` every 10 ms; fail if the command ends first or it takes too long."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                raise AssertionError(f"ended (status {self.process.returncode}) before {what}:\n"
                                     f"{self.text()[-3000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.01)

    def stop(self, number: int) -> float:
        """Send signal ``number`` and return the seconds until the process ended."""
        start = time.monotonic()
        self.process.send_signal(number)
        try:
            self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        return time.monotonic() - start


def start(args: list[str], cwd: Path, env: dict[str, str]) -> Command:
    stderr = cwd / f"stderr-{time.monotonic_ns()}.txt"
    with stderr.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=handle
        )
    return Command(process, stderr)


def environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "MTKIT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}


def contains(path: Path, text: str) -> Callable[[], bool]:
    return lambda: path.is_file() and text in path.read_text(errors="replace")


def _owner_recorded(folder: Path) -> bool:
    try:
        return bool(json.loads((folder / "owner.json").read_text()))
    except (OSError, ValueError):
        return False


def building(cache: Path, files: int = 0) -> Callable[[], bool]:
    """True once a corpus cache build has started (its ``building-*`` folder exists) and
    has written at least ``files`` files."""

    def ready() -> bool:
        folders = list(cache.glob("building-*"))
        if not folders or not _owner_recorded(folders[0]):
            return False  # a folder killed before its owner record is removed after a minute
        return sum(1 for p in folders[0].rglob("*") if p.is_file()) >= files

    return ready


def train_args(corpus: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [*TINY_OVERRIDES, f"data.dir={corpus}", f"hydra.run.dir={run_dir}", *overrides]


def assert_stopped(command: Command, number: int, seconds: float) -> str:
    stderr = command.text()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert command.process.returncode == 128 + number, stderr[-3000:]
    assert seconds < STOP_SECONDS, f"{seconds:.2f} s to stop:\n{stderr[-3000:]}"
    return stderr


def make_corpus(folder: Path, sizes: dict[str, int]) -> Path:
    for split, n in sizes.items():
        src, tgt = tiny_pairs(n, seed=len(split) + n)
        write_lines(folder / f"{split}.xx", src)
        write_lines(folder / f"{split}.yy", tgt)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), {"train": 300, "valid": 40, "test": 20})


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One corpus cache for the runs that are not about building it."""
    return tmp_path_factory.mktemp("cache")


# -- kill -9 --------------------------------------------------------------------------------

# The training command, with the N-th checkpoint write (FAULT_SAVE "N:half" or "N:whole")
# stopped before its rename: the temp file then holds half (or all) of the checkpoint's
# bytes, the moment is announced in FAULT_MARKER, and the process waits to be killed.
TRAIN_WITH_SLOW_SAVE = """
import os, time
from pathlib import Path

count, (chosen, stage) = [0], os.environ["FAULT_SAVE"].split(":")
real_replace = os.replace

def replace(src, dst, *args, **kwargs):
    name = Path(src).name
    if name.startswith(".") and ".pt." in name and name.endswith(".tmp"):
        count[0] += 1
        if count[0] == int(chosen):
            if stage == "half":
                os.truncate(src, os.path.getsize(src) // 2)
            open(os.environ["FAULT_MARKER"], "w").close()
            time.sleep(300)  # killed here
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
from mtkit.train import main
main()
"""


# The training command with every file opened for writing inside a corpus build folder
# held back a little, so that a build of the tiny corpus (well under a second) lasts long
# enough for the test to kill it after a chosen number of files.
TRAIN_WITH_SLOW_BUILD = """
import pathlib, time

real_open = pathlib.Path.open

def slow_open(self, mode="r", *args, **kwargs):
    handle = real_open(self, mode, *args, **kwargs)
    if "w" in mode and any(part.startswith("building-") for part in self.parts):
        time.sleep(0.3)
    return handle

pathlib.Path.open = slow_open
from mtkit.train import main
main()
"""


@dataclass(frozen=True)
class Moment:
    """When to kill: ``cache`` (once a corpus build has written ``files`` files), ``save``
    (inside the ``save``-th checkpoint write, after half or all of its bytes) or ``clock``
    (``seconds`` after the command started)."""

    kind: str
    seconds: float = 0.0
    files: int = 0
    save: int = 0
    stage: str = ""

    def __str__(self) -> str:
        if self.kind == "cache":
            return f"cache-{self.files}files"
        if self.kind == "save":
            return f"save{self.save}-{self.stage}"
        return f"clock-{self.seconds:.2f}s"


def kill_moments(seed: int) -> list[Moment]:
    rng = random.Random(seed)
    cache = [Moment("cache", files=files) for files in rng.sample(range(1, 9), 3)]
    saves = [Moment("save", save=save, stage=rng.choice(["half", "whole"]))
             for save in rng.sample(range(1, 13), 4)]  # fmt: skip
    clock = [Moment("clock", seconds=rng.uniform(0.5, 12.0)) for _ in range(5)]
    return cache + saves + clock


@pytest.mark.parametrize("moment", kill_moments(SEED), ids=str)
def test_kill_9_leaves_loadable_checkpoints_and_a_clean_next_run(
    moment: Moment, corpus: Path, shared_cache: Path, tmp_path: Path
):
    cache = tmp_path / "cache" if moment.kind == "cache" else shared_cache
    run_dir = tmp_path / "run"
    env = environment(cache)
    args = train_args(corpus, run_dir, f"train.max_steps={STEPS}", "train.keep_checkpoints=2")
    if moment.kind == "save":
        env |= {"FAULT_SAVE": f"{moment.save}:{moment.stage}",
                "FAULT_MARKER": str(tmp_path / "in-save")}  # fmt: skip
        command = start(["-c", TRAIN_WITH_SLOW_SAVE, *args], tmp_path, env)
        command.wait_for(lambda: (tmp_path / "in-save").exists(), f"checkpoint write {moment}")
    else:
        program = ["-c", TRAIN_WITH_SLOW_BUILD] if moment.kind == "cache" else ["-m", "mtkit.train"]
        command = start([*program, *args], tmp_path, env)
        if moment.kind == "cache":
            command.wait_for(building(cache, moment.files), f"a cache build at {moment}")
        time.sleep(moment.seconds)
    command.process.kill()
    command.process.wait()
    if moment.kind == "save":
        assert list(run_dir.glob(".*.pt.*.tmp")), "killed inside a write: its temp file is there"
    if moment.kind == "cache":
        assert list(cache.glob("building-*")), "killed inside a build: its folder is there"

    assert_checkpoints_load(run_dir)
    resume = run_dir / "last.pt"
    again = ["train.resume=" + str(resume)] if resume.exists() else ["train.overwrite=true"]
    result = subprocess.run(
        [sys.executable, "-m", "mtkit.train", *args, *again],
        cwd=tmp_path, env=environment(cache), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert load_checkpoint(resume)["train_state"]["progress"]["step"] == STEPS
    assert_checkpoints_load(run_dir)
    assert not list(run_dir.glob("*.tmp")), "temp files of the killed run are removed"
    assert not list(cache.glob("building-*")), "half-built caches of the killed run are removed"


def assert_checkpoints_load(run_dir: Path) -> None:
    for path in sorted(run_dir.glob("*.pt")):
        translator = Translator.from_checkpoint(path)
        assert len(translator.translate(["red cat", ""], beam_size=1)) == 2, path


# -- stop signals ---------------------------------------------------------------------------

SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


@pytest.mark.parametrize("number", SIGNALS)
def test_a_signal_during_corpus_preparation(number: int, corpus: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    args = train_args(corpus, tmp_path / "run", "train.max_steps=5")
    command = start(["-m", "mtkit.train", *args], tmp_path, environment(cache))
    command.wait_for(building(cache), "a corpus cache build")
    assert_stopped(command, number, command.stop(number))
    assert not (tmp_path / "run" / "last.pt").exists()
    assert not list(cache.glob("building-*")), "the half-built cache folder is removed"


@pytest.mark.parametrize("number", SIGNALS)
def test_a_signal_during_training_steps(
    number: int, corpus: Path, shared_cache: Path, tmp_path: Path
):
    run_dir = tmp_path / "run"
    args = train_args(corpus, run_dir, "train.max_steps=100000", "train.valid_every=100000")
    command = start(["-m", "mtkit.train", *args], tmp_path, environment(shared_cache))
    command.wait_for(contains(run_dir / "train.log", "epoch 2:"), "the second epoch")
    stderr = assert_stopped(command, number, command.stop(number))
    assert "train.resume=" in stderr
    assert_checkpoints_load(run_dir)


@pytest.mark.parametrize("number", SIGNALS)
def test_a_signal_during_validation(number: int, tmp_path: Path):
    """A validation split of 3,000 pairs takes seconds to score; the signal comes just
    after the log line of step 10, where the second validation begins."""
    corpus = make_corpus(tmp_path / "corpus", {"train": 200, "valid": 3000, "test": 20})
    run_dir = tmp_path / "run"
    args = train_args(corpus, run_dir, "train.max_steps=100000", "train.valid_every=5")
    command = start(["-m", "mtkit.train", *args], tmp_path, environment(tmp_path / "cache"))
    command.wait_for(contains(run_dir / "train.log", "step 10 epoch 1 |"), "step 10")
    time.sleep(0.2)
    assert_stopped(command, number, command.stop(number))
    log = (run_dir / "train.log").read_text()
    assert "step 5 validation" in log and "step 10 validation" not in log, log[-2000:]
    assert_checkpoints_load(run_dir)


@pytest.fixture(scope="module")
def checkpoint(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained")
    fit(tiny_run(corpus, max_steps=40, valid_every=20, lr=0.01), run_dir)
    return run_dir / "best.pt"


@pytest.mark.parametrize("moment", ["start-up", "translating"])
@pytest.mark.parametrize("number", SIGNALS)
def test_a_signal_during_translation(number: int, moment: str, checkpoint: Path, tmp_path: Path):
    """While the command imports torch and loads the model, or mid-way through a file."""
    source = write_lines(tmp_path / "test.xx", tiny_pairs(20_000, seed=5)[0])
    output = tmp_path / "out.txt"
    output.write_text("an earlier translation\n")
    args = ["-m", "mtkit.translate", str(checkpoint), "-i", str(source), "-o", str(output)]
    args += ["--batch-tokens", "3000"]
    command = start(args, tmp_path, dict(os.environ, OMP_NUM_THREADS="1"))

    def translating() -> bool:  # the progress bar has counted a first batch
        counts = re.findall(r"(\d+)/20000", command.text())
        return bool(counts) and int(counts[-1]) > 0

    if moment == "start-up":
        time.sleep(0.3)
    else:
        command.wait_for(translating, "translation progress")
    stderr = assert_stopped(command, number, command.stop(number))
    assert stderr.rstrip().splitlines()[-1] == f"mtkit-translate: stopped by {number.name}"
    assert output.read_text() == "an earlier translation\n"
    assert not list(tmp_path.glob(".out.txt.*")), "no temp file is left"


def test_a_huge_input_is_cut_at_the_training_length_limit(checkpoint: Path):
    """``min_len`` forbids an early end, so each output runs to its length limit."""
    translator = Translator.from_checkpoint(checkpoint)
    assert translator.options().max_len_cap == 87  # 1.5 x data.max_len (50) + 12
    huge = "red cat sleeps near the big house " * 3000
    [cut] = translator.translate_nbest([huge], beam_size=1, min_len=10_000)
    assert len(cut[0].tokens) == 87
    [own] = translator.translate_nbest(["red cat"], beam_size=1, min_len=10_000)
    pieces = len(translator.codec.encode_source(["red cat"])[0]) - 1  # without EOS
    assert len(own[0].tokens) == int(1.5 * pieces) + 12  # a short input keeps its own limit
    [chosen] = translator.translate_nbest([huge], beam_size=2, min_len=10_000, max_len_cap=20)
    assert len(chosen[0].tokens) == 20


# -- fuzzed input ---------------------------------------------------------------------------


def fuzzed_lines(n: int, seed: int) -> list[bytes]:
    """``n`` input lines (without their ``\\n``) that try to break the 1:1 line contract."""
    rng = random.Random(seed)
    separators = ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x00", "\r", "\t"]

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    def line(kind: int) -> bytes:
        if kind == 0:
            return b""
        if kind == 1:
            return rng.choice([" ", "\t", "\r", "\u2028", "\u0085 \u2029"]).encode()
        if kind == 2:  # a separator (or NUL, or CR) inside the sentence
            return f"{words(2)}{rng.choice(separators)}{words(3)}".encode()
        if kind == 3:
            return f"{words(4)}\r".encode()  # CRLF
        if kind == 4:  # invalid UTF-8: a stray byte, a cut sequence
            return words(2).encode() + rng.choice([b"\xff", b"\xc3", b"\xe2\x80"]) + b" cat"
        if kind == 5:
            return f"Кошка {words(2)} 猫 🐈".encode()
        return words(rng.randint(1, 9)).encode()

    lines = [line(rng.choice([0, 1, 2, 2, 3, 4, 5, 6, 6, 6, 6])) for _ in range(n)]
    lines[0] = b"\xef\xbb\xbf" + lines[0]  # a byte order mark
    huge = ((words(7) + " ") * 10_000)[:100_000].encode()
    for position in rng.sample(range(1, n), 2):
        lines[position] = huge
    return lines


def test_a_fuzzed_input_comes_back_line_for_line(checkpoint: Path, tmp_path: Path):
    lines = fuzzed_lines(10_000, SEED)
    source = tmp_path / "fuzz.txt"
    source.write_bytes(b"\n".join(lines) + b"\n")
    result = subprocess.run(
        [sys.executable, "-m", "mtkit.translate", str(checkpoint), "-i", str(source),
         "--errors", "replace", "--beam-size", "1", "--batch-tokens", "20000"],
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, timeout=600,
    )  # fmt: skip
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert result.stdout.endswith(b"\n")
    output = result.stdout[:-1].split(b"\n")
    assert len(output) == len(lines)
    for number, (raw, out) in enumerate(zip(lines, output, strict=True), start=1):
        text = raw.decode("utf-8", errors="replace").replace("\ufeff", "").rstrip("\r")
        if not text.strip():
            assert out == b"", f"line {number}: empty input, output {out[:80]!r}"
        assert b"\r" not in out, f"line {number}"
    huge = [str(n) for n, raw in enumerate(lines, start=1) if len(raw) == 100_000]
    assert (
        f"2 input(s) longer than the longest training sentence (50 subwords), line(s) "
        f"{', '.join(huge)}: translating anyway; output cut at 87 subwords" in stderr
    )


# -- many decoding helpers, and the other commands that start processes or write files ------

# A command run as if this process could use FAULT_CORES cores, so that it may start more
# decoding helpers than this machine has: ``python -c WITH_CORES MODULE ARGS...``.
WITH_CORES = """
import os, runpy, sys
import mtkit.runtime as runtime
runtime.usable_cpus = lambda: int(os.environ["FAULT_CORES"])
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""
MANY = 4  # processes: this one and three helpers, on a machine of two cores or more


def child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def gone(pids: list[int], timeout: float = 5.0) -> bool:
    """Whether every process of ``pids`` has ended (a zombie counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for pid in pids:
            try:
                states.append(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
            except OSError:
                states.append("gone")
        if all(state in ("gone", "Z") for state in states):
            return True
        time.sleep(0.05)
    return False


LINUX_ONLY = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the helpers through /proc (Linux)"
)


@LINUX_ONLY
@pytest.mark.parametrize("moment", ["helpers-loading", "translating"])
@pytest.mark.parametrize("number", SIGNALS)
def test_a_signal_stops_many_decoding_helpers_at_once(
    number: int, moment: str, checkpoint: Path, tmp_path: Path
):
    """``--processes 4`` (three helpers on this machine's cores): the stop takes under
    STOP_SECONDS, prints one line and no "Exception ignored", leaves no helper, no temp
    file, and the earlier output file as it was."""
    source = write_lines(tmp_path / "test.xx", tiny_pairs(20_000, seed=5)[0])
    output = tmp_path / "out.txt"
    output.write_text("an earlier translation\n")
    args = ["-c", WITH_CORES, "mtkit.translate", str(checkpoint), "-i", str(source),
            "-o", str(output), "--batch-tokens", "3000", "--processes", str(MANY)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", FAULT_CORES=str(MANY))
    command = start(args, tmp_path, env)
    pid = command.process.pid
    command.wait_for(lambda: len(child_pids(pid)) == MANY - 1, "three helpers started")
    if moment == "translating":
        command.wait_for(lambda: bool(re.search(r"[1-9]\d*/20000", command.text())), "progress")
    helpers = child_pids(pid)
    stderr = assert_stopped(command, number, command.stop(number))
    assert "Exception ignored" not in stderr, stderr[-3000:]
    assert stderr.rstrip().splitlines()[-1] == f"mtkit-translate: stopped by {number.name}"
    assert gone(helpers), "every helper ends with the command"
    assert output.read_text() == "an earlier translation\n"
    assert not list(tmp_path.glob(".out.txt.*")), "no temp file is left"


@LINUX_ONLY
@pytest.mark.parametrize("number", SIGNALS)
def test_a_signal_stops_evaluate_and_its_helpers(number: int, checkpoint: Path, tmp_path: Path):
    sources, references = tiny_pairs(20_000, seed=6)
    source = write_lines(tmp_path / "test.xx", sources)
    reference = write_lines(tmp_path / "test.yy", references)
    args = ["-c", WITH_CORES, "mtkit.evaluate", str(checkpoint), "--src", str(source),
            "--ref", str(reference), "--processes", str(MANY)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", FAULT_CORES=str(MANY))
    command = start(args, tmp_path, env)
    command.wait_for(lambda: len(child_pids(command.process.pid)) == MANY - 1, "helpers")
    helpers = child_pids(command.process.pid)
    stderr = assert_stopped(command, number, command.stop(number))
    assert "Exception ignored" not in stderr, stderr[-3000:]
    assert stderr.rstrip().splitlines()[-1] == f"mtkit-evaluate: stopped by {number.name}"
    assert gone(helpers)


# mtkit.data with every file written inside a build folder held back a little (see
# TRAIN_WITH_SLOW_BUILD).
DATA_WITH_SLOW_BUILD = TRAIN_WITH_SLOW_BUILD.replace(
    "from mtkit.train import main", "from mtkit.data import main"
)


@LINUX_ONLY
@pytest.mark.parametrize("number", SIGNALS)
def test_a_signal_during_data_preparation(number: int, corpus: Path, tmp_path: Path):
    """``mtkit.data`` stops like the other commands and removes its half-built cache folder
    at once (not only at the next run), its helper processes with it."""
    cache = tmp_path / "cache"
    args = ["-c", DATA_WITH_SLOW_BUILD, *TINY_OVERRIDES, f"data.dir={corpus}"]
    command = start(args, tmp_path, environment(cache))
    command.wait_for(building(cache, files=2), "a corpus cache build")
    helpers = child_pids(command.process.pid)
    stderr = assert_stopped(command, number, command.stop(number))
    assert stderr.rstrip().splitlines()[-1] == f"mtkit-data: stopped by {number.name}"
    assert "BrokenPipeError" not in stderr and "Exception ignored" not in stderr
    assert not list(cache.glob("building-*")), "the half-built cache folder is removed at once"
    assert gone(helpers)


# mtkit.average with its write held inside the temp file: FAULT_MARKER announces it.
AVERAGE_WITH_SLOW_WRITE = """
import os, time
real_fsync = os.fsync

def fsync(fd):
    open(os.environ["FAULT_MARKER"], "w").close()
    time.sleep(300)  # stopped here

os.fsync = fsync
from mtkit.average import main
main()
"""


@pytest.mark.parametrize("number", SIGNALS)
def test_a_signal_during_a_checkpoint_write_keeps_the_old_file(
    number: int, checkpoint: Path, tmp_path: Path
):
    output = tmp_path / "avg.pt"
    output.write_bytes(b"an earlier average")
    env = dict(os.environ, FAULT_MARKER=str(tmp_path / "in-write"))
    args = ["-c", AVERAGE_WITH_SLOW_WRITE, str(checkpoint), "-o", str(output)]
    command = start(args, tmp_path, env)
    command.wait_for(lambda: (tmp_path / "in-write").exists(), "the write of avg.pt")
    assert list(tmp_path.glob(".avg.pt.*.tmp")), "stopped inside the write"
    stderr = assert_stopped(command, number, command.stop(number))
    assert stderr.rstrip().splitlines()[-1] == f"mtkit-average: stopped by {number.name}"
    assert output.read_bytes() == b"an earlier average"
    assert not list(tmp_path.glob(".avg.pt.*")), "no temp file is left"


# -- validation time bounded by the length limit --------------------------------------------


def test_validation_pairs_beyond_the_length_limit_are_left_out_of_the_loss(tmp_path: Path):
    """Two 15,000-word pairs (and one with only a long target) in the validation split:
    the loss is that of the split without them, so teacher forcing never runs over them,
    and the start-up warning names them."""
    huge = " ".join(WORDS[i % len(WORDS)] for i in range(15_000))
    plain = make_corpus(tmp_path / "plain", {"train": 200, "valid": 20, "test": 10})
    long = make_corpus(tmp_path / "long", {"train": 200, "valid": 20, "test": 10})
    extra = [(huge, huge.upper()), ("red cat", huge.upper()), (huge, "CAT RED")]
    for lang, side in (("xx", 0), ("yy", 1)):
        path = long / f"valid.{lang}"
        path.write_text(path.read_text() + "".join(pair[side] + "\n" for pair in extra))
    runs = {}
    for name, folder in (("plain", plain), ("long", long)):
        fit(tiny_run(folder, max_steps=5, valid_every=5), tmp_path / f"run-{name}")
        runs[name] = (tmp_path / f"run-{name}" / "metrics.csv").read_text().splitlines()
    loss = [line.split(",")[4] for line in runs["plain"][1:]]  # val_loss
    assert [line.split(",")[4] for line in runs["long"][1:]] == loss
    log = (tmp_path / "run-long" / "train.log").read_text()
    assert (
        "valid split: 2 pair(s) longer than data.max_len=50 source pieces (pair 21, 23); "
        "left out of the validation loss; their translations are cut at 87 pieces" in log
    )
    assert (
        "valid split: 1 pair(s) longer than data.max_len=50 target pieces (pair 22); "
        "left out of the validation loss" in log
    )


def test_a_validation_split_with_no_pair_within_the_limit_is_one_line(tmp_path: Path):
    from mtkit.errors import DataError

    folder = make_corpus(tmp_path / "corpus", {"train": 200, "valid": 2, "test": 10})
    for lang in ("xx", "yy"):
        (folder / f"valid.{lang}").write_text(" ".join(["red cat"] * 60) + "\n")
    with pytest.raises(DataError) as caught:
        fit(tiny_run(folder, max_steps=5), tmp_path / "run")
    assert str(caught.value) == (
        "valid split: every pair is longer than data.max_len=50 pieces on a side, so no "
        "validation loss can be computed; raise data.max_len or add shorter validation pairs"
    )
