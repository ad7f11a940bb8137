from __future__ import annotations

import numpy as np
import pytest

from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation.domain_adaptation import OFFICE31_SOURCE_COUNTS, DomainAdaptation
from deepfeat.evaluation.protocols import (
    FixedSplit,
    KShot,
    RandomSplit,
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
    with pytest.raises(DataError, match=r"1 class has fewer than 32 images: 'c' \(31\)"):
        KShot(k=31).splits(TARGETS, CLASSES)
    many = np.repeat(np.arange(8), 3)
    with pytest.raises(
        DataError, match=r"8 classes have fewer than 5 images: 'c0' \(3\), .* 'c4' \(3\) and 3 more;"
    ):
        KShot(k=4).splits(many, [f"c{i}" for i in range(8)])


def test_single_class_is_an_error():
    with pytest.raises(DataError, match="holds 1 class"):
        KShot(k=2).splits(np.zeros(10, dtype=int))


def test_fixed_split():
    names = np.array(["train"] * 6 + ["val"] * 4, dtype=object)
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1, 0])
    (s,) = FixedSplit().splits(y, split_names=names)
    assert s.train["data"].tolist() == list(range(6)) and s.test["data"].tolist() == [6, 7, 8, 9]
    with pytest.raises(DataError, match="defines no train/test split"):
        FixedSplit().splits(y, split_names=None)
    # as a splitter: the split names travel as groups, which the message now says
    with pytest.raises(DataError, match="pass each row's split name as groups="):
        next(FixedSplit().split(np.zeros((10, 1)), y))
    ((train, test),) = FixedSplit().split(np.zeros((10, 1)), y, groups=names)
    assert train.tolist() == list(range(6)) and test.tolist() == [6, 7, 8, 9]
    with pytest.raises(DataError, match=r"needs 'train' \(or 'trainval'\) rows"):
        FixedSplit().splits(y, split_names=np.array(["train"] * 10, dtype=object))
    # train / val / test: val rows are not test rows (they were scored as test), and are counted
    three = np.array(["train"] * 4 + ["val"] * 3 + ["test"] * 3, dtype=object)
    (s,) = FixedSplit().splits(y, split_names=three)
    assert s.train["data"].tolist() == [0, 1, 2, 3] and s.test["data"].tolist() == [7, 8, 9]
    assert s.info == {"unused": {"val": 3}}
    # VOC's trainval / test
    voc = np.array(["trainval"] * 6 + ["test"] * 4, dtype=object)
    (s,) = FixedSplit().splits(y, split_names=voc)
    assert s.train["data"].tolist() == list(range(6)) and s.test["data"].tolist() == [6, 7, 8, 9]
    with pytest.raises(DataError, match="both 'train' and 'trainval'"):
        FixedSplit().splits(y, split_names=np.array(["train", "trainval"] * 4 + ["test"] * 2, dtype=object))


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
    splits = DomainAdaptation(k_source=20, k_target=3, n_splits=2).splits(src, target_targets=tgt)
    assert [s.info["mode"] for s in splits] == ["S", "T", "ST"] * 2
    s_mode, t_mode, st_mode = splits[:3]
    assert set(s_mode.train) == {"source"} and set(t_mode.train) == {"target"}
    assert set(st_mode.train) == {"source", "target"}
    assert np.array_equal(s_mode.test["target"], t_mode.test["target"])
    assert np.bincount(src[s_mode.train["source"]]).tolist() == [20, 20, 20]
    assert np.bincount(tgt[t_mode.train["target"]]).tolist() == [3, 3, 3]
    assert not set(t_mode.train["target"]) & set(t_mode.test["target"])
    assert np.bincount(tgt[t_mode.test["target"]]).tolist() == [7, 7, 7]


def test_split_to_dict_has_seed_and_rows():
    (s,) = KShot(k=1, n_splits=1, random_state=3).splits(TARGETS)
    d = s.to_dict()
    assert d["seed"] == 3 and d["k"] == 1 and len(d["train"]["data"]) == 4


