"""Tests of the classification metrics: AP (area and 11-point), per-class AP and mAP, per-class and
top-k accuracy, checked against scikit-learn, a brute-force reference and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, top_k_accuracy_score

from deepfeat.errors import ConfigError
from deepfeat.metrics import (
    average_precision,
    average_precision_per_class,
    mean_average_precision,
    mean_per_class_accuracy,
    per_class_accuracy,
    top_k_accuracy,
)


def ranked(pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and strictly decreasing scores for a ranking written as e.g. '+ - + - -'."""
    signs = pattern.split()
    y = np.array([1 if c == "+" else 0 for c in signs])
    return y, np.arange(len(y), 0, -1, dtype=float)


def brute_force_area_ap(y: np.ndarray, s: np.ndarray) -> float:
    """Area AP with plain loops: one PR point per distinct score, envelope, sum of recall steps."""
    n_pos = sum(int(v) for v in y)
    points = []  # (recall, precision) from the highest threshold down
    for t in sorted(set(s.tolist()), reverse=True):
        tp = sum(1 for yi, si in zip(y, s) if si >= t and yi == 1)
        fp = sum(1 for yi, si in zip(y, s) if si >= t and yi == 0)
        points.append((tp / n_pos, tp / (tp + fp)))
    total, prev_recall = 0.0, 0.0
    for i, (recall, _) in enumerate(points):
        best = max(p for _, p in points[i:])
        total += (recall - prev_recall) * best
        prev_recall = recall
    return total


def random_problem(rng: np.random.Generator, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random(n) < rng.uniform(0.1, 0.6)).astype(int)
    y[rng.integers(n)] = 1  # at least one positive
    s = rng.normal(size=n) + y * rng.uniform(0, 2)
    return y, (np.round(s, 1) if ties else s)


# --- area AP ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["+ + + - - - -", "+ + - + - -", "+ - - - - - +", "+", "- + - + - - +"])
def test_area_ap_equals_sklearn_when_precision_at_positives_does_not_rise(pattern):
    y, s = ranked(pattern)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_area_ap_exceeds_sklearn_when_envelope_lifts_precision():
    # + - - + + : precisions at the positives are 1, 2/4, 3/5; the envelope lifts 2/4 to 3/5.
    # sklearn: (1 + 1/2 + 3/5) / 3 = 0.7;  area AP: (1 + 3/5 + 3/5) / 3 = 11/15
    y, s = ranked("+ - - + +")
    assert average_precision_score(y, s) == pytest.approx(0.7)
    assert average_precision(y, s) == pytest.approx(11 / 15, abs=1e-12)
    assert average_precision(y, s) > average_precision_score(y, s) + 0.03


