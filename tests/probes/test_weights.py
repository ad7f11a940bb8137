"""Sample and class weights of the probes against scikit-learn, and against repeating samples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import PredefinedSplit, StratifiedKFold
from sklearn.svm import LinearSVC
from sklearn.utils.class_weight import compute_class_weight

from deepfeat.errors import ConfigError, DataError
from deepfeat.probes import KernelProbe, LinearProbe, probe_for
from deepfeat.probes.base import DEFAULT_CS
from deepfeat.probes.selection import make_folds, score_predictions
from deepfeat.probes.weights import class_weights


def data(n: int = 240, d: int = 10, seed: int = 1):
    """Features, three imbalanced ordinal classes, positive sample weights."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = np.digitize(X[:, 0] + 0.8 * rng.normal(size=n), [-0.8, 0.9])
    return X, y, rng.uniform(0.2, 3.0, size=n)


CLASS_WEIGHTS = [None, "balanced", {0: 3.0}]


@pytest.mark.parametrize("class_weight", CLASS_WEIGHTS)
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_logistic_matches_sklearn(class_weight, binary, weighted):
    X, y, sw = data()
    if binary:
        y = (y == 2).astype(int)
    sw = sw if weighted else None
    ours = LinearProbe(C=1.0, tol=1e-7, class_weight=class_weight).fit(X, y, sample_weight=sw)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=5000, class_weight=class_weight)
    ref.fit(X.astype(np.float64), y, sample_weight=sw)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X.astype(np.float64)), atol=2e-6)
    # the softmax's intercepts sum to zero, as scikit-learn's: the decision values match too
    ref_decision = ref.decision_function(X.astype(np.float64))
    np.testing.assert_allclose(
        ours.decision_function(X), ref_decision, atol=1e-4 * np.abs(ref_decision).max()
    )


@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_one_vs_rest_weights_each_sample_by_its_class(loss):
    """Every one-vs-rest problem weights a sample by its own class's weight (as scikit-learn's
    logistic regression does; LinearSVC weights the positive class only)."""
    X, y, sw = data()
    cw = {0: 2.0, 2: 0.5}
    probe = LinearProbe(loss=loss, C=1.0, tol=1e-7, multi_class="ovr", class_weight=cw)
    probe.fit(X, y, sample_weight=sw)
    rows = sw * np.array([2.0, 1.0, 0.5])[y]
    for k in range(3):
        single = LinearProbe(loss=loss, C=1.0, tol=1e-7).fit(X, (y == k).astype(int), sample_weight=rows)
        np.testing.assert_allclose(probe.decision_function(X)[:, k], single.decision_function(X), atol=1e-4)


