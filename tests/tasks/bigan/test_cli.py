"""``deepfeat bigan train`` / ``evaluate``, and a conv run's encoder through ``deepfeat evaluate``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deepfeat.cli import bigan as bigan_cli
from deepfeat.cli.main import app

runner = CliRunner()
TINY_MLP = ["--hidden", "16", "--latent-dim", "4", "--batch-size", "32", "--epochs", "1", "--threads", "1"]
TINY_CONV = [
    "--arch", "conv", "--encoder-widths", "4,6,8,8,4", "--gan-width", "4", "--latent-dim", "4",
    "--batch-size", "4", "--epochs", "1", "--threads", "1",
]  # fmt: skip


def test_help_lists_commands_and_choices():
    result = runner.invoke(app, ["bigan", "--help"])
    assert result.exit_code == 0 and "train" in result.output and "evaluate" in result.output
    result = runner.invoke(app, ["bigan", "train", "--help"])
    assert result.exit_code == 0
    for name in ("bigan", "gan", "jlr", "ae-l2", "random", "mlp", "conv", "exponential"):
        assert name in result.output


def test_train_then_evaluate_mnist(mnist_file, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["bigan", "train", f"mnist:{mnist_file}", "--out", str(out), *TINY_MLP, "--max-images", "64"]
    )
    assert result.exit_code == 0, result.output
    assert "training on a seeded subset of 64" in result.output  # not only the file's size
    assert (out / "last.pt").is_file() and (out / "history.json").is_file()
    assert "deepfeat bigan evaluate" in result.output
    result = runner.invoke(app, ["bigan", "evaluate", str(out), "--metric", "l2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "E: last hidden layer" in result.output and "random pairs" in result.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["kind"] == "bigan" and (out / "report.md").is_file()
    assert "<table" in (out / "report.html").read_text()
    history = json.loads((out / "history.json").read_text())
    assert history["schema"] == 1 and history["kind"] == "bigan-training"


def test_conv_run_becomes_a_backbone_of_deepfeat_evaluate(image_tree, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["bigan", "train", str(image_tree), "--out", str(out), *TINY_CONV, "--latent-init-scale", "1"]
    )
    assert result.exit_code == 0, result.output
    assert f"--backbone bigan:{out / 'last.pt'}" in result.output
    options = json.loads((out / "history.json").read_text())["result"]["options"]
    assert options["latent_init_scale"] == 1.0
    result = runner.invoke(
        app,
        [
            "evaluate", str(image_tree), "--backbone", f"bigan:{out / 'last.pt'}",
            "--layers", "conv1,conv2,conv3,conv4,conv5", "--protocol", "kshot:2", "--splits", "1",
            "--probe", "logreg", "--out", str(tmp_path / "eval"), "--threads", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {r["features"] for r in doc["result"]["summary"]} == {f"conv{i}/avg" for i in range(1, 6)}


def test_user_mistakes_exit_2_with_one_line(image_tree, mnist_file, tmp_path):
    cases = [
        ["bigan", "train", str(image_tree), "--out", str(tmp_path / "a"), "--epochs", "1"],  # mlp on images
        [
            "bigan",
            "train",
            f"mnist:{mnist_file}",
            "--out",
            str(tmp_path / "b"),
            "--arch",
            "conv",
            "--input-size",
            "48",
        ],
        ["bigan", "train", "mnist:/nonexistent.npz", "--out", str(tmp_path / "c")],
        ["bigan", "evaluate", str(tmp_path / "nothing-here")],
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1


def test_ctrl_c_exits_130_and_says_how_to_resume(mnist_file, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bigan_cli, "train", interrupted)
    result = runner.invoke(app, ["bigan", "train", f"mnist:{mnist_file}", "--out", str(tmp_path), *TINY_MLP])
    assert result.exit_code == 130 and "resume" in result.output