def test_area_ap_hand_value():
    # + - + - - : recall 1/2 at precision 1, recall 1 at precision 2/3 -> 1/2 + 1/3 = 5/6
    y, s = ranked("+ - + - -")
    assert average_precision(y, s) == pytest.approx(5 / 6, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_area_ap_matches_brute_force(ties):
    rng = np.random.default_rng(7 + ties)
    for _ in range(25):
        y, s = random_problem(rng, int(rng.integers(1, 40)), ties)
        expected = brute_force_area_ap(y, s)
        assert abs(average_precision(y, s) - expected) < 1e-12
        # never below sklearn's un-enveloped sum (which groups ties the same way)
        assert average_precision(y, s) >= average_precision_score(y, s) - 1e-12


def test_tied_scores_form_one_threshold():
    # all four items tied: a single PR point at recall 1, precision 2/4
    assert average_precision([1, 0, 1, 0], [0.5] * 4) == pytest.approx(0.5)
    assert average_precision([1, 1, 0, 0], [0.5] * 4, method="voc07") == pytest.approx(0.5)


@pytest.mark.parametrize("method", ["area", "voc07"])
def test_order_invariance_with_ties(method):
    rng = np.random.default_rng(3)
    for _ in range(10):
        y, s = random_problem(rng, 30, ties=True)
        s = np.round(s)  # many ties
        ap = average_precision(y, s, method=method)
        for _ in range(3):
            perm = rng.permutation(y.size)
            assert average_precision(y[perm], s[perm], method=method) == ap


# --- 11-point AP -----------------------------------------------------------------------------------------


def test_voc07_hand_example():
    # + - + - - with 2 positives: points (recall, precision) = (1/2, 1), (1/2, 1/2), (1, 2/3), (1, 1/2),
    # (1, 2/5). t = 0, .1, .2, .3, .4, .5 -> max precision 1 (6 levels); t = .6 .. 1 -> 2/3 (5 levels).
    # AP = (6 * 1 + 5 * 2/3) / 11 = 28/33
    y, s = ranked("+ - + - -")
    assert average_precision(y, s, method="voc07") == pytest.approx(28 / 33, abs=1e-12)


def test_voc07_perfect_ranking_is_one():
    y, s = ranked("+ + + - - - -")
    assert average_precision(y, s, method="voc07") == 1.0
    assert average_precision(y, s, method="area") == 1.0


def test_voc07_recall_level_reached_exactly():
    # 10 positives: + + + then 6 negatives then 7 positives. Recall 3/10 is reached at precision 1,
    # so t = 0, .1, .2, .3 give 1 (4 levels); t = .4 .. 1 give the best later precision, 10/16 = 5/8
    # (7 levels). AP = (4 + 7 * 5/8) / 11 = 67/88. (Comparing 3/10 >= 0.1 * 3 in floats would drop
    # t = .3 to 5/8 and give 8/11.)
    y, s = ranked("+ + +" + " -" * 6 + " +" * 7)
    assert average_precision(y, s, method="voc07") == pytest.approx(67 / 88, abs=1e-12)


# --- difficult items and degenerate problems -------------------------------------------------------------


@pytest.mark.parametrize("method", ["area", "voc07"])
def test_difficult_equals_deleting(method):
    rng = np.random.default_rng(11)
    for _ in range(10):
        y, s = random_problem(rng, 25, ties=True)
        difficult = rng.random(y.size) < 0.3
        difficult[np.flatnonzero(y)[0]] = False  # keep a positive
        expected = average_precision(y[~difficult], s[~difficult], method=method)
        assert average_precision(y, s, method=method, difficult=difficult) == expected


def test_difficult_item_is_neither_positive_nor_negative():
    y, s = ranked("- + - +")  # AP = (1/2 + 2/4) / 2 = 1/2
    assert average_precision(y, s) == pytest.approx(0.5)
    # the top-ranked negative is difficult: ranking becomes + - + -> 5/6
    assert average_precision(y, s, difficult=[1, 0, 0, 0]) == pytest.approx(5 / 6)


def test_no_positive_gives_nan():
    assert np.isnan(average_precision([0, 0, 0], [0.1, 0.2, 0.3]))
    assert np.isnan(average_precision([1, 0, 0], [0.1, 0.2, 0.3], difficult=[True, False, False]))
    assert np.isnan(average_precision([], [], method="voc07"))


# --- per-class AP and mAP --------------------------------------------------------------------------------

Y_SMALL = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
S_SMALL = np.array([[0.9, 0.1, 0.3], [0.8, 0.7, 0.2], [0.3, 0.6, 0.1], [0.1, 0.2, 0.4]])


def test_per_class_ap_small_multilabel():
    # class 0 ranks + - + - -> 5/6; class 1 ranks + + - - -> 1; class 2 has no positive -> NaN
    ap = average_precision_per_class(Y_SMALL, S_SMALL)
    assert ap.shape == (3,)
    np.testing.assert_allclose(ap[:2], [5 / 6, 1.0], atol=1e-12)
    assert np.isnan(ap[2])
    assert mean_average_precision(Y_SMALL, S_SMALL) == pytest.approx(11 / 12, abs=1e-12)


def test_per_class_ap_difficult_and_voc07():
    difficult = np.zeros_like(Y_SMALL, dtype=bool)
    difficult[1, 0] = True  # class 0 becomes + + - -> 1
    ap = average_precision_per_class(Y_SMALL, S_SMALL, difficult=difficult)
    np.testing.assert_allclose(ap[:2], [1.0, 1.0])
    ap07 = average_precision_per_class(Y_SMALL, S_SMALL, method="voc07")
    np.testing.assert_allclose(ap07[:2], [28 / 33, 1.0], atol=1e-12)


def test_class_index_vector_equals_one_hot():
    rng = np.random.default_rng(5)
    n, c = 60, 6
    labels = rng.integers(0, c - 1, size=n)  # the last class never occurs
    S = np.round(rng.normal(size=(n, c)), 1)
    onehot = np.eye(c, dtype=int)[labels]
    for method in ("area", "voc07"):
        from_index = average_precision_per_class(labels, S, method=method)
        from_onehot = average_precision_per_class(onehot, S, method=method)
        np.testing.assert_array_equal(from_index, from_onehot)
        assert np.isnan(from_index[-1]) and not np.isnan(from_index[:-1]).any()
        assert mean_average_precision(labels, S, method=method) == pytest.approx(np.mean(from_index[:-1]))


def test_map_without_any_positive_is_an_error():
    with pytest.raises(ConfigError, match="no class has a positive"):
        mean_average_precision(np.zeros((3, 2)), np.ones((3, 2)))


# --- accuracies ------------------------------------------------------------------------------------------


def test_mean_per_class_accuracy_equals_balanced_accuracy():
    rng = np.random.default_rng(2)
    for _ in range(5):
        y_true = np.concatenate([np.arange(7), rng.integers(0, 7, size=80)])  # every class present
        y_pred = np.where(rng.random(y_true.size) < 0.6, y_true, rng.integers(0, 7, size=y_true.size))
        assert mean_per_class_accuracy(y_true, y_pred) == pytest.approx(
            balanced_accuracy_score(y_true, y_pred), abs=1e-12
        )


def test_mean_per_class_accuracy_differs_from_plain_accuracy():
    # class 0: 3 of 3 right; class 1: 0 of 1 right. Plain accuracy 3/4, per-class mean (1 + 0)/2
    y_true, y_pred = [0, 0, 0, 1], [0, 0, 0, 0]
    assert np.mean(np.equal(y_true, y_pred)) == 0.75
    assert mean_per_class_accuracy(y_true, y_pred) == 0.5


def test_per_class_accuracy_absent_class_is_nan_and_ignored():
    acc = per_class_accuracy([0, 0, 2], [0, 1, 2], n_classes=4)
    np.testing.assert_array_equal(np.isnan(acc), [False, True, False, True])
    np.testing.assert_allclose(acc[[0, 2]], [0.5, 1.0])
    assert mean_per_class_accuracy([0, 0, 2], [0, 1, 2], n_classes=4) == 0.75


@pytest.mark.parametrize("k", [1, 5])
def test_top_k_matches_sklearn(k):
    rng = np.random.default_rng(k)
    n, c = 300, 10
    scores = rng.normal(size=(n, c))
    y_true = rng.integers(0, c, size=n)
    expected = top_k_accuracy_score(y_true, scores, k=k, labels=np.arange(c))
    assert top_k_accuracy(y_true, scores, k=k) == pytest.approx(expected, abs=1e-12)


def test_top_k_ties_favour_the_true_class():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 2.0, 1.0]])
    # item 0: nothing strictly above class 0 -> in top 1; item 1: class 2 ties class 1 -> in top 1;
    # item 2: two classes strictly above class 2 -> only in top 3
    assert top_k_accuracy([0, 2, 2], scores, k=1) == pytest.approx(2 / 3)
    assert top_k_accuracy([0, 2, 2], scores, k=2) == pytest.approx(2 / 3)
    assert top_k_accuracy([0, 2, 2], scores, k=3) == 1.0


