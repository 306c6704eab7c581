"""Training across machines: two torchrun "nodes" on this machine (c10d rendezvous on
loopback, gloo) must train exactly what one node with two processes trains, and a node
that cannot see rank 0's corpus cache must stop with one line naming it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from helpers import TINY_OVERRIDES, load_weights, read_metrics

TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def train_command(launcher: list[str], corpus: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "mtkit.train",
        *TINY_OVERRIDES, f"data.dir={corpus}", "train.max_steps=10", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def node_launcher(node: int, port: int) -> list[str]:
    """One of two nodes, one process each, meeting at a c10d rendezvous on loopback."""
    return [
        "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id=mtkit-test-{port}",
        f"--rdzv_conf=is_host={int(node == 0)}", "--local_addr=127.0.0.1",
    ]  # fmt: skip


def start(command: list[str], cwd: Path, cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MTKIT_CACHE_DIR": str(cache)}
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    """(exit status, stderr) of each process; all are killed if one outlives the timeout."""
    results = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=TIMEOUT_S)
            results.append((process.returncode, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def test_two_nodes_train_what_one_node_with_two_processes_trains(
    tiny_corpus_dir: Path, tmp_path: Path
) -> None:
    one_node, two_nodes = tmp_path / "one-node", tmp_path / "two-nodes"
    port = free_port()
    processes = [
        start(
            train_command(["--standalone", "--nproc_per_node=2"], tiny_corpus_dir, one_node),
            tmp_path,
            tmp_path / "cache-one-node",
        ),
        *(
            start(
                train_command(node_launcher(node, port), tiny_corpus_dir, two_nodes),
                tmp_path,
                tmp_path / "cache-two-nodes",  # one shared folder: rank 0 prepares it
            )
            for node in (0, 1)
        ),
    ]
    for status, stderr in finish(processes):
        assert status == 0, stderr[-3000:]
    assert "2 processes" in (two_nodes / "train.log").read_text()
    expected = read_metrics(one_node)
    assert [row["step"] for row in expected] == ["5", "10"]
    assert read_metrics(two_nodes) == expected
    for name in ("last.pt", "best.pt"):
        want, got = load_weights(one_node / name), load_weights(two_nodes / name)
        assert want.keys() == got.keys()
        assert all(torch.equal(want[key], got[key]) for key in want), name
    (entry,) = (tmp_path / "cache-two-nodes").iterdir()  # prepared once, no leftovers
    assert (entry / "meta.json").is_file()


def test_a_node_that_cannot_see_the_cache_stops_with_one_line(
    tiny_corpus_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    caches = [tmp_path / f"cache-node-{node}" for node in (0, 1)]  # storage not shared
    processes = [
        start(
            train_command(node_launcher(node, port), tiny_corpus_dir, tmp_path / "run"),
            tmp_path,
            caches[node],
        )
        for node in (0, 1)
    ]
    results = finish(processes)
    assert all(status != 0 for status, _ in results)
    errors = [
        line
        for _, stderr in results
        for line in stderr.splitlines()
        if line.startswith("mtkit-train: error:")
    ]
    # Every node stops with one line: the one without the cache names it, the other says
    # that another process could not open it (and no process is left waiting).
    assert len(errors) == 2, [stderr[-2000:] for _, stderr in results]
    built = [cache for cache in caches if any(cache.glob("*/meta.json"))]
    (unseen,) = [cache for cache in caches if cache not in built]  # rank 0 built in its own
    (error,) = [line for line in errors if "no corpus cache there" in line]
    assert f"{unseen}/" in error and "data.cache_dir" in error
    assert any("another process could not open the corpus cache" in line for line in errors)
