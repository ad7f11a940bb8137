"""``deepfeat caption train|evaluate|generate`` on tiny generated data, and its one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deepfeat.cli.main import app
from deepfeat.tasks.captioning import CaptionTrainJob, FeatureSpec, SequenceOptions, TrainingOptions, train
from tests.conftest import SMALL
from tests.tasks.captioning.conftest import write_shapes

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model trained through the library on 64 x 64 inputs (fast); the CLI reads its features spec."""
    root = tmp_path_factory.mktemp("cli")
    csv = write_shapes(root / "data")
    out = root / "model"
    job = CaptionTrainJob(
        data=csv,
        out=out,
        split_seed=1,
        features=FeatureSpec(preprocess=SMALL),
        sequence=SequenceOptions(hidden_size=16, embed_size=8, min_count=1),
        training=TrainingOptions(epochs=2, batch_size=8, learning_rate=0.01),
    )
    train(job, progress=False)
    return csv, out


def test_train_writes_the_model_and_resumes(tmp_path):
    csv = write_shapes(tmp_path / "data", variants=1)
    out = tmp_path / "model"
    args = ["caption", "train", str(csv), "--out", str(out), "--hidden", "16", "--embed", "8"]
    args += ["--min-count", "1", "--batch", "8", "--split-seed", "1", "--arch", "lrcn_1u", "--unit", "rnn"]
    result = runner.invoke(app, [*args, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "best epoch 1 of 1" in result.output and (out / "model.pt").is_file()
    record = json.loads((out / "training.json").read_text())["result"]
    assert record["decoder"]["architecture"] == "lrcn_1u" and record["decoder"]["unit"] == "rnn"
    again = runner.invoke(app, [*args, "--epochs", "2"])
    assert again.exit_code == 0, again.output
    assert "resuming after epoch 1" in again.output


def test_evaluate_writes_results_report_and_examples(model_dir, tmp_path):
    csv, model = model_dir
    out = tmp_path / "eval"
    args = ["caption", "evaluate", str(csv), "--model", str(model), "--out", str(out), "--beam", "1,2"]
    args += ["--samples", "3", "--temperature", "1,2", "--metrics", "bleu,cider_d,rouge_l"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sample N=3 T=2" in result.output and "caption to image" in result.output
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["result"]["generation"]) == 4 + 3  # 4 strategies, 3 baselines
    assert (out / "report.md").is_file() and (out / "examples.png").is_file()


def test_generate_prints_one_caption_per_image(model_dir):
    csv, model = model_dir
    images = sorted((csv.parent / "images").iterdir())[:2]
    result = runner.invoke(
        app, ["caption", "generate", *map(str, images), "--model", str(model), "--beam", "2"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and all("beam 2" in line and "log p" in line for line in lines)
    sampled = runner.invoke(
        app, ["caption", "generate", str(images[0]), "--model", str(model), "--samples", "4"]
    )
    assert sampled.exit_code == 0 and "sample N=4 T=1.5" in sampled.output
    missing = runner.invoke(app, ["caption", "generate", "missing.jpg", "--model", str(model)])
    assert missing.exit_code == 2 and "missing.jpg: no such image file" in missing.output
    bad = csv.parent / "bad.jpg"
    bad.write_bytes(b"not an image")
    try:  # every image undecodable: the reasons are named
        result = runner.invoke(app, ["caption", "generate", str(bad), "--model", str(model)])
    finally:
        bad.unlink()
    assert result.exit_code == 2 and "bad.jpg: " in result.output and "1 failed" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["caption", "generate", "x.jpg", "--model", "m", "--beam", "2", "--samples", "3"], "not both"),
        (
            ["caption", "evaluate", "d.csv", "--model", "m", "--beam", "", "--samples", ""],
            "no generation strategy",
        ),
        (["caption", "generate", "x.jpg", "--model", "missing-model"], "file not found"),
        (["caption", "train", "nothing.csv", "--out", "o"], "caption file not found"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_choices_are_listed_in_help():
    result = runner.invoke(app, ["caption", "train", "--help"])
    assert result.exit_code == 0
    assert "lrcn_1u|lrcn_2u|lrcn_2f" in result.output and "lstm|rnn" in result.output
