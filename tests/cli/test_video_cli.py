"""``deepfeat video``: make the moving digits, train two streams, evaluate with fusion, predict files;
user mistakes are one line and exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("cv2")

from deepfeat.cli.main import app

runner = CliRunner()
SMALL = ["--layer", "stage3", "--grid", "1", "--input-size", "32", "--epochs", "1", "--clip-length", "4"]


def test_make_train_evaluate_predict(tmp_path):
    data, store = tmp_path / "digits", tmp_path / "store"
    make = [
        "--digits",
        "4",
        "--motions",
        "up,down",
        "--clips-per-class",
        "3",
        "--frames",
        "6",
        "--size",
        "56",
    ]
    r = runner.invoke(app, ["video", "make-moving-digits", str(data), *make])
    assert r.exit_code == 0, r.output
    assert "2 classes, 4 training and 2 test videos" in r.output and "scikit-learn" in r.output
    for stream in ("rgb", "flow"):
        args = ["--out", str(tmp_path / stream), "--input", stream, "--model", "lrcn", "--hidden", "8"]
        r = runner.invoke(app, ["video", "train", str(data), *args, "--store", str(store), *SMALL])
        assert r.exit_code == 0, r.output
        assert f"lrcn/{stream} on 4 training videos" in r.output and "model.pt" in r.output
    out = tmp_path / "eval"
    models = f"{tmp_path / 'rgb'},{tmp_path / 'flow'}"
    args = ["-m", models, "--out", str(out), "--store", str(store), "--fusion", "1/2,1/3"]
    r = runner.invoke(app, ["video", "evaluate", str(data), *args])
    assert r.exit_code == 0, r.output
    assert "LRCN" in r.output and "1/3, 2/3" in r.output
    payload = json.loads((out / "results.json").read_text())
    assert payload["result"]["table_rows"][0][0] == "LRCN" and (out / "confusion.png").exists()
    clip = data / "4-up" / "v_4-up_c003.mp4"
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2
    # the models' own clips (the sentence said 16-frame clips, stride 8, whatever they used)
    assert "each 4-frame clip, then over the clips (stride 8)" in (out / "report.md").read_text()
    args = ["-m", str(tmp_path / "rgb"), "-m", str(tmp_path / "flow"), "--top", "1"]
    r = runner.invoke(app, ["video", "predict", str(clip), *args, "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    assert "v_4-up_c003.mp4: 4-" in r.output
    written = json.loads((tmp_path / "p.json").read_text())
    assert written["schema"] == 1 and written["kind"] == "video-predictions"
    assert written["result"]["predictions"][0]["path"].endswith("v_4-up_c003.mp4")
    r = runner.invoke(app, ["video", "predict", str(clip), *args, "--json", str(tmp_path / "p.txt")])
    assert r.exit_code == 2 and "must end in .json" in r.output


def test_mistakes_exit_2_with_one_line(tmp_path, monkeypatch):
    r = runner.invoke(app, ["video", "train", str(tmp_path / "none"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "no such folder or manifest" in r.output
    r = runner.invoke(
        app, ["video", "train", str(tmp_path), "--out", str(tmp_path / "m"), "--input", "depth"]
    )
    assert r.exit_code == 2 and "rgb" in r.output and "flow" in r.output
    r = runner.invoke(app, ["video", "make-moving-digits", str(tmp_path / "d"), "--motions", "sideways"])
    assert r.exit_code == 2 and "unknown motion" in r.output and "zoom-in" in r.output
    r = runner.invoke(
        app, ["video", "train", str(tmp_path), "-o", str(tmp_path / "m"), "--sampling", "every"]
    )
    assert r.exit_code == 2 and "frame sampling" in r.output
    monkeypatch.chdir(tmp_path)  # the default --out is relative: a mistake must not create it
    r = runner.invoke(app, ["video", "evaluate", str(tmp_path), "-m", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no trained video model" in r.output
    assert not (tmp_path / "deepfeat-video-eval").exists()
