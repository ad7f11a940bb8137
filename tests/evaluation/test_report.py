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
