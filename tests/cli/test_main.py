"""The top-level command line: commands load on use, the listing's summaries match the commands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.core import TyperCommand
from typer.testing import CliRunner

import deepfeat
from deepfeat.cli.main import COMMANDS, app, load_command

PROBE = """
import sys
from deepfeat.cli.main import app
try:
    app(sys.argv[1:], prog_name="deepfeat")
except SystemExit:
    pass
HEAVY = ("torch", "deepfeat.features", "deepfeat.cli.evaluate")
print("loaded:", sorted(m for m in HEAVY if m in sys.modules))
"""


@pytest.mark.parametrize("name", list(COMMANDS))
def test_listing_summary_is_the_commands_own(name):
    real = load_command(name)
    stand_in = TyperCommand(name=name, help=COMMANDS[name][2])
    for limit in (30, 45, 80, 300):
        assert stand_in.get_short_help_str(limit) == real.get_short_help_str(limit), limit


@pytest.mark.parametrize(
    "args, env",
    [
        (["--version"], {}),
        (["--help"], {}),
        ([], {"_DEEPFEAT_COMPLETE": "complete_bash", "COMP_WORDS": "deepfeat ev", "COMP_CWORD": "1"}),
    ],
)
def test_version_help_and_completion_load_no_command(args, env):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert "loaded: []" in done.stdout, done.stdout + done.stderr
    if args == ["--help"]:
        assert "evaluate" in done.stdout and "caption" in done.stdout
    if env:
        assert "evaluate" in done.stdout


def test_a_mistyped_command_gets_a_suggestion():
    result = CliRunner().invoke(app, ["evalute"])
    assert result.exit_code == 2
    assert "No such command 'evalute'. Did you mean 'evaluate'?" in result.output


def test_a_command_runs_once_loaded():
    result = CliRunner().invoke(app, ["layers", "efficientnet_lite0"])
    assert result.exit_code == 0, result.output
    assert "stage6" in result.output


def test_the_package_imports_its_names_on_first_use():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, deepfeat; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "False", done.stderr
    for name in deepfeat.__all__:
        assert getattr(deepfeat, name) is not None
    assert set(deepfeat.__all__) <= set(dir(deepfeat))
    assert deepfeat.features.store.FeatureStore is deepfeat.FeatureStore  # subpackages too, as before
    assert deepfeat.data.folder_dataset is deepfeat.folder_dataset
    with pytest.raises(AttributeError, match="no attribute 'LinearProbes'"):
        deepfeat.LinearProbes  # noqa: B018
