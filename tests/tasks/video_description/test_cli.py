"""``deepfeat video describe``: a slot classifier trained with ``deepfeat video train`` on the
generated slot lists, a model trained on their predictions, generate on a clip, evaluate; slot files;
user mistakes exit with code 2 and one line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deepfeat.cli.main import app
from deepfeat.tasks.video_description import read_descriptions, read_slots

runner = CliRunner()
CHEAP = ["--layer", "stage3", "--grid", "1", "--input-size", "32", "--threads", "1"]
TINY = ["--hidden", "16", "--embed", "8", "--epochs", "1", "--batch-size", "8", "--threads", "1"]


def test_help_lists_commands_and_choices():
    result = runner.invoke(app, ["video", "describe", "--help"])
    assert result.exit_code == 0
    for name in ("make-digits", "slots", "train", "evaluate", "generate"):
        assert name in result.output
    result = runner.invoke(app, ["video", "describe", "train", "--help"])
    assert result.exit_code == 0 and "<a|b|c>" in result.output


def test_classifiers_train_generate_evaluate(described, tmp_path):
    store = tmp_path / "store"
    pairs = []
    for slot in ("colour",):  # one slot keeps the test cheap; the slots' code paths are the same
        out = tmp_path / f"clf-{slot}"
        args = ["video", "train", str(described / f"slot_{slot}.csv"), "--out", str(out), "--model", "single"]
        result = runner.invoke(app, [*args, "--epochs", "1", "--store", str(store), *CHEAP])
        assert result.exit_code == 0, result.output
        pairs += ["--classifier", f"{slot}={out}"]
    model = tmp_path / "model"
    args = ["video", "describe", "train", str(described), "--arch", "c", "--out", str(model), *pairs]
    result = runner.invoke(app, [*args, "--store", str(store), *TINY])
    assert result.exit_code == 0, result.output
    assert "(c) LSTM decoder" in result.output and (model / "model.pt").is_file()
    preds = read_slots(model / "slots.json")
    data = read_descriptions(described)
    assert set(preds.ids) == set(data.ids) and list(preds.slots) == ["colour"]
    for p in preds.probs.values():
        assert abs(float(p.sum(1).mean()) - 1) < 1e-4
    clip = str(data.paths[0])
    result = runner.invoke(
        app, ["video", "describe", "generate", clip, "--model", str(model), "--store", str(store)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(clip) and "[colour " in result.output
    out = tmp_path / "eval"
    args = [
        "video",
        "describe",
        "evaluate",
        str(described),
        "--model",
        str(model),
        "--slots",
        str(model / "slots.json"),
    ]
    result = runner.invoke(app, [*args, "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "B4" in result.output and "nearest neighbour" in result.output
    assert json.loads((out / "results.json").read_text())["kind"] == "video-description"


def test_slot_file_path_and_mistakes(described, slot_preds, tmp_path):
    slots = tmp_path / "slots.json"
    slot_preds.write(slots)
    model = tmp_path / "m"
    args = [
        "video",
        "describe",
        "train",
        str(described),
        "--arch",
        "a",
        "--out",
        str(model),
        "--slots",
        str(slots),
    ]
    result = runner.invoke(app, [*args, *TINY])
    assert result.exit_code == 0, result.output
    vid = slot_preds.ids[0]
    result = runner.invoke(
        app, ["video", "describe", "generate", vid, "--model", str(model), "--slots", str(slots)]
    )
    assert result.exit_code == 0 and result.output.startswith(vid), result.output
    # no slot classifiers kept with a model trained on a file
    result = runner.invoke(app, ["video", "describe", "generate", "x.mp4", "--model", str(model)])
    assert result.exit_code == 2 and "give --slots FILE" in result.output
    result = runner.invoke(app, ["video", "describe", "train", str(described), "--out", str(tmp_path / "n")])
    assert result.exit_code == 2 and "either as a file (--slots) or as classifiers" in result.output
    args = [
        "video",
        "describe",
        "train",
        str(described),
        "--out",
        str(tmp_path / "n"),
        "--classifier",
        "digit",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "expected SLOT=MODEL" in result.output
    result = runner.invoke(
        app, ["video", "describe", "evaluate", str(tmp_path), "--model", str(model), "--slots", str(slots)]
    )
    assert result.exit_code == 2 and "no description manifest" in result.output
