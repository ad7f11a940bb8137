"""Trial 4: an extraction killed (SIGKILL) at any rename or write of its store, torn writes included,
and killed again while resuming, resumes to the features of a clean run, with a valid meta.json,
the validity mask, NaN rows for the failed image, and no temporary files left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc and fork")
def test_kill_at_every_step_then_resume(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("kill_driver.py")), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    kinds = summary["steps"]
    # every kind of step of a run is there to be killed at: renames (meta.json, features.npy,
    # valid.npy, the dataset index), row writes (features and NaN rows) and journal appends
    assert {"rename", "pwrite", "append"} <= set(kinds) and len(kinds) >= 15
    assert summary["cases"] > len(kinds)
    assert summary["failures"] == [], "\n".join(summary["failures"])
