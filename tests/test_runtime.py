"""Allocator tuning: opt-in for library callers, applied by the CLI, recorded, switchable off."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from deepfeat._runtime import allocator_state, tune_allocator, usable_cores

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def run(code: str, env: dict) -> str:
    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_applied_once_and_idempotent():
    assert tune_allocator() == tune_allocator()
    assert allocator_state()["tuned"] == tune_allocator()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_switch_off_and_default():
    code = "from deepfeat import tune_allocator as t; print(t(), t())"
    assert run(code, {"DEEPFEAT_TUNE_MALLOC": "0"}) == "False False"
    import platform

    if platform.libc_ver()[0] == "glibc":
        assert run(code, {"DEEPFEAT_TUNE_MALLOC": "1"}) == "True True"


def test_the_library_leaves_the_allocator_alone():
    code = (
        "import deepfeat as df; df.load_backbone(); "
        "from deepfeat._runtime import allocator_state; print(allocator_state()['tuned'])"
    )
    assert run(code, {"DEEPFEAT_TUNE_MALLOC": "1"}) == "False"


def test_usable_cores_follows_the_affinity_mask():
    n = usable_cores()
    assert n >= 1
    if not hasattr(os, "sched_getaffinity"):
        return
    assert n == len(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        pytest.skip("taskset is not installed: no process pinned to one core")
    code = "from deepfeat._runtime import usable_cores as u; print(u())"
    pinned = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
    )
    if pinned.returncode != 0 and "taskset" in pinned.stderr:
        pytest.skip(f"taskset cannot pin here: {pinned.stderr.strip()}")
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.strip() == "1"
