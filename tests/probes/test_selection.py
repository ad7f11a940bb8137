"""Choosing C by cross-validation: the search against one redone here, fold by fold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from deepfeat.probes import DEFAULT_CS, LinearProbe
from deepfeat.probes.selection import make_folds, score_predictions

RECORD_KEYS = {"Cs", "evaluated", "scoring", "n_folds", "mean", "std", "best_C"}


def blobs(n: int, d: int, k: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n float32 points in d dims around k Gaussian centres of scale ``sep``; labels 0..k-1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def manual_curve(X, y, Cs, loss="logistic", scoring="accuracy", cv=3, seed=0) -> np.ndarray:
    """Mean validation score of ``LinearProbe(C=c)`` fitted from scratch on every fold."""
    codes = np.unique(y, return_inverse=True)[1]
    folds = make_folds(codes, cv, seed)
    curve = []
    for C in Cs:
        scores = []
        for train, val in folds:
            pred = LinearProbe(loss=loss, C=C).fit(X[train], y[train]).predict(X[val])
            if scoring == "accuracy":
                scores.append(np.mean(pred == y[val]))
            else:
                scores.append(balanced_accuracy_score(y[val], pred))
        curve.append(np.mean(scores))
    return np.array(curve)


def first_argmax(values) -> int:
    values = np.asarray(values)
    return int(np.flatnonzero(values >= values.max() - 1e-12)[0])


@pytest.fixture(scope="module")
def noisy():
    """A problem whose validation accuracy clearly depends on C."""
    X, y = blobs(240, 40, 3, sep=0.25, seed=0)
    return X, y


@pytest.fixture(scope="module")
def full_records(noisy):
    """Full-grid searches on ``noisy``, per loss, fitted once."""
    cache: dict[str, LinearProbe] = {}

    def get(loss: str) -> LinearProbe:
        if loss not in cache:
            cache[loss] = LinearProbe(loss=loss, path_patience=None).fit(*noisy)
        return cache[loss]

    return get


@pytest.mark.parametrize("loss", ["logistic", "squared_hinge", "hinge"])
def test_full_grid_choice_matches_manual_search(noisy, full_records, loss):
    X, y = noisy
    probe = full_records(loss)
    curve = manual_curve(X, y, DEFAULT_CS, loss=loss)
    assert curve.max() - curve.min() > 0.05  # C matters here
    record = probe.cv_results_
    assert set(record) >= RECORD_KEYS
    assert record["Cs"] == list(DEFAULT_CS) and record["evaluated"] == list(DEFAULT_CS)
    assert record["scoring"] == "accuracy" and record["n_folds"] == 3
    assert len(record["std"]) == len(DEFAULT_CS)
    # warm-started fold fits may flip a near-tied validation prediction or two (folds of 80: 1/240 each)
    np.testing.assert_allclose(record["mean"], curve, atol=2 / len(y) + 1e-12)
    assert probe.C_ == DEFAULT_CS[first_argmax(curve)] == record["best_C"]


def test_mean_class_accuracy_scoring():
    X, y = blobs(300, 40, 3, sep=0.25, seed=1)
    keep = (y != 2) | (np.arange(len(y)) % 4 == 0)  # class 2 rarer
    X, y = X[keep], y[keep]
    Cs = [1e-3, 1e-2, 1e-1, 1.0]
    probe = LinearProbe(Cs=Cs, scoring="mean_class_accuracy", path_patience=None).fit(X, y)
    curve = manual_curve(X, y, Cs, scoring="mean_class_accuracy")
    np.testing.assert_allclose(probe.cv_results_["mean"], curve, atol=0.01)
    assert Cs[first_argmax(curve)] == probe.C_


def test_ties_go_to_the_smaller_C():
    X, y = blobs(150, 10, 3, sep=4.0, seed=2)  # separable: every C scores 1.0
    probe = LinearProbe(Cs=[10.0, 0.1, 1.0], path_patience=None).fit(X, y)
    assert probe.cv_results_["mean"] == [1.0, 1.0, 1.0]
    assert probe.cv_results_["Cs"] == [0.1, 1.0, 10.0]  # walked upwards
    assert probe.C_ == 0.1


def walk_length(curve, patience: int) -> int:
    """How many Cs the documented early-stop rule evaluates on this curve."""
    best, since = -np.inf, 0
    for j, value in enumerate(curve):
        if value > best + 1e-12:
            best, since = value, 0
        else:
            since += 1
            if since >= patience:
                return j + 1
    return len(curve)


@pytest.mark.parametrize("patience", [1, 2])
def test_path_patience_stops_early_on_a_prefix(noisy, full_records, patience):
    X, y = noisy
    full = full_records("logistic").cv_results_
    record = LinearProbe(path_patience=patience).fit(X, y).cv_results_
    evaluated = record["evaluated"]
    assert evaluated == list(DEFAULT_CS)[: len(evaluated)]
    assert len(evaluated) == walk_length(full["mean"], patience)
    assert len(record["mean"]) == len(evaluated)
    np.testing.assert_allclose(record["mean"], full["mean"][: len(evaluated)], atol=1e-12)
    assert record["best_C"] == evaluated[first_argmax(record["mean"])]


def test_patience_one_stops_before_the_end(noisy):
    X, y = noisy
    record = LinearProbe(path_patience=1).fit(X, y).cv_results_
    assert len(record["evaluated"]) < len(DEFAULT_CS)


def test_final_model_is_refitted_on_all_data_at_the_chosen_C(noisy):
    X, y = noisy
    probe = LinearProbe(Cs=[0.001, 0.01, 0.1]).fit(X, y)
    fixed = LinearProbe(C=probe.C_, tol=1e-7).fit(X, y)
    np.testing.assert_allclose(probe.decision_function(X), fixed.decision_function(X), atol=2e-3)
    assert LinearProbe(C=0.5).fit(X, y).cv_results_ is None


def test_singleton_class_falls_back():
    X, y = blobs(101, 10, 3, sep=2.0, seed=3)
    y = np.r_[np.zeros(50, int), np.ones(50, int), [2]]
    probe = LinearProbe(fallback_C=0.37).fit(X, y)
    assert probe.C_ == 0.37
    assert "fewer than 2 samples" in probe.cv_results_["note"]
    assert probe.predict(X).shape == (101,)


def test_small_class_reduces_the_folds():
    X, y = blobs(62, 10, 3, sep=2.0, seed=4)
    y = np.r_[np.zeros(30, int), np.ones(30, int), [2, 2]]
    folds = make_folds(y, 3, 0)
    assert len(folds) == 2
    for train, val in folds:
        assert set(y[val]) == {0, 1, 2} and set(y[train]) == {0, 1, 2}
        assert len(np.intersect1d(train, val)) == 0
    assert LinearProbe(Cs=[0.1, 1.0]).fit(X, y).cv_results_["n_folds"] == 2


def test_folds_are_stratified_and_seeded():
    y = np.repeat([0, 1, 2], [30, 60, 90])
    a, b, c = make_folds(y, 3, 0), make_folds(y, 3, 0), make_folds(y, 3, 1)
    for (_, va), (_, vb) in zip(a, b):
        np.testing.assert_array_equal(va, vb)
    assert any(not np.array_equal(va, vc) for (_, va), (_, vc) in zip(a, c))
    for _, val in a:
        np.testing.assert_array_equal(np.bincount(y[val]), [10, 20, 30])
    assert make_folds(np.r_[y, 3], 3, 0) is None


def test_dropout_copies_do_not_leak_into_validation():
    """Random labels: if copies of a validation sample were trained on, large C would memorise it."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 60)).astype(np.float32)
    y = rng.integers(0, 3, 150)
    record = LinearProbe(dropout=0.1, dropout_copies=4, Cs=[1.0, 100.0], path_patience=None).fit(X, y)
    assert max(record.cv_results_["mean"]) < 0.5