# --- errors ----------------------------------------------------------------------------------------------


def test_nan_scores_are_an_error():
    with pytest.raises(ConfigError, match=r"scores contain 2 NaN or infinite values"):
        average_precision([1, 0, 1], [0.1, np.nan, np.inf])
    with pytest.raises(ConfigError, match=r"S contain 1 NaN or infinite values"):
        average_precision_per_class(Y_SMALL, np.where(S_SMALL == 0.9, np.nan, S_SMALL))


def test_length_mismatch_is_an_error():
    with pytest.raises(ConfigError, match=r"y_true has shape \(3,\) but the scores have shape \(2,\)"):
        average_precision([1, 0, 1], [0.1, 0.2])
    with pytest.raises(ConfigError, match=r"difficult has shape \(1,\)"):
        average_precision([1, 0], [0.1, 0.2], difficult=[True])
    with pytest.raises(ConfigError, match="y_true has 2 items but y_pred has 3"):
        mean_per_class_accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ConfigError, match="Y has 3 items but the scores have 4 rows"):
        average_precision_per_class([0, 1, 2], S_SMALL)


def test_non_binary_labels_are_an_error():
    with pytest.raises(ConfigError, match=r"y_true must hold only 0 and 1 \(or booleans\); found \[2\]"):
        average_precision([1, 2, 0], [0.3, 0.2, 0.1])
    with pytest.raises(ConfigError, match="Y holds class index 3, but there are only 3 classes"):
        average_precision_per_class([0, 1, 3, 0], S_SMALL)


@pytest.mark.parametrize("k", [0, 11, 1.5, True])
def test_bad_k_is_an_error(k):
    with pytest.raises(ConfigError, match=r"k must be a whole number from 1 to the number of classes \(10\)"):
        top_k_accuracy([0, 1], np.zeros((2, 10)), k=k)


def test_unknown_method_is_an_error():
    with pytest.raises(ConfigError, match="unknown AP method 'voc12'; valid: voc07, area"):
        average_precision([1, 0], [0.2, 0.1], method="voc12")
