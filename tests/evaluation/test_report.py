from __future__ import annotations

import json

import numpy as np
from PIL import Image

from deepfeat.evaluation.evaluate import evaluate
from deepfeat.evaluation.protocols import KShot
from deepfeat.evaluation.report import write_report
from deepfeat.probes.linear import LinearProbe
from deepfeat.report.tables import text_table
from tests.evaluation.test_evaluate import blobs, feature_set


def test_report_files_tables_and_provenance(tmp_path):
    X, y = blobs(n_per_class=20, n_classes=3)
    res = evaluate(
        {"stage6/avg": feature_set(X, y, "stage6/avg"), "pool": feature_set(X[:, ::-1], y, "pool")},
        KShot(k=5, n_splits=2, random_state=4),
        {"svm": LinearProbe(loss="squared_hinge", Cs=(0.1, 1.0)), "logreg": LinearProbe(Cs=(0.1, 1.0))},
        progress=False,
    )
    paths = write_report(res, tmp_path, title="t", context={"backbone": "efficientnet_lite0"})
    payload = json.loads(paths["results"].read_text())
    assert payload["deepfeat"] and payload["kind"] == "evaluation" and payload["schema"] == 1
    data = payload["result"]
    assert data["context"]["backbone"] == "efficientnet_lite0"
    assert [s["seed"] for s in data["splits"]] == [4, 5]
    assert len(data["splits"][0]["train"]["data"]) == 15
    assert data["features"]["pool"]["provenance"] == {"key": "pool", "n": 60}
    assert data["probes"]["svm"]["loss"] == "squared_hinge"
    assert len(data["records"]) == 8 and len(data["summary"]) == 4
    report = paths["report"].read_text()
    assert "| features | svm | logreg |" in report and "| stage6/avg |" in report
    assert "![mean per-class accuracy (%) by features](metric_by_features.png)" in report
    for name in ("metric_by_features.png", "per_class.png"):
        with Image.open(tmp_path / name) as img:
            assert img.size[0] > 300
    header, rows = res.table()
    table = text_table(rows, header)
    assert table.splitlines()[0].split() == ["features", "svm", "logreg"]
    assert "±" in table
    best = res.best()
    assert np.isfinite(best["mean_class_accuracy"]["mean"])


def test_split_counts_are_per_score(tmp_path):
    """Domain adaptation runs n_splits per mode: its scores are over n_splits, not over all of them
    (a report said "over 6 splits" for 2 splits x 3 modes); one split has no spread to show."""
    from deepfeat.evaluation.domain_adaptation import DomainAdaptation
    from deepfeat.evaluation.protocols import FixedSplit

    Xs, ys = blobs(n_per_class=24, n_classes=3)
    Xt, yt = blobs(n_per_class=12, n_classes=3, seed=5, shift=1.5, spread=0.8)
    probes = {"svm": LinearProbe(loss="squared_hinge", Cs=(0.1, 1.0))}
    res = evaluate(
        {"f": feature_set(Xs, ys)},
        DomainAdaptation(k_source=5, k_target=2, n_splits=2),
        probes,
        target={"f": feature_set(Xt, yt)},
        progress=False,
    )
    assert len(res.splits) == 6 and res.splits_per_cell == 2
    report = write_report(res, tmp_path / "da", title="t")["report"].read_text()
    assert "(2 splits per mode; " in report and "6 splits" not in report
    assert "f/svm (ST): " in report and "f/svm (S): " in report  # the chosen-C line names the mode
    fs = feature_set(Xs, ys)
    fs.splits = np.array(["train", "test"] * 36, dtype=object)
    one = evaluate({"f": fs}, FixedSplit(), probes, progress=False)
    assert one.splits_per_cell == 1
    _, rows = one.table()
    assert "±" not in rows[0][1] and float(rows[0][1]) > 50
    report = write_report(one, tmp_path / "fixed", title="t")["report"].read_text()
    assert "fixed (1 split)" in report and "one split" in report


def test_a_fallback_C_is_not_reported_as_cross_validated(tmp_path):
    from deepfeat.evaluation.protocols import FixedSplit

    X, y = blobs(n_per_class=10, n_classes=2)
    fs = feature_set(X, y)
    splits = np.array(["test"] * 20, dtype=object)
    splits[[0, 10, 11, 12, 13]] = "train"  # class 0 has one training image: C cannot be searched
    fs.splits = splits
    res = evaluate(
        {"f": fs}, FixedSplit(), {"svm": LinearProbe(loss="squared_hinge", Cs=(0.1, 1.0))}, progress=False
    )
    assert res.c_notes() == {"a class has fewer than 2 samples: C not searched": 1}
    report = write_report(res, tmp_path, title="t")["report"].read_text()
    assert "not searched in 1 of 1 fits (a class has fewer than 2 samples: C not searched)" in report


def test_a_given_C_is_not_reported_as_cross_validated(tmp_path):
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.neighbors import KNeighborsClassifier

    X, y = blobs(n_per_class=20, n_classes=3)
    probes = {
        "fixed": LinearProbe(C=0.5),
        "knn": KNeighborsClassifier(),
        "cv": LinearProbe(Cs=(0.1, 1.0)),
        "sklearn": LogisticRegression(C=2.0),
        "sklearn_cv": LogisticRegressionCV(Cs=[0.1, 1.0, 10.0]),  # C_ an array: the checkpoint's JSON failed
    }
    res = evaluate(
        {"f": feature_set(X, y)},
        KShot(k=5, n_splits=1),
        probes,
        progress=False,
        checkpoint=tmp_path / "c.jsonl",
    )
    report = write_report(res, tmp_path, title="t")["report"].read_text()
    line = next(line for line in report.splitlines() if line.startswith("Chosen C per split"))
    assert "f/fixed: [0.5] (given)" in line and "f/sklearn: [2.0] (given)" in line and "f/knn" not in line
    assert "f/cv: [" in line and "f/sklearn_cv: [" in line and "array" not in line
    assert line.count("(given)") == 2


def test_the_probes_line_names_dropout_and_class_weights(tmp_path):
    X, y = blobs(n_per_class=12, n_classes=2)
    probes = {
        "svm": LinearProbe(loss="squared_hinge", C=1.0, dropout=0.5),
        "logreg": LinearProbe(C=1.0, class_weight="balanced"),
        "plain": LinearProbe(C=1.0),
    }
    res = evaluate({"f": feature_set(X, y)}, KShot(k=5, n_splits=1), probes, progress=False)
    report = write_report(res, tmp_path, title="t")["report"].read_text()
    line = next(ln for ln in report.splitlines() if "**probes**" in ln)
    assert "svm (squared_hinge, C=1.0, dropout 0.5)" in line
    assert "logreg (logistic, C=1.0, class_weight=balanced)" in line
    assert "plain (logistic, C=1.0)" in line
