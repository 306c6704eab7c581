"""``train.threads`` and the thread policy: checked values, ``auto``, OpenMP's wait policy."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from mtkit import runtime
from mtkit.config import CONF_DIR, RuntimeConfig, register_configs, to_run_config
from mtkit.errors import ConfigError
from mtkit.runtime import prefer_passive_wait, resolve_threads

LOCAL = ["data=local", "data.dir=/corpora/x", "data.src_lang=xx", "data.tgt_lang=yy"]


def run_config(overrides: list[str]) -> Any:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*LOCAL, *overrides])
    return to_run_config(cfg)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "true", "[2]"])
def test_bad_threads_override_is_one_line_error_naming_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        run_config([f"train.threads={value}"])
    message = str(caught.value)
    assert "train.threads" in message and "auto" in message
    assert "\n" not in message


@pytest.mark.parametrize(("value", "expected"), [("3", 3), ("auto", "auto"), ("null", None)])
def test_good_threads_overrides_keep_their_value(value: str, expected: object) -> None:
    assert run_config([f"train.threads={value}"]).train.threads == expected


def test_runtime_config_rejects_a_bool_and_zero() -> None:
    for value in (True, 0):
        with pytest.raises(ConfigError, match=r"train\.threads="):
            RuntimeConfig(threads=value)
    assert RuntimeConfig(threads=2).threads == 2


def test_auto_is_one_thread_per_core_of_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert resolve_threads("auto", environ={}) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {7}, raising=False)
    assert resolve_threads("auto", environ={}) == 1


def test_auto_follows_the_users_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert resolve_threads("auto", environ={"OMP_NUM_THREADS": "2"}) == 2
    assert resolve_threads("auto", environ={"OMP_NUM_THREADS": "3,1"}) == 3
    assert resolve_threads("auto", environ={"OMP_NUM_THREADS": "junk"}) == 4


def test_explicit_counts_and_none() -> None:
    assert resolve_threads(5, environ={"OMP_NUM_THREADS": "2"}) == 5
    assert resolve_threads("4") == 4
    assert resolve_threads(None) is None


@pytest.mark.parametrize("value", [0, -1, "0", "many", "", True, 2.0])
def test_bad_thread_counts_are_one_line_errors(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^threads=.* is not valid; expected .*auto") as caught:
        resolve_threads(value)
    assert "\n" not in str(caught.value)


def test_wait_policy_is_set_when_absent() -> None:
    environ: dict[str, str] = {"PATH": "/bin"}
    assert prefer_passive_wait(environ)
    assert environ == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize(
    "user", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "100000"}, {"KMP_BLOCKTIME": "0"}]
)
def test_wait_policy_of_the_user_is_left_alone(user: dict[str, str]) -> None:
    environ = dict(user)
    assert not prefer_passive_wait(environ)
    assert environ == user


def test_runtime_imports_without_torch_so_entry_points_can_set_the_policy_first() -> None:
    code = "import sys, mtkit.runtime; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_set_threads_applies_auto_and_returns_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(runtime, "available_cores", lambda: 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert runtime.set_threads("auto") == 1
        assert torch.get_num_threads() == 1
        assert runtime.set_threads(None) == 1  # None leaves the count alone
    finally:
        torch.set_num_threads(before)


def test_usable_cpus_is_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert runtime.usable_cpus() == 3 and runtime.available_cores() == 3


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (4, 4), ("3", 3)])
def test_process_counts_up_to_the_cores_are_kept(value: object, expected: int) -> None:
    assert runtime.check_process_count("--processes", value, cpus=4) == expected


@pytest.mark.parametrize("value", [5, 1000, 0, -1, True, 2.0, "two", None])
def test_process_counts_beyond_the_cores_are_one_line_errors(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        runtime.check_process_count("--processes", value, cpus=4)
    message = str(caught.value)
    assert message.startswith(f"--processes={value!r} is not valid")
    assert "from 1 to 4" in message and "\n" not in message
