"""Evaluation per video: fusion as a weighted average, scores against scikit-learn, Table 4.1's layout,
the report files, unreadable test videos reported; predicting files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix

from deepfeat.errors import ConfigError
from deepfeat.tasks.video import (
    EvaluateJob,
    TrainJob,
    TrainOptions,
    evaluate,
    predict_videos,
    score,
    train,
    write_report,
)
from deepfeat.tasks.video.evaluation import weight_label
from tests.tasks.video.conftest import tiny_features


@pytest.fixture(scope="module")
def two_streams(tiny_videos, tiny_store, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    for stream in ("rgb", "flow"):
        opts = TrainOptions(model="single", stream=stream, epochs=2, batch_size=4, clip_length=4)
        train(
            TrainJob(tiny_videos, opts, tiny_features(), store=tiny_store, out=folder / stream),
            progress=False,
        )
    return folder / "rgb", folder / "flow"


def test_score_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    probs = rng.random((40, 5))
    targets = rng.integers(0, 4, 40)  # class 4 has no video
    s = score(probs, targets, 5)
    pred = probs.argmax(1)
    assert s["accuracy"] == pytest.approx(accuracy_score(targets, pred))
    assert s["confusion"] == confusion_matrix(targets, pred, labels=range(5)).tolist()
    assert s["per_class"][4] is None
    present = range(4)
    assert s["mean_class_accuracy"] == pytest.approx(
        np.mean([np.mean(pred[targets == c] == c) for c in present])
    )


def test_fusion_table_and_report(tiny_videos, tiny_store, two_streams, tmp_path):
    rgb, flow = two_streams
    result = evaluate(EvaluateJob(tiny_videos, [rgb, flow], store=tiny_store), progress=False)
    assert result.video_ids == ["0-left/v_0-left_c004.mp4", "0-right/v_0-right_c004.mp4"]  # the test split
    assert set(result.probs) == {
        "single/rgb",
        "single/flow",
        "single/fused 1/2, 1/2",
        "single/fused 1/3, 2/3",
    }
    np.testing.assert_allclose(
        result.probs["single/fused 1/3, 2/3"],
        result.probs["single/rgb"] / 3 + 2 * result.probs["single/flow"] / 3,
    )
    header, rows = result.table()
    assert header == ["model", "RGB", "Flow", "1/2, 1/2", "1/3, 2/3"] and rows[0][0] == "Single frame"
    for name, probs in result.probs.items():
        assert result.scores[name]["accuracy"] == accuracy_score(result.targets, probs.argmax(1))
    paths = write_report(result, tmp_path / "eval")
    payload = json.loads(paths["results"].read_text())
    assert payload["kind"] == "video-evaluation" and payload["result"]["table_header"] == header
    assert payload["plots"] == {"confusion": "confusion.png", "per_class": "per_class.png"}
    text = paths["report"].read_text()
    assert "| Single frame |" in text and "confusion.png" in text
    assert "LRCN:" not in text  # no LRCN model, no sentence about its clips
    assert weight_label(0.25) == "1/4, 3/4" and weight_label(0.123) == "0.12, 0.88"


def test_unreadable_test_video_is_reported(tiny_videos, two_streams, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_videos, data)
    (data / "0-right" / "v_0-right_c004.mp4").write_bytes(b"\x00" * 100)
    result = evaluate(EvaluateJob(data, list(two_streams), store=tmp_path / "store"), progress=False)
    assert result.video_ids == ["0-left/v_0-left_c004.mp4"]
    (video, why), *_ = result.unscored
    assert video.endswith("v_0-right_c004.mp4") and "not a video file" in why
    with pytest.raises(ConfigError, match="same kind"):
        evaluate(EvaluateJob(data, [two_streams[0], two_streams[0]]), progress=False)
    with pytest.raises(ConfigError, match="fusion"):
        EvaluateJob(data, list(two_streams), fusion=(1.5,)).validate()


def test_predict_files(tiny_videos, two_streams, tmp_path):
    clip = tiny_videos / "0-left" / "v_0-left_c004.mp4"
    (tmp_path / "bad.mp4").write_text("no")
    preds = predict_videos([clip, tmp_path / "bad.mp4"], list(two_streams), top_k=2, progress=False)
    good, bad = preds
    assert good.error is None and [c for c, _ in good.top] in (["0-left", "0-right"], ["0-right", "0-left"])
    assert set(good.probs) == {"single/rgb", "single/flow", "fused 1/3, 2/3"}
    assert sum(p for _, p in good.top) == pytest.approx(1, abs=1e-5)
    assert bad.top == [] and "not a video file" in bad.error
    with pytest.raises(ConfigError, match="RGB and a flow"):
        predict_videos([clip], [two_streams[0], two_streams[0]], progress=False)


def test_models_of_different_kinds_say_why_no_row_is_fused(tiny_videos, tiny_store, two_streams, tmp_path):
    _, flow = two_streams
    opts = TrainOptions(model="lrcn", stream="rgb", epochs=1, batch_size=4, clip_length=4, hidden=8)
    train(
        TrainJob(tiny_videos, opts, tiny_features(), store=tiny_store, out=tmp_path / "lrcn"), progress=False
    )
    said: list[str] = []
    result = evaluate(
        EvaluateJob(tiny_videos, [tmp_path / "lrcn", flow], store=tiny_store),
        progress=False,
        echo=said.append,
    )
    assert not any("fused" in name for name in result.probs)
    assert any("no fused rows" in line and "RGB lrcn and flow single" in line for line in said)