def test_office31_counts_by_source_domain():
    src = np.repeat(np.arange(3), 25)
    tgt = np.repeat(np.arange(3), 10)
    webcam = DomainAdaptation.office31("webcam", n_splits=1).splits(src, target_targets=tgt)
    assert np.bincount(src[webcam[0].train["source"]]).tolist() == [8, 8, 8]
    by_name = DomainAdaptation(k_source=OFFICE31_SOURCE_COUNTS, n_splits=1)
    amazon = by_name.splits(src, target_targets=tgt, source_name="Amazon")
    assert np.bincount(src[amazon[0].train["source"]]).tolist() == [20, 20, 20]
    with pytest.raises(ConfigError, match="k_source gives counts for the source domains"):
        by_name.splits(src, target_targets=tgt, source_name="clipart")
    with pytest.raises(ConfigError, match="unknown Office-31 domain 'webcan'; valid: webcam"):
        DomainAdaptation.office31("webcan")
    # as a splitter there is no domain name: a mapping of one domain is that domain's count, one of
    # several is refused with the way out (it said "the source is None")
    X = np.zeros((len(src) + len(tgt), 1))
    groups = np.r_[np.full(len(src), "source"), np.full(len(tgt), "target")]
    one = DomainAdaptation(k_source={"amazon": 5}, n_splits=1, modes=("S",))
    ((train, _),) = list(one.split(X, np.r_[src, tgt], groups))
    assert np.bincount(src[train]).tolist() == [5, 5, 5]
    with pytest.raises(ConfigError, match=r"split\(\) does not know which one.*office31"):
        next(by_name.split(X, np.r_[src, tgt], groups))


def test_protocols_are_scikit_learn_splitters():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(TARGETS), 4)) + TARGETS[:, None]
    kshot = KShot(k=10, n_splits=3)
    assert kshot.get_n_splits() == 3
    folds = list(kshot.split(X, TARGETS))
    assert len(folds) == 3 and all(np.bincount(TARGETS[tr]).tolist() == [10] * 4 for tr, _ in folds)
    scores = cross_val_score(LogisticRegression(max_iter=500), X, TARGETS, cv=kshot)
    assert scores.shape == (3,) and scores.mean() > 0.5
    names = np.where(np.arange(len(TARGETS)) % 4 == 0, "test", "train")
    ((train, test),) = list(FixedSplit().split(X, TARGETS, groups=names))
    assert set(test) == set(np.flatnonzero(names == "test"))
    groups = np.array(["source"] * 100 + ["target"] * (len(TARGETS) - 100))
    da = DomainAdaptation(k_source=5, k_target=2, n_splits=2)
    splits = list(da.split(X, np.r_[TARGETS[:100] % 2, TARGETS[100:] % 2], groups))
    assert len(splits) == da.get_n_splits() == 6
    for train, test in splits:
        assert (groups[test] == "target").all() and not set(train) & set(test)
    # any label values, as the probes take them (strings, negative or float numbers failed in bincount)
    for labels in (np.array([f"c{t}" for t in TARGETS]), TARGETS - 5, TARGETS * 0.5):
        same = [(tr.tolist(), te.tolist()) for tr, te in kshot.split(X, labels)]
        assert same == [(tr.tolist(), te.tolist()) for tr, te in folds]
        assert len(list(RandomSplit(0.3, n_splits=1).split(X, labels))) == 1
    strings = np.where(np.r_[TARGETS[:100] % 2, TARGETS[100:] % 2] == 1, "dog", "cat")  # order kept
    assert [t.tolist() for _, t in da.split(X, strings, groups)] == [t.tolist() for _, t in splits]
    few = np.array(["a"] * 3 + ["b"] * 30)
    with pytest.raises(DataError, match="'a' \\(3\\)"):
        list(KShot(k=5).split(np.zeros((33, 1)), few))


def test_bad_protocol_parameters_name_themselves():
    with pytest.raises(ConfigError, match=r"n_splits .* at least 1"):
        KShot(k=2, n_splits=0)
    with pytest.raises(ConfigError, match=r"held-out fraction \(test_size\) must be in \(0, 1\)"):
        RandomSplit(test_size=1.5)
    with pytest.raises(ConfigError, match="unknown adaptation mode 'X'"):
        DomainAdaptation(modes=("S", "X"))
    # seeds: split i uses random_state + i (a negative one failed in numpy / scikit-learn at the split)
    for protocol in (KShot, RandomSplit, DomainAdaptation):
        with pytest.raises(ConfigError, match=r"random_state \(seed of the first split\) must be"):
            protocol(random_state=-1)
    with pytest.raises(ConfigError, match="random_state"):
        RandomSplit(n_splits=2, random_state=2**32 - 1)
    assert len(RandomSplit(n_splits=2, random_state=2**32 - 2).splits(TARGETS)) == 2
