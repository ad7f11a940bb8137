from __future__ import annotations

import numpy as np

from deepfeat.features.featureset import FeatureSet


def feature_set(targets, classes) -> FeatureSet:
    n = len(targets)
    return FeatureSet(
        key="k",
        features=np.zeros((n, 2), np.float32),
        ids=[str(i) for i in range(n)],
        targets=np.asarray(targets),
        classes=classes,
        rows=np.arange(n),
        provenance={},
    )


def test_class_counts_show_classes_left_without_rows():
    assert feature_set([0, 0, 2], ["a", "b", "c"]).class_counts().tolist() == [2, 0, 1]
    multi = feature_set(np.array([[1, 0, 1], [1, 0, 0]], np.uint8), ["a", "b", "c"])
    assert multi.class_counts().tolist() == [2, 0, 1]
    empty = feature_set(np.zeros((0, 3), np.uint8), ["a", "b", "c"])
    assert empty.class_counts().tolist() == [0, 0, 0]
    assert feature_set(np.zeros(0, np.int64), ["a", "b"]).class_counts().tolist() == [0, 0]