def test_integer_weights_equal_repeated_samples():
    """A weight of m is m copies of the sample (0: the sample left out), in the C search as well,
    with folds that keep each sample's copies together."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 6)).astype(np.float32)
    y = np.digitize(X[:, 0] + 0.7 * rng.normal(size=90), [-0.5, 0.6])
    w = rng.integers(0, 4, size=90)
    w[:3] = 1
    Xr, yr, origin = np.repeat(X, w, 0), np.repeat(y, w), np.repeat(np.arange(90), w)
    fold = np.arange(90) % 3
    cv_w = [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(3)]
    cv_r = [(np.flatnonzero(fold[origin] != f), np.flatnonzero(fold[origin] == f)) for f in range(3)]
    makers = [
        lambda cv: LinearProbe(cv=cv, tol=1e-7),
        lambda cv: LinearProbe(loss="squared_hinge", cv=cv, tol=1e-7),
        lambda cv: KernelProbe(cv=cv, tol=1e-6, Cs=(0.01, 0.1, 1.0)),  # (libsvm crawls at C = 100)
    ]
    for make in makers:
        weighted, repeated = make(cv_w).fit(X, y, sample_weight=w), make(cv_r).fit(Xr, yr)
        assert weighted.C_ == repeated.C_
        assert weighted.cv_results_["mean"] == pytest.approx(repeated.cv_results_["mean"], abs=1e-9)
        a, b = weighted.decision_function(X), repeated.decision_function(X)
        np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max())


@pytest.mark.filterwarnings("ignore::FutureWarning")  # its default scoring: weighted accuracy
@pytest.mark.parametrize("class_weight", [None, "balanced"])
@pytest.mark.parametrize("binary", [True, False])
def test_cv_scores_equal_logistic_regression_cv(class_weight, binary):
    """With sample weights, the C search's validation scores are LogisticRegressionCV's (weighted
    accuracy; class weights shape the training loss only) on the same folds."""
    X, y, sw = data()
    if binary:
        y = (y == 2).astype(int)
    probe = LinearProbe(C="cv", class_weight=class_weight).fit(X, y, sample_weight=sw)
    folds = make_folds(y, 3, 0)
    ref = LogisticRegressionCV(
        Cs=list(DEFAULT_CS), cv=folds, tol=1e-8, max_iter=5000, class_weight=class_weight
    )
    with np.errstate(all="ignore"):
        ref.fit(X.astype(np.float64), y, sample_weight=sw)
    assert ref.C_[0] == probe.C_
    np.testing.assert_allclose(probe.cv_results_["mean"], next(iter(ref.scores_.values())).mean(0), atol=1e-9)


def test_hinge_weights_are_liblinears():
    X, y, sw = data()
    probe = LinearProbe(loss="hinge", C=1.0).fit(X, y, sample_weight=sw)
    for k in range(3):
        svc = LinearSVC(loss="hinge", C=1.0, dual=True, max_iter=5000, tol=1e-4, random_state=0)
        svc.fit(X, (y == k).astype(int), sample_weight=sw)
        np.testing.assert_allclose(probe.coef_[k], svc.coef_[0], atol=1e-5)


def test_multilabel_sample_weights_per_label():
    X, y, sw = data()
    Y = np.stack([y == 0, y >= 1, (X[:, 1] > 0)], 1).astype(int)
    probe = LinearProbe(C=1.0, tol=1e-7).fit(X, Y, sample_weight=sw)
    for k in range(3):
        ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=5000).fit(
            X.astype(np.float64), Y[:, k], sample_weight=sw
        )
        np.testing.assert_allclose(probe.decision_function(X)[:, k], ref.decision_function(X), atol=1e-4)


def test_balanced_weights_are_sklearns():
    _, y, sw = data()
    classes = np.unique(y)
    for weights in (None, sw):
        ref = compute_class_weight("balanced", classes=classes, y=y, sample_weight=weights)
        np.testing.assert_allclose(class_weights("balanced", classes, y, weights), ref)


def test_weighted_scores_are_sklearns():
    rng = np.random.default_rng(2)
    codes, scores, sw = rng.integers(0, 4, 200), rng.normal(size=(200, 4)), rng.uniform(0, 2, 200)
    pred = scores.argmax(1)
    assert score_predictions("accuracy", codes, scores, sample_weight=sw) == pytest.approx(
        accuracy_score(codes, pred, sample_weight=sw)
    )
    assert score_predictions("mean_class_accuracy", codes, scores, sample_weight=sw) == pytest.approx(
        balanced_accuracy_score(codes, pred, sample_weight=sw)
    )
    assert np.isnan(score_predictions("accuracy", codes, scores, sample_weight=np.zeros(200)))


def test_splitters_and_index_pairs_as_cv():
    X, y, _ = data()
    folds = make_folds(y, 3, 0)
    base = LinearProbe().fit(X, y)
    for cv in (StratifiedKFold(3, shuffle=True, random_state=0), folds):
        other = LinearProbe(cv=cv).fit(X, y)
        assert other.C_ == base.C_ and other.cv_results_["mean"] == base.cv_results_["mean"]
    test_fold = np.where(np.arange(len(y)) % 4 == 0, 0, -1)  # one validation fold
    single = LinearProbe(cv=PredefinedSplit(test_fold)).fit(X, y)
    assert single.cv_results_["n_folds"] == 1
    for bad, match in [
        ([(np.arange(10),)], "pair of index arrays"),
        ([(np.arange(10), np.array([len(y)]))], "indices 0..239"),
        ([(np.array([], dtype=int), np.arange(5))], "train part"),
        (1, "at least 2 folds"),
        ("three", "splitter"),
    ]:
        with pytest.raises(ConfigError, match=match):
            LinearProbe(cv=bad).fit(X, y)


@pytest.mark.parametrize(
    "sample_weight, class_weight, match",
    [
        (-np.ones(240), None, "non-negative; rows 0, 1"),
        (np.r_[np.nan, np.ones(239)], None, "finite"),
        (np.ones(5), None, r"shape \(240,\)"),
        (np.zeros(240), None, "zero for every sample"),
        (np.where(np.arange(240) < 120, 0.0, 1.0), None, "zero total sample weight"),
        (None, {7: 2.0}, "labels 7 that are not among"),
        (None, {0: -1.0}, "positive"),
        (None, "equal", "None, 'balanced' or a dict"),
        (["a"] * 240, None, "numbers"),
    ],
)
def test_bad_weights_are_named(sample_weight, class_weight, match):
    X, _, _ = data()
    y = (np.arange(240) < 120).astype(int)
    with pytest.raises((ConfigError, DataError), match=match):
        LinearProbe(C=1.0, class_weight=class_weight).fit(X, y, sample_weight=sample_weight)


def test_multilabel_weights_are_refused_where_undefined():
    X, y, _ = data()
    Y = np.stack([y == 0, y >= 1], 1).astype(int)
    with pytest.raises(ConfigError, match="single-label"):
        LinearProbe(C=1.0, class_weight="balanced").fit(X, Y)
    with pytest.raises(DataError, match="labels 0, 1 have no positive"):
        LinearProbe(C=1.0).fit(X, Y, sample_weight=np.where(y == 0, 0.0, 1.0))


def test_the_registry_passes_class_weight_to_both_kinds_of_probe():
    assert probe_for("logreg", class_weight="balanced").class_weight == "balanced"
    assert probe_for("ksvm", class_weight="balanced").class_weight == "balanced"


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_tolerances_below_float32s_resolution_continue_in_float64():
    """(Multinomial iris at tol 1e-8 and C = 100 ran 1,248 float32 Newton steps into NaN
    coefficients that predicted one class, and the C search scored such fits silently.)"""
    from sklearn.datasets import load_iris
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    w = np.random.default_rng(0).integers(0, 4, 150).astype(float)
    probe = LinearProbe(C=100.0, tol=1e-8).fit(X, y, sample_weight=w)
    ref = LogisticRegression(C=100.0, tol=1e-12, max_iter=10000).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=1).split(X, y))
    Cs = list(np.logspace(-3, 2, 6))
    search = LinearProbe(Cs=Cs, cv=folds, cv_tol=1e-8, class_weight="balanced").fit(X, y, sample_weight=w)
    ref_cv = LogisticRegressionCV(Cs=Cs, cv=folds, tol=1e-10, max_iter=10000, class_weight="balanced")
    ref_cv.fit(X, y, sample_weight=w)
    np.testing.assert_allclose(search.cv_results_["folds"], next(iter(ref_cv.scores_.values())), atol=1e-9)


def test_found_by_a_scikit_learn_user():
    """Five defects a scikit-learn user met, each fixed."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import StackingClassifier
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    # stacking asked for the logistic probe's predict_proba by name and got '_predict_proba'
    stack = StackingClassifier([("probe", LinearProbe(C=1.0))], cv=3).fit(X, y)
    assert stack.score(X, y) > 0.9
    # L2-normalised rows do not depend on the scale (float32 norms overflowed at 1e20: all rows 0)
    for probe in (LinearProbe(C=1.0, normalize=True), KernelProbe(C=1.0)):
        small, large = clone(probe).fit(X, y), clone(probe).fit(X * 1e20, y)
        assert large.score(X * 1e20, y) == pytest.approx(small.score(X, y))
    # liblinear's hinge trained without the dropout copies, then scaled the test features
    with pytest.raises(ConfigError, match="does not train on dropout copies"):
        LinearProbe(loss="hinge", dropout=0.5).fit(X, y)
    # multi-label scores are mAP: sample weights were accepted and ignored
    Y = np.stack([y == 0, y == 1], 1).astype(int)
    with pytest.raises(ConfigError, match="takes no sample weights"):
        LinearProbe(C=1.0).fit(X, Y).score(X, Y, sample_weight=np.ones(150))
    # labels mixing text and numbers: a TypeError from np.unique
    with pytest.raises(DataError, match="mixes text and numbers"):
        LinearProbe(C=1.0).fit(X, np.array([1, "a", 2.5] * 50, dtype=object))


def test_features_too_large_for_float32_products_are_named():
    """(1e20-scaled iris reached torch's eigh failure, or libsvm's 'Input X contains infinity'.)"""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    for probe in (LinearProbe(C=1.0), KernelProbe(C=1.0, normalize="none")):
        with pytest.raises(DataError, match=r"products of its rows overflow float32.*rescale"):
            probe.fit(X * 1e20, y)
    assert LinearProbe(C=1.0, normalize=True).fit(X * 1e20, y).score(X * 1e20, y) > 0.6
