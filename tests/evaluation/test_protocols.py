from __future__ import annotations

import numpy as np
import pytest

from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation.protocols import (
    DomainAdaptation,
    FixedSplit,
    KShot,
    RandomSplit,
    parse_protocol,
)

TARGETS = np.repeat(np.arange(4), [40, 35, 31, 50])
CLASSES = ["a", "b", "c", "d"]


def test_kshot_counts_disjoint_and_reproducible():
    splits = KShot(k=30, n_splits=3, random_state=7).splits(TARGETS, CLASSES)
    assert [s.seed for s in splits] == [7, 8, 9]
    for s in splits:
        train, test = s.train["data"], s.test["data"]
        assert np.bincount(TARGETS[train]).tolist() == [30, 30, 30, 30]
        assert not set(train) & set(test) and len(train) + len(test) == len(TARGETS)
    again = KShot(k=30, n_splits=3, random_state=7).splits(TARGETS, CLASSES)
    assert all(np.array_equal(a.train["data"], b.train["data"]) for a, b in zip(splits, again))
    assert not np.array_equal(splits[0].train["data"], splits[1].train["data"])


def test_one_shot_and_max_test():
    (s,) = KShot(k=1, n_splits=1, max_test=5).splits(TARGETS)
    assert np.bincount(TARGETS[s.train["data"]]).tolist() == [1, 1, 1, 1]
    assert np.bincount(TARGETS[s.test["data"]]).tolist() == [5, 5, 5, 5]


def test_kshot_class_too_small_is_named():
    with pytest.raises(DataError, match=r"1 classes have fewer than 32 images: 'c' \(31\)"):
        KShot(k=31).splits(TARGETS, CLASSES)


def test_single_class_is_an_error():
    with pytest.raises(DataError, match="holds 1 class"):
        KShot(k=2).splits(np.zeros(10, dtype=int))


def test_fixed_split():
    names = np.array(["train"] * 6 + ["val"] * 4, dtype=object)
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1, 0])
    (s,) = FixedSplit().splits(y, names)
    assert s.train["data"].tolist() == list(range(6)) and s.test["data"].tolist() == [6, 7, 8, 9]
    with pytest.raises(DataError, match="defines no train/test split"):
        FixedSplit().splits(y, None)
    with pytest.raises(DataError, match="needs 'train' rows"):
        FixedSplit().splits(y, np.array(["train"] * 10, dtype=object))


def test_random_split_stratified_and_multilabel():
    splits = RandomSplit(test_size=0.25, n_splits=2).splits(TARGETS)
    for s in splits:
        assert abs(len(s.test["data"]) - 0.25 * len(TARGETS)) <= 1
    Y = np.random.default_rng(0).integers(0, 2, size=(40, 3))
    (s,) = RandomSplit(0.5, n_splits=1).splits(Y)
    assert len(s.train["data"]) == 20


def test_domain_adaptation_modes_share_the_target_test_set():
    src = np.repeat(np.arange(3), 25)
    tgt = np.repeat(np.arange(3), 10)
    splits = DomainAdaptation(k_source=20, k_target=3, n_splits=2).splits(src, tgt)
    assert [s.info["mode"] for s in splits] == ["S", "T", "ST"] * 2
    s_mode, t_mode, st_mode = splits[:3]
    assert set(s_mode.train) == {"source"} and set(t_mode.train) == {"target"}
    assert set(st_mode.train) == {"source", "target"}
    assert np.array_equal(s_mode.test["target"], t_mode.test["target"])
    assert np.bincount(src[s_mode.train["source"]]).tolist() == [20, 20, 20]
    assert np.bincount(tgt[t_mode.train["target"]]).tolist() == [3, 3, 3]
    assert not set(t_mode.train["target"]) & set(t_mode.test["target"])
    assert np.bincount(tgt[t_mode.test["target"]]).tolist() == [7, 7, 7]


def test_parse_protocol():
    assert parse_protocol("kshot:5").k == 5
    assert isinstance(parse_protocol("fixed"), FixedSplit)
    assert parse_protocol("random:0.2").test_size == 0.2
    da = parse_protocol("da:all:2")
    assert da.k_source is None and da.k_target == 2
    with pytest.raises(ConfigError, match="valid: kshot:K, fixed"):
        parse_protocol("loo")
    with pytest.raises(ConfigError, match="cannot read protocol"):
        parse_protocol("kshot:many")


def test_split_to_dict_has_seed_and_rows():
    (s,) = KShot(k=1, n_splits=1, random_state=3).splits(TARGETS)
    d = s.to_dict()
    assert d["seed"] == 3 and d["k"] == 1 and len(d["train"]["data"]) == 4
