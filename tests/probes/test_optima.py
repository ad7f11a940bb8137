"""LinearProbe at a fixed C against scikit-learn's optima at the same C: binary, multi-class (up to many
classes), multi-label with ignored entries, n > d and n < d. Objectives are evaluated here in float64."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_expit, logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from deepfeat.probes import LinearProbe


def problem(n, d, k, seed, sep=0.4):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(size=(k, d))[y] * sep + rng.normal(size=(n, d))
    return np.maximum(X, 0).astype(np.float32) + np.float32(1.0), y  # ReLU-like, off-centre


def logistic_objective(coef, intercept, X, y, C, multinomial: bool) -> float:
    X, W, b = X.astype(np.float64), np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
    Z = X @ W.T + b
    if W.shape[0] == 1:  # binary
        t = np.where(y == 1, 1.0, -1.0)
        data = -log_expit(t * Z[:, 0]).sum()
    elif multinomial:
        data = (logsumexp(Z, axis=1) - Z[np.arange(len(y)), y]).sum()
    else:
        T = np.where(y[:, None] == np.arange(W.shape[0]), 1.0, -1.0)
        data = -log_expit(T * Z).sum()
    return C * data + 0.5 * (W**2).sum()


def hinge2_objective(coef, intercept, X, T, C, mask=None) -> float:
    Z = X.astype(np.float64) @ np.asarray(coef, np.float64).T + np.asarray(intercept, np.float64)
    m = np.maximum(0.0, 1 - T * Z) ** 2
    if mask is not None:
        m = m * mask
    return C * m.sum() + 0.5 * (np.asarray(coef, np.float64) ** 2).sum()


def sk_logreg(X, y, C):
    """scikit-learn's optimum (lbfgs, tight) on centred float64 features, mapped back (same optimum)."""
    X64 = X.astype(np.float64)
    mean = X64.mean(0)
    model = LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(X64 - mean, y)
    return model.coef_, model.intercept_ - model.coef_ @ mean


SHAPES = {"n>d": (240, 20), "n<d": (40, 300)}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("k", [2, 5, 30])
@pytest.mark.parametrize("C", [0.05, 5.0])
def test_logistic_reaches_sklearn_optimum(shape, k, C):
    n, d = SHAPES[shape]
    n = max(n, 4 * k)
    X, y = problem(n, d, k, seed=k)
    ours = LinearProbe(loss="logistic", C=C).fit(X, y)
    coef, intercept = sk_logreg(X, y, C)
    f_ours = logistic_objective(ours.coef_, ours.intercept_, X, y, C, multinomial=True)
    f_ref = logistic_objective(coef, intercept, X, y, C, multinomial=True)
    assert f_ours <= f_ref * (1 + 1e-6) + 1e-9
    assert ours.coef_.shape == coef.shape
    if k == 2:
        assert ours.decision_function(X).shape == (n,)
    scale = np.abs(coef).max()
    # flat directions of a near-separable problem leave small coefficient differences
    np.testing.assert_allclose(ours.coef_, coef, atol=2e-2 * scale)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("k", [2, 5, 30])
def test_squared_hinge_reaches_linearsvc_optimum(shape, k):
    """LinearSVC penalises its intercept (as a feature of value intercept_scaling); a large
    intercept_scaling makes that penalty negligible, so both minimise the same objective."""
    n, d = SHAPES[shape]
    n = max(n, 4 * k)
    X, y = problem(n, d, k, seed=10 + k)
    C = 0.1
    ours = LinearProbe(loss="squared_hinge", C=C).fit(X, y)
    ref = LinearSVC(C=C, dual=False, tol=1e-10, max_iter=100000, intercept_scaling=1e3).fit(X, y)
    T = np.where(y[:, None] == np.arange(k), 1.0, -1.0) if k > 2 else np.where(y == 1, 1.0, -1.0)[:, None]
    f_ours = hinge2_objective(ours.coef_, ours.intercept_, X, T, C)
    f_ref = hinge2_objective(ref.coef_, ref.intercept_, X, T, C)
    assert f_ours <= f_ref * (1 + 1e-6)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=2e-3 * np.abs(ref.coef_).max())


@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_multilabel_with_ignored_entries(loss):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 12)).astype(np.float32)
    Y = (X @ rng.normal(size=(12, 4)) + rng.normal(size=(150, 4)) > 0.3).astype(np.int64)
    ignore = rng.random(Y.shape) < 0.2
    C = 0.3
    ours = LinearProbe(loss=loss, C=C).fit(X, Y, ignore=ignore)
    assert ours.decision_function(X).shape == (150, 4)
    for c in range(4):
        keep = ~ignore[:, c]
        Xc, yc = X[keep], Y[keep, c]
        if loss == "logistic":
            coef, intercept = sk_logreg(Xc, yc, C)
            mine = logistic_objective(ours.coef_[[c]], ours.intercept_[[c]], Xc, yc, C, multinomial=False)
            best = logistic_objective(coef, intercept, Xc, yc, C, multinomial=False)
        else:
            ref = LinearSVC(C=C, dual=False, tol=1e-10, max_iter=100000, intercept_scaling=1e3).fit(Xc, yc)
            t = np.where(yc == 1, 1.0, -1.0)[:, None]
            mine = hinge2_objective(ours.coef_[[c]], ours.intercept_[[c]], Xc, t, C)
            best = hinge2_objective(ref.coef_, ref.intercept_, Xc, t, C)
        assert mine <= best * (1 + 1e-6)
