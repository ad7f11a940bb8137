"""The command-line trials of the hostile catalogue: one line and exit code 2 before any work, never a
traceback, never invalid JSON, never a silently dropped class."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image
from typer.testing import CliRunner

from deepfeat.cli.main import app
from tests.reliability.conftest import make_tree

runner = CliRunner()


def strict_json(path):
    def refuse(value):
        raise ValueError(f"not JSON: {value}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data", classes=("cat", "dog", "owl"), per_class=4)


def evaluate(*args):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def one_line_error(result, text):
    assert result.exit_code == 2, result.output
    assert text in result.output, result.output
    assert "Traceback" not in result.output


def test_out_pointing_at_a_file_is_refused_before_any_work(tree, tmp_path):
    (tmp_path / "taken").write_text("x")
    r = evaluate(tree, "--protocol", "kshot:2", "--out", tmp_path / "taken")
    one_line_error(r, "exists and is not a folder")
    assert "items" not in r.output  # refused before the data was read or the model loaded


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_out_without_write_permission_is_refused_before_any_work(tree, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        one_line_error(evaluate(tree, "--out", locked / "o"), "cannot write there")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    "args,text",
    [
        (["--splits", "0"], "--splits must be at least 1, got 0"),
        (["--protocol", "random:1.5"], "random:FRACTION holds out a fraction of the images, between 0 and 1"),
        (["--protocol", "kshot:two"], "K (training images per class) must be a number, got 'two'"),
        (["--on-bad-image", "bogus"], "'bogus' is not one of 'skip', 'fail'"),
        (["--batch-size", "0"], "--batch-size"),
        (["--method", "forest"], "'forest' is not one of"),
    ],
)
def test_bad_options_name_the_option(tree, tmp_path, args, text):
    out = tmp_path / "o"
    r = evaluate(tree, *args, "--out", out)
    one_line_error(r, text)
    assert not (out / "store").exists()  # nothing left behind


def test_a_class_whose_every_image_is_bad_is_refused_or_reported(tree, tmp_path):
    (tree / "moth").mkdir()
    for i in range(3):
        (tree / "moth" / f"{i}.jpg").write_bytes(b"not an image")
    args = [tree, "--protocol", "kshot:2", "--splits", "1", "--probe", "svm", "--out", tmp_path / "o"]
    one_line_error(evaluate(*args), "1 class without a usable image ('moth')")
    r = evaluate(*args, "--allow-missing-classes")
    assert r.exit_code == 0, r.output
    assert "classes excluded, no usable image: moth" in r.output
    payload = strict_json(tmp_path / "o" / "results.json")
    assert payload["result"]["extraction"]["source"]["excluded_classes"] == ["moth"]
    assert "EXCLUDED classes" in (tmp_path / "o" / "report.md").read_text()


def test_half_a_journal_is_repaired_and_results_stay_valid_json(tree, tmp_path):
    out = tmp_path / "o"
    args = [
        tree,
        "--layers",
        "stage6",
        "--protocol",
        "kshot:2",
        "--splits",
        "1",
        "--probe",
        "svm",
        "--out",
        out,
    ]
    assert evaluate(*args).exit_code == 0
    (journal,) = list((out / "store" / "entries").glob("*/journal.jsonl"))
    text = journal.read_text()
    journal.write_text(text[: len(text) // 2])
    r = evaluate(*args)
    assert r.exit_code == 0, r.output
    assert "repaired 1 damaged store entries" in r.output and "12 with features" in r.output
    payload = strict_json(out / "results.json")
    assert all(rec["n_train"] + rec["n_test"] == 12 for rec in payload["result"]["records"])


def test_max_pixels_is_an_evaluate_option(tree, tmp_path):
    big = tree / "cat" / "big.png"
    Image.new("RGB", (400, 300)).save(big)
    args = [tree, "--protocol", "kshot:2", "--splits", "1", "--probe", "svm", "--out", tmp_path / "o"]
    r = evaluate(*args, "--max-pixels", "100000")
    assert r.exit_code == 0, r.output
    assert "big.png: image too large" in r.output
