"""Layer accuracy over training checkpoints: table shape and values on constructed features, plot."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from deepfeat.analysis import CheckpointTable, layer_accuracy_over_training, plot_layer_accuracy
from deepfeat.errors import ConfigError, DataError

PNG = b"\x89PNG\r\n\x1a\n"
SVM = {"C": 1.0}


def split(separation: float, d: int = 6, n: int = 120, k: int = 3, seed: int = 0):
    """Gaussian classes whose centres lie ``separation`` apart (0: indistinguishable)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = np.eye(k, d) * separation
    x = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    h = n // 2
    return x[:h], y[:h], x[h:], y[h:]


def training_run():
    """Two layers at three checkpoints: the classes become separable as training goes on."""
    return {
        "5k": {"conv": split(0.0, seed=1), "fc": split(0.0, seed=2)},
        "15k": {"conv": split(1.0, seed=3), "fc": split(3.0, seed=4)},
        "310k": {"conv": split(2.0, seed=5), "fc": split(10.0, seed=6)},
    }


def test_table_shape_values_and_fraction_of_final(tmp_path):
    table = layer_accuracy_over_training(training_run(), probe_params=SVM)
    assert table.checkpoints == ["5k", "15k", "310k"]
    assert table.layers == ["conv", "fc"]
    assert table.scores.shape == (2, 3)
    assert table.metric == "accuracy"
    assert table.scores[1, -1] == 1.0  # fc at the end: separable
    assert table.scores[1, 0] < 0.6  # fc at the start: near chance (1/3)
    np.testing.assert_allclose(table.fraction_of_final[:, -1], 1.0)
    assert np.all(np.diff(table.scores[1]) > 0)
    d = table.to_dict()
    assert set(d["table"]) == {"conv", "fc"} and list(d["table"]["fc"]) == ["5k", "15k", "310k"]
    assert d["fraction_of_final"]["fc"]["310k"] == 1.0
    assert plot_layer_accuracy(table, tmp_path / "layers.png").read_bytes().startswith(PNG)


def test_callable_source_missing_layers_and_metrics():
    run = training_run()
    del run["5k"]["conv"]
    calls = []

    def load(name):
        calls.append(name)
        return run[name]

    table = layer_accuracy_over_training(
        load, checkpoints=["5k", "15k", "310k"], probe_params=SVM, metric="mean_class_accuracy"
    )
    assert calls == ["5k", "15k", "310k"]  # one checkpoint at a time, in order
    assert table.layers == ["fc", "conv"]  # first-seen order
    assert np.isnan(table.scores[1, 0])
    assert table.to_dict()["table"]["conv"]["5k"] is None
    only = layer_accuracy_over_training(run, layers=["fc"], checkpoints=["15k", "310k"], probe_params=SVM)
    assert only.scores.shape == (1, 2)
    mean_ap = layer_accuracy_over_training(run, probe_params=SVM, metric="map")
    assert mean_ap.metric == "map" and mean_ap.scores[0, -1] == pytest.approx(1.0)


def test_multilabel_targets_use_map_and_estimators_are_accepted():
    rng = np.random.default_rng(0)
    y = (rng.random((80, 3)) < 0.5).astype(int)
    y[0] = 1
    y[1] = 0
    x = (2.0 * y + rng.normal(size=(80, 3))).astype(np.float32)
    feats = {"a": {"fc": (x[:40], y[:40], x[40:], y[40:])}}
    table = layer_accuracy_over_training(feats, probe_params=SVM)
    assert table.metric == "map" and 0.8 < table.scores[0, 0] <= 1.0
    with pytest.raises(ConfigError, match="multi-label"):
        layer_accuracy_over_training(feats, probe_params=SVM, metric="accuracy")
    single = {"a": {"fc": split(3.0)}}
    table = layer_accuracy_over_training(single, probe=LogisticRegression(max_iter=500))
    assert isinstance(table, CheckpointTable) and table.scores[0, 0] > 0.8


def test_validation():
    run = training_run()
    with pytest.raises(ConfigError, match="checkpoints are required"):
        layer_accuracy_over_training(lambda name: run[name])
    with pytest.raises(ConfigError, match=r"checkpoints \['1m'\] are not in features"):
        layer_accuracy_over_training(run, checkpoints=["1m"])
    with pytest.raises(ConfigError, match="metric"):
        layer_accuracy_over_training(run, metric="f1")
    with pytest.raises(ConfigError, match="unknown probe"):
        layer_accuracy_over_training(run, probe="forest")
    with pytest.raises(ConfigError, match="empty"):
        layer_accuracy_over_training({})
    with pytest.raises(ConfigError, match=r"layers \['fc8'\] appear at no checkpoint"):
        layer_accuracy_over_training(run, layers=["fc8"], probe_params=SVM)
    Xtr, ytr, Xte, yte = split(1.0)
    with pytest.raises(DataError, match="60 training rows with 59 labels"):
        layer_accuracy_over_training({"a": {"fc": (Xtr, ytr[:-1], Xte, yte)}}, probe_params=SVM)
    with pytest.raises(DataError, match="tuple"):
        layer_accuracy_over_training({"a": {"fc": (Xtr, ytr)}}, probe_params=SVM)
    with pytest.raises(DataError, match="single class"):
        layer_accuracy_over_training({"a": {"fc": (Xtr, 0 * ytr, Xte, yte)}}, probe_params=SVM)
    bad = Xte.copy()
    bad[0, 0] = np.inf
    with pytest.raises(DataError, match="X_test hold NaN or infinite"):
        layer_accuracy_over_training({"a": {"fc": (Xtr, ytr, bad, yte)}}, probe_params=SVM)
