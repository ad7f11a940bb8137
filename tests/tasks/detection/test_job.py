"""The whole detector on tiny generated data: train, resume, evaluate, report, predict, model files,
test-time NMS, the command line."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from deepfeat.cli.main import app
from deepfeat.data.detection import voc_dataset
from deepfeat.errors import CheckpointError, ConfigError, DataError
from deepfeat.tasks import detection as det
from deepfeat.tasks.detection.svm import SVMResult
from tests.tasks.detection.conftest import make_voc

FAST = dict(
    region=det.RegionOptions(size=32, padding=4),
    proposals=det.ProposalOptions(width=None, max_proposals=15),
    features="pool",
    bbox_features="stage7/grid1",
    workers=0,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = make_voc(tmp_path_factory.mktemp("data") / "voc", n=8)
    out = tmp_path_factory.mktemp("model")
    train = voc_dataset(root, split="trainval")
    result = det.train(train, det.DetectionOptions(**FAST), out, progress=False)
    return root, out, result


def test_training_writes_a_model_and_resumes_without_recomputing(trained):
    root, out, result = trained
    assert (out / "model.pt").is_file() and (out / "work" / "svms.pt").is_file()
    assert result.counts["regions_computed"] == result.counts["regions"] > 0
    assert set(result.timings) >= {"proposals", "features", "svm", "bbox"}
    again = det.train(voc_dataset(root, split="trainval"), det.DetectionOptions(**FAST), out, progress=False)
    assert again.counts["regions_computed"] == 0  # features read back from the store
    np.testing.assert_array_equal(again.model.svm.weights, result.model.svm.weights)
    model = det.DetectorModel.load(out)
    np.testing.assert_array_equal(model.svm.weights, result.model.svm.weights)
    np.testing.assert_array_equal(model.regressor.weights, result.model.regressor.weights)
    assert model.svm_key == "pool" and model.bbox_key == "stage7/grid1" and model.classes == ["blue", "red"]


def test_evaluate_and_report(trained, tmp_path):
    root, out, _ = trained
    result = det.evaluate(out, voc_dataset(root, split="test"), progress=False)
    assert set(result.variants) == {"bbox", "plain"} and result.primary == "bbox"
    for name in result.variants:
        assert 0.0 <= result.map(name) <= 1.0
        for a in result.ap(name).values():
            assert a.n_gt > 0 and 0.0 <= a.ap_area <= 1.0
    paths = det.write_report(result, tmp_path / "eval", n_examples=2)
    body = json.loads(paths["results"].read_text())  # strict JSON
    assert body["kind"] == "detection" and body["provenance"]["svm_features"] == "pool"
    assert set(body["result"]["variants"]["bbox"]["per_class"]) == {"blue", "red"}
    text = paths["report"].read_text()
    assert "| **mAP** |" in text and "pr_curves.png" in text and "examples/" in text
    assert (tmp_path / "eval" / "pr_curves.png").stat().st_size > 0
    assert len(list((tmp_path / "eval" / "examples").glob("*.png"))) >= 1


def test_test_data_with_more_classes_is_scored_on_the_models(trained):
    """(Test data annotated for more classes, or in another order, was refused outright.)"""
    from dataclasses import replace

    root, out, _ = trained
    test = voc_dataset(root, split="test")
    plain = det.evaluate(out, test, progress=False)
    # a third class listed first, with a box in the first image
    first = test.images[0]
    more = replace(
        test,
        classes=["green", *test.classes],
        images=[
            replace(
                first,
                boxes=np.vstack([first.boxes, [[1, 1, 9, 9]]]),
                labels=np.append(first.labels + 1, 0),
                difficult=np.append(first.difficult, False),
            ),
            *(replace(t, labels=t.labels + 1) for t in test.images[1:]),
        ],
    )
    lines = []
    wider = det.evaluate(out, more, progress=False, echo=lines.append)
    assert wider.classes == ["blue", "red"]
    assert any("scoring the model's 2 classes; 1 box of other classes left out" in line for line in lines)
    for name in plain.variants:
        assert wider.map(name) == plain.map(name)
    # a VOC test list without a box of one class: that class's AP is undefined, the rest scored
    # (it was refused, though VOC files annotate every class)
    narrower, _ = test.with_classes(["blue"])
    lines.clear()
    fewer = det.evaluate(out, narrower, progress=False, echo=lines.append)
    assert any("no box of the model's 'red' in these images" in line for line in lines)
    for name in plain.variants:
        assert (
            fewer.ap(name)["red"].ap11 is None and fewer.ap(name)["blue"].n_gt == plain.ap(name)["blue"].n_gt
        )
    # other data, which may not be annotated for that class at all, is still refused
    with pytest.raises(DataError, match="the model's classes 'red' are not among"):
        det.evaluate(out, replace(narrower, kind="coco"), progress=False)


def test_predict_writes_pngs_and_json(trained, tmp_path):
    root, out, _ = trained
    files = sorted((root / "JPEGImages").glob("*.jpg"))[:2]
    dataset, dets, failures = det.predict(out, files, progress=False)
    assert not failures and set(dets) == set(dataset.ids)
    paths = det.write_predictions(dataset, dets, ["blue", "red"], tmp_path / "p", threshold=-10)
    body = json.loads(paths["predictions"].read_text())["result"]
    assert set(body["images"]) == set(dataset.ids)
    first = body["images"][dataset.ids[0]]
    assert first["png"].endswith(".png") and isinstance(first["detections"], list)
    assert all(set(d) == {"class", "score", "box"} for d in first["detections"])


def test_model_files_never_run_code(tmp_path):
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="raw Python pickle"):
        det.DetectorModel.load(tmp_path)
    with pytest.raises(ConfigError, match="no detector model"):
        det.DetectorModel.load(tmp_path / "missing")


def _greedy_nms(boxes, scores, thr):
    from deepfeat.tasks.detection.boxes import iou

    order, keep = list(np.argsort(-scores)), []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if iou(boxes[i : i + 1], boxes[j : j + 1])[0, 0] <= thr]
    return keep


def test_detect_scores_regresses_and_suppresses_per_class():
    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(0, 50, (40, 2)), rng.uniform(55, 100, (40, 2))], axis=1).astype(
        np.float32
    )
    feats = rng.normal(size=(40, 3)).astype(np.float32)
    svm = SVMResult(
        rng.normal(size=(3, 2)).astype(np.float32), np.zeros(2, np.float32), 1.0, np.array([True, True])
    )
    model = det.DetectorModel(
        ["a", "b"],
        "efficientnet_lite0",
        "x",
        "f",
        det.RegionOptions(),
        det.ProposalOptions(),
        svm,
        test=det.TestOptions(nms_iou=0.3, pre_nms=100, max_per_image=100),
    )
    out = model.detect(boxes, {"f": feats}, 120, 120)
    scores = feats @ svm.weights
    for c in range(2):
        keep = _greedy_nms(boxes, scores[:, c], 0.3)
        got = out.scores[out.labels == c]
        np.testing.assert_allclose(np.sort(got)[::-1], np.sort(scores[keep, c])[::-1], rtol=1e-6)
    assert len(out) == sum(len(_greedy_nms(boxes, scores[:, c], 0.3)) for c in range(2))  # classes apart
    capped = det.DetectorModel(**{**model.__dict__, "test": det.TestOptions(max_per_image=3)}).detect(
        boxes, {"f": feats}, 120, 120
    )
    assert len(capped) == 3 and np.all(np.diff(capped.scores) <= 0)


def test_options_are_refused_before_any_work(tmp_path, voc_root):
    with pytest.raises(ConfigError, match="warped windows"):
        det.DetectionOptions(
            region=det.RegionOptions(mode="shared"), finetune=det.FinetuneOptions(iterations=2)
        ).validate()
    ds = voc_dataset(voc_root, split="trainval")
    with pytest.raises(ConfigError, match="unknown layer"):
        det.train(
            ds, det.DetectionOptions(**{**FAST, "features": "stage9/avg"}), tmp_path / "m", progress=False
        )
    assert not (tmp_path / "m" / "store" / "proposals").exists()  # nothing computed
    with pytest.raises(ConfigError, match="device must be 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'"):
        det.train(ds, det.DetectionOptions(**{**FAST, "device": "gpu"}), tmp_path / "g", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available here"):
            det.train(ds, det.DetectionOptions(**{**FAST, "device": "cuda"}), tmp_path / "g", progress=False)
    assert not (tmp_path / "g" / "store" / "proposals").exists()


def test_command_line(trained, tmp_path):
    root, _, _ = trained
    runner = CliRunner()
    model = tmp_path / "cli-model"
    common = ["--size", "32", "--padding", "4", "--max-proposals", "15", "--workers", "0", "--threads", "1"]
    res = runner.invoke(
        app,
        [
            "detect",
            "train",
            str(root),
            "--out",
            str(model),
            "--features",
            "pool",
            "--bbox-features",
            "stage7/grid1",
            "--search-width",
            "96",
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    assert (model / "model.pt").is_file() and "model:" in res.output
    n = len(det.DetectorModel.load(model).classes)
    assert f"trained {n} of {n} class SVMs" in res.output and "never fire" not in res.output
    # the store of region features lists as complete (its rows are regions, not a dataset's items:
    # there is no dataset index to check them against, and none is missing)
    listed = runner.invoke(app, ["store", "list", str(model / "store")])
    assert listed.exit_code == 0 and "damaged" not in listed.output and " complete " in listed.output
    res = runner.invoke(
        app,
        [
            "detect",
            "evaluate",
            str(root),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "ev"),
            "--workers",
            "0",
            "--examples",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "mAP" in res.output and (tmp_path / "ev" / "report.md").is_file()
    image = sorted((root / "JPEGImages").glob("*.jpg"))[0]
    res = runner.invoke(
        app,
        [
            "detect",
            "predict",
            str(image),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "pr"),
            "--workers",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pr" / "predictions.json").is_file() and (
        tmp_path / "pr" / f"{image.stem}.png"
    ).is_file()
    res = runner.invoke(
        app, ["detect", "train", str(root), "--out", str(tmp_path / "x"), "--features", "nope/avg"]
    )
    assert res.exit_code == 2 and "unknown layer 'nope'" in res.output
    res = runner.invoke(app, ["detect", "evaluate", str(root), "--model", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no detector model" in res.output
