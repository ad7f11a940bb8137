"""The analyses' train / test rows (``train_test_rows``): the data's own split as the ``fixed``
protocol takes it, else a seeded stratified half."""

from __future__ import annotations

import numpy as np

from deepfeat.analysis.layers import train_test_rows
from deepfeat.features.featureset import FeatureSet


def feature_set(splits) -> FeatureSet:
    n = len(splits)
    targets = np.arange(n) % 2
    return FeatureSet(
        "k",
        np.zeros((n, 3), np.float32),
        [str(i) for i in range(n)],
        targets,
        ["a", "b"],
        np.arange(n),
        {},
        splits=None if splits is None else np.asarray(splits),
    )


def test_trainval_trains_and_test_tests_with_val_left_out_beside_a_test_split():
    """(a VOC-style trainval / test split was replaced by a random half: test images trained)"""
    splits = ["trainval"] * 6 + ["test"] * 4 + ["val"] * 2
    train, test = train_test_rows(feature_set(splits))
    assert train.tolist() == list(range(6)) and test.tolist() == list(range(6, 10))


def test_val_tests_where_there_is_no_test_split():
    train, test = train_test_rows(feature_set(["train"] * 4 + ["val"] * 4))
    assert train.tolist() == [0, 1, 2, 3] and test.tolist() == [4, 5, 6, 7]


def test_without_a_split_a_seeded_stratified_half():
    fs = feature_set(["x"] * 8)  # no train / test names
    train, test = train_test_rows(fs, seed=3)
    assert len(train) == len(test) == 4 and set(train) | set(test) == set(range(8))
    assert np.bincount(fs.targets[train]).tolist() == [2, 2]
    assert train.tolist() == train_test_rows(fs, seed=3)[0].tolist()