# -- the public protocol -------------------------------------------------------------------------


class ShrunkCentroids:
    """A toy PathProbe: nearest class centroid shrunk towards the overall mean by C / (1 + C)."""

    def __init__(self, Cs, cv=3, scoring=None, fallback_C=1.0, random_state=0, path_patience=None):
        self.Cs, self.cv, self.scoring, self.fallback_C = Cs, cv, scoring, fallback_C
        self.random_state, self.path_patience = random_state, path_patience
        self.calls = []

    def prepare_path(self, X, codes, mask):
        self.calls.append("prepare")
        return X

    def fit_path(self, prepared, rows, codes, mask, Cs):
        X = prepared[rows]
        centroids = np.stack([X[codes == k].mean(0) for k in range(codes.max() + 1)])
        for C in Cs:
            self.calls.append(("fit", C))
            yield X.mean(0) + C / (1 + C) * (centroids - X.mean(0))

    def decision_on(self, prepared, model, rows):
        return -((prepared[rows][:, None, :] - model[None]) ** 2).sum(2)


def test_select_C_uses_only_the_protocol():
    from deepfeat.probes.selection import PathProbe, select_C

    X, y = blobs(120, 5, 3, sep=1.0, seed=6)
    toy = ShrunkCentroids(Cs=[10.0, 0.001, 1.0])
    assert isinstance(toy, PathProbe)
    C, record, models = select_C(toy, toy.prepare_path(X, y, None), y, None)
    assert record["Cs"] == [0.001, 1.0, 10.0] and record["evaluated"] == record["Cs"]
    assert record["best_C"] == C and len(models) == record["n_folds"] == 3
    assert [c for c in toy.calls if c != "prepare"] == [
        ("fit", c) for c in (0.001, 1.0, 10.0) for _ in range(3)
    ]
    # fold scores are those of the toy's own decisions
    folds = make_folds(y, 3, 0)
    for j, c in enumerate(record["Cs"]):
        expected = []
        for train, val in folds:
            model = next(iter(toy.fit_path(X, train, y[train], None, [c])))
            expected.append(np.mean(toy.decision_on(X, model, val).argmax(1) == y[val]))
        assert record["mean"][j] == pytest.approx(np.mean(expected))


def test_probes_implement_the_protocol():
    from deepfeat.probes import KernelProbe, PathProbe

    assert isinstance(LinearProbe(), PathProbe) and isinstance(KernelProbe(), PathProbe)


def test_binary_search_scores_one_column():
    X, y = blobs(150, 8, 2, sep=0.4, seed=7)
    probe = LinearProbe(Cs=[0.01, 1.0], scoring="mean_class_accuracy").fit(X, y)
    assert len(probe.cv_results_["mean"]) == 2 and probe.C_ in (0.01, 1.0)


def test_one_column_scores_mean_the_second_class():
    codes = np.array([0, 1, 1, 0])
    s = np.array([-1.0, 2.0, -0.5, -3.0])
    assert score_predictions("accuracy", codes, s) == 0.75
    assert score_predictions("accuracy", codes, np.column_stack([-s, s])) == 0.75
    assert score_predictions("mean_class_accuracy", codes, s) == 0.75
