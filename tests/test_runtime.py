"""Allocator tuning: applied once, on glibc, unless switched off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deepfeat._runtime import tune_allocator

CODE = "from deepfeat._runtime import tune_allocator as t; print(t(), t())"


def run(env: dict) -> str:
    return subprocess.run(
        [sys.executable, "-c", CODE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_applied_once_and_idempotent():
    assert tune_allocator() == tune_allocator()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_switch_off_and_default():
    assert run({"DEEPFEAT_TUNE_MALLOC": "0"}) == "False False"
    import platform

    if platform.libc_ver()[0] == "glibc":
        assert run({"DEEPFEAT_TUNE_MALLOC": "1"}) == "True True"
