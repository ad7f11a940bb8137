"""LinearProbe against independent references: scikit-learn, scipy, and objectives computed here."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import expit, log_expit, logsumexp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

import deepfeat.probes.linear as linear_module
import deepfeat.probes.solver as solver_module
from deepfeat.errors import ConfigError, DataError
from deepfeat.metrics import mean_average_precision
from deepfeat.probes import LinearProbe, probe_for
from deepfeat.probes.basis import Basis
from deepfeat.probes.dropout import dropout_copies
from deepfeat.probes.objectives import make_problem, stack_folds
from deepfeat.probes.solver import solve


def torch_cuda_available() -> bool:
    return torch.cuda.is_available()


def torch_solvers_only(monkeypatch) -> None:
    """Two-class logistic fits on the CPU through the torch solvers too (they serve GPUs and larger
    problems; on the CPU small ones go to :mod:`deepfeat.probes.binary_logistic`)."""
    monkeypatch.setattr(linear_module, "applies", lambda *args: False)


def blobs(n: int, d: int, k: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n float32 points in d dims around k Gaussian centres of scale ``sep``; labels 0..k-1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def split(X: np.ndarray, y: np.ndarray, n_train: int):
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def softmax_objective(coef, intercept, X, y, C) -> float:
    """C * sum of multinomial cross-entropies + 1/2 ||W||^2, in float64."""
    W = np.asarray(coef, dtype=np.float64)
    Z = X.astype(np.float64) @ W.T + np.asarray(intercept, dtype=np.float64)
    nll = logsumexp(Z, axis=1) - Z[np.arange(len(y)), y]
    return C * nll.sum() + 0.5 * (W**2).sum()


def sklearn_logreg(X, y, C, centre: bool = False) -> LogisticRegression:
    """LogisticRegression solved tightly in float64; with ``centre``, on centred features (the same
    optimum, since the intercept is free), with the intercept mapped back to the raw features."""
    X64 = X.astype(np.float64)
    mean = X64.mean(0) if centre else np.zeros(X.shape[1])
    model = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(X64 - mean, y)
    model.intercept_ = model.intercept_ - model.coef_ @ mean
    return model


# -- separable classes and chance ------------------------------------------------------------------

PRESETS = ["logreg", "logreg-ovr", "svm", "svm-hinge"]


@pytest.mark.parametrize("name", PRESETS)
def test_separable_blobs_are_learned(name):
    X, y = blobs(500, 20, 4, sep=3.0, seed=1)
    names = np.array(["ant", "bee", "fly", "wasp"])[y]  # string labels come back as strings
    Xtr, ytr, Xte, yte = split(X, names, 300)
    probe = probe_for(name).fit(Xtr, ytr)
    assert list(probe.classes_) == ["ant", "bee", "fly", "wasp"]
    assert probe.predict(Xte).dtype == names.dtype
    assert probe.score(Xte, yte) >= 0.99


@pytest.mark.parametrize("name", PRESETS)
def test_shuffled_labels_give_chance(name):
    k = 4
    X, y = blobs(700, 20, k, sep=3.0, seed=2)
    y = np.random.default_rng(0).permutation(y)
    Xtr, ytr, Xte, yte = split(X, y, 300)
    acc = probe_for(name).fit(Xtr, ytr).score(Xte, yte)
    assert abs(acc - 1 / k) < 0.1  # 400 test points: chance +- 0.022 (1 sd)


def test_fit_leaves_the_callers_autograd_mode_alone():
    # the solvers run in inference mode; a caller training a network around the probe keeps its own
    X, y = blobs(200, 10, 3, sep=3.0, seed=3)
    with torch.enable_grad():
        probe = LinearProbe(C=1.0).fit(X, y)
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        w = torch.tensor(probe.coef_, requires_grad=True)
        (w**2).sum().backward()  # the fitted coefficients are plain, trainable data
    assert torch.equal(w.grad, 2 * w.detach())
    assert probe.score(X, y) >= 0.99


# -- logistic loss against scikit-learn, fixed C ---------------------------------------------------

CASES = {
    "n>d": dict(n=300, d=50, sep=0.3, offset=None),
    "d>n": dict(n=60, d=300, sep=0.3, offset=None),  # row-space basis: 59 unknowns per class
    "relu+50": dict(n=300, d=50, sep=0.3, offset=50.0),  # centring
}


@pytest.mark.parametrize("C", [1.0, 0.01])
@pytest.mark.parametrize("case", list(CASES))
def test_logistic_matches_sklearn(case, C):
    cfg = CASES[case]
    X, y = blobs(2 * cfg["n"], cfg["d"], 4, cfg["sep"], seed=3)
    if cfg["offset"] is not None:
        X = np.maximum(X, 0) + np.float32(cfg["offset"])
    Xtr, ytr, Xte, yte = split(X, y, cfg["n"])
    # tol=1e-7: the default 1e-5 leaves up to ~2e-6 relative objective gap on near-separable d>n data
    ours = LinearProbe(loss="logistic", C=C, tol=1e-7).fit(Xtr, ytr)
    # sklearn's lbfgs is itself inaccurate on +50-offset features, so it gets them centred
    ref = sklearn_logreg(Xtr, ytr, C, centre=cfg["offset"] is not None)

    assert abs(ours.score(Xte, yte) - ref.score(Xte.astype(np.float64), yte)) <= 0.005
    # float32 L-BFGS resolves the objective to ~1e-7 relative, i.e. parameters to ~sqrt(1e-7)
    p_ours, p_ref = ours.predict_proba(Xte), ref.predict_proba(Xte.astype(np.float64))
    assert np.abs(p_ours - p_ref).max() < 1e-3
    f_ours = softmax_objective(ours.coef_, ours.intercept_, Xtr, ytr, C)
    f_ref = softmax_objective(ref.coef_, ref.intercept_, Xtr, ytr, C)
    assert f_ours <= f_ref * (1 + 1e-6)


def test_default_tolerance_is_close_to_sklearn():
    X, y = blobs(600, 50, 4, 0.3, seed=4)
    Xtr, ytr, Xte, _ = split(X, y, 300)
    ours = LinearProbe(C=1.0).fit(Xtr, ytr)
    ref = sklearn_logreg(Xtr, ytr, 1.0)
    assert np.abs(ours.predict_proba(Xte) - ref.predict_proba(Xte.astype(np.float64))).max() < 2e-3
    assert ours.n_iter_ > 0


def test_uncentred_offset_beats_plain_sklearn():
    """On ReLU + 50 features, sklearn's lbfgs (uncentred) is the less accurate of the two."""
    X, y = blobs(300, 50, 4, 0.3, seed=5)
    X = np.maximum(X, 0) + np.float32(50)
    ours = LinearProbe(C=1.0).fit(X, y)
    plain = LogisticRegression(C=1.0, max_iter=1000).fit(X.astype(np.float64), y)
    f_ours = softmax_objective(ours.coef_, ours.intercept_, X, y, 1.0)
    assert f_ours <= softmax_objective(plain.coef_, plain.intercept_, X, y, 1.0) * (1 + 1e-6)


# -- squared hinge against scipy -------------------------------------------------------------------


def squared_hinge_reference(X, y, k, C) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest C * sum max(0, 1 - t (w.x + b))^2 + 1/2 ||w||^2 (b free), float64 L-BFGS-B."""
    X64 = X.astype(np.float64)
    mean = X64.mean(0)
    Xc = X64 - mean  # exact: the intercept absorbs the shift
    coef, intercept = np.zeros((k, X.shape[1])), np.zeros(k)
    for c in range(k):
        t = np.where(y == c, 1.0, -1.0)

        def fun(p, t=t):
            w, b = p[:-1], p[-1]
            m = np.maximum(0.0, 1 - t * (Xc @ w + b))
            g = -2 * C * t * m
            return C * (m @ m) + 0.5 * (w @ w), np.append(Xc.T @ g + w, g.sum())

        res = minimize(
            fun,
            np.zeros(X.shape[1] + 1),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 5000, "maxcor": 30, "gtol": 1e-10, "ftol": 1e-15},
        )
        assert np.abs(res.jac).max() < 1e-5, res.message
        coef[c], intercept[c] = res.x[:-1], res.x[-1] - res.x[:-1] @ mean
    return coef, intercept


@functools.cache
def _squared_hinge_gaps(C, n, d) -> tuple[float, float]:
    """(max relative decision-value error, max relative objective excess over the classes)."""
    X, y = blobs(2 * n, d, 4, 0.3, seed=6)
    Xtr, ytr, Xte, _ = split(X, y, n)
    coef, intercept = squared_hinge_reference(Xtr, ytr, 4, C)
    ours = LinearProbe(loss="squared_hinge", C=C).fit(Xtr, ytr)
    ref = Xte.astype(np.float64) @ coef.T + intercept
    X64 = Xtr.astype(np.float64)

    def objective(w, b, t):
        return C * (np.maximum(0.0, 1 - t * (X64 @ w + b)) ** 2).sum() + 0.5 * (w @ w)

    excess = []
    for c in range(4):
        t = np.where(ytr == c, 1.0, -1.0)
        f_ref = objective(coef[c], intercept[c], t)
        excess.append(
            (objective(ours.coef_[c].astype(np.float64), float(ours.intercept_[c]), t) - f_ref) / f_ref
        )
    return np.abs(ours.decision_function(Xte) - ref).max() / np.abs(ref).max(), max(excess)


@pytest.mark.parametrize(("n", "d"), [(300, 50), (60, 300)])
def test_squared_hinge_matches_scipy_small_C(n, d):
    decision, excess = _squared_hinge_gaps(0.01, n, d)
    assert decision < 1e-3
    assert excess < 1e-6


@pytest.mark.parametrize(("n", "d"), [(300, 50), (60, 300)])
def test_squared_hinge_matches_scipy_C1(n, d):
    decision, excess = _squared_hinge_gaps(1.0, n, d)
    assert excess < 1e-6
    assert decision < 1e-3


@pytest.mark.parametrize(("n", "d"), [(300, 50), (60, 300)])
def test_squared_hinge_close_to_scipy_C1(n, d):
    """The C=1 comparison at the accuracy the solver does reach."""
    decision, excess = _squared_hinge_gaps(1.0, n, d)
    assert decision < 5e-3
    assert excess < 1e-4


def squared_hinge_newton(X, y, k, C) -> tuple[np.ndarray, np.ndarray]:
    """The same one-vs-rest squared-hinge optimum by scipy's Newton-CG (generalised Hessian), which
    stays accurate at large C where L-BFGS-B does not."""
    Xc = X.astype(np.float64) - X.astype(np.float64).mean(0)
    coef, intercept = np.zeros((k, X.shape[1])), np.zeros(k)
    for c in range(k):
        t = np.where(y == c, 1.0, -1.0)

        def fun(p, t=t):
            m = np.maximum(0.0, 1 - t * (Xc @ p[:-1] + p[-1]))
            g = -2 * C * t * m
            return C * (m @ m) + 0.5 * (p[:-1] @ p[:-1]), np.append(Xc.T @ g + p[:-1], g.sum())

        def hessp(p, v, t=t):
            A = Xc[1 - t * (Xc @ p[:-1] + p[-1]) > 0]
            u = A @ v[:-1] + v[-1]
            return np.append(v[:-1] + 2 * C * A.T @ u, 2 * C * u.sum())

        res = minimize(fun, np.zeros(X.shape[1] + 1), jac=True, hessp=hessp, method="Newton-CG", tol=1e-12)
        assert np.abs(res.jac).max() < 1e-8 * max(1.0, res.fun), res.message
        coef[c], intercept[c] = res.x[:-1], res.x[-1] - res.x[:-1] @ X.astype(np.float64).mean(0)
    return coef, intercept


def test_newton_reference_agrees_with_lbfgsb_reference():
    X, y = blobs(300, 50, 4, 0.3, seed=6)
    a, b = squared_hinge_reference(X, y, 4, 1.0), squared_hinge_newton(X, y, 4, 1.0)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5 * np.abs(b[0]).max())


@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_large_C_reaches_the_optimum(loss):
    C = 100.0
    X, y = blobs(400, 40, 3, 0.25, seed=15)
    Xtr, ytr, Xte, _ = split(X, y, 160)
    ours = LinearProbe(loss=loss, C=C).fit(Xtr, ytr)
    S = ours.decision_function(Xte).astype(np.float64)
    if loss == "logistic":
        ref = sklearn_logreg(Xtr, ytr, C, centre=True)
        R = ref.decision_function(Xte.astype(np.float64))
        S, R = S - S.mean(1, keepdims=True), R - R.mean(1, keepdims=True)  # softmax ignores row shifts
        f_ref = softmax_objective(ref.coef_, ref.intercept_, Xtr, ytr, C)
        f_ours = softmax_objective(ours.coef_, ours.intercept_, Xtr, ytr, C)
    else:
        coef, intercept = squared_hinge_newton(Xtr, ytr, 3, C)
        R = Xte.astype(np.float64) @ coef.T + intercept
        T = np.where(ytr[:, None] == np.arange(3), 1.0, -1.0)

        def objective(W, b):
            W = np.asarray(W, dtype=np.float64)
            margins = np.maximum(0.0, 1 - T * (Xtr.astype(np.float64) @ W.T + b))
            return C * (margins**2).sum() + 0.5 * (W**2).sum()

        f_ref, f_ours = objective(coef, intercept), objective(ours.coef_, ours.intercept_)
    assert f_ours <= f_ref * (1 + 1e-6)
    assert np.abs(S - R).max() / np.abs(R).max() < 1e-3


# -- hinge against LinearSVC -----------------------------------------------------------------------


def test_hinge_matches_linearsvc_one_vs_rest():
    X, y = blobs(600, 30, 4, 0.4, seed=7)
    Xtr, ytr, Xte, yte = split(X, y, 300)
    ours = LinearProbe(loss="hinge", C=0.1).fit(Xtr, ytr)
    scores = np.column_stack(
        [
            LinearSVC(loss="hinge", C=0.1, dual=True, max_iter=20000)
            .fit(Xtr, ytr == c)
            .decision_function(Xte)
            for c in range(4)
        ]
    )
    agree = np.mean(ours.predict(Xte) == scores.argmax(1))
    assert agree >= 0.98
    assert 0.5 < ours.score(Xte, yte) < 1.0  # a non-trivial problem


def test_hinge_takes_max_iter_and_tol_and_warns_when_it_stops_short():
    X, y = blobs(600, 30, 4, 0.4, seed=7)
    Xtr, ytr, _, _ = split(X, y, 300)
    tight = LinearProbe(loss="hinge", C=1.0, max_iter=100000, tol=1e-6).fit(Xtr, ytr)
    with pytest.warns(ConvergenceWarning, match="liblinear stopped at max_iter=2"):
        short = LinearProbe(loss="hinge", C=1.0, max_iter=2).fit(Xtr, ytr)
    assert short.n_iter_ == 2 and tight.n_iter_ < 100000
    assert not np.allclose(short.coef_, tight.coef_, atol=1e-3)  # liblinear's limit was always 5000
    reference = LinearSVC(loss="hinge", C=1.0, dual=True, max_iter=100000, tol=1e-6).fit(Xtr, ytr == 0)
    np.testing.assert_allclose(tight.coef_[0], reference.coef_[0], rtol=1e-4, atol=1e-4)


# -- multi-label -----------------------------------------------------------------------------------


def multilabel_data(seed: int = 8):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, 20)).astype(np.float32)
    W = rng.normal(size=(3, 20))
    Y = (X @ W.T + rng.normal(scale=2.0, size=(400, 3)) > 0.5).astype(np.int64)
    ignore = rng.random(Y.shape) < 0.15
    return X, Y, ignore


def test_multilabel_logistic_is_binary_logreg_per_label_without_ignored_rows():
    X, Y, ignore = multilabel_data()
    Xtr, Ytr, itr, Xte = X[:250], Y[:250], ignore[:250], X[250:]
    ours = LinearProbe(C=0.5, tol=1e-7).fit(Xtr, Ytr, ignore=itr)  # default multi_class: still ovr
    S = ours.decision_function(Xte)
    assert S.shape == (150, 3)
    for c in range(3):
        keep = ~itr[:, c]
        ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10000).fit(
            Xtr[keep].astype(np.float64), Ytr[keep, c]
        )
        assert np.abs(expit(S[:, c]) - ref.predict_proba(Xte.astype(np.float64))[:, 1]).max() < 1e-3
    # the mask matters: without it the fit differs
    plain = LinearProbe(C=0.5, tol=1e-7).fit(Xtr, Ytr)
    assert np.abs(plain.decision_function(Xte) - S).max() > 1e-2


def test_multilabel_predict_and_score():
    X, Y, ignore = multilabel_data()
    probe = LinearProbe(loss="squared_hinge", C=0.1).fit(X[:250], Y[:250], ignore=ignore[:250])
    pred = probe.predict(X[250:])
    assert pred.shape == (150, 3) and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, (probe.decision_function(X[250:]) > 0).astype(int))
    S = probe.decision_function(X[250:])
    mAP = probe.score(X[250:], Y[250:])
    assert mAP == pytest.approx(mean_average_precision(Y[250:], S))
    # VOC "area" AP: scikit-learn's AP with precision replaced by its upper envelope, so a bit above it
    sk = np.mean([average_precision_score(Y[250:, c], S[:, c]) for c in range(3)])
    assert sk - 1e-12 <= mAP <= sk + 0.02
    assert 0.7 < mAP <= 1.0
    # a random scorer does far worse
    assert mAP > mean_average_precision(Y[250:], np.random.default_rng(0).random((150, 3))) + 0.2


def test_multilabel_cv_uses_map():
    X, Y, ignore = multilabel_data()
    probe = LinearProbe(Cs=[0.01, 0.1, 1.0]).fit(X[:250], Y[:250], ignore=ignore[:250])
    assert probe.cv_results_["scoring"] == "map"
    assert probe.C_ in (0.01, 0.1, 1.0)


def test_logistic_ovr_predict_proba_matches_one_vs_rest_logreg():
    X, y = blobs(400, 20, 3, 0.5, seed=9)
    ours = LinearProbe(C=1.0, multi_class="ovr", tol=1e-7).fit(X, y)
    P = np.column_stack(
        [
            LogisticRegression(C=1.0, tol=1e-10, max_iter=10000)
            .fit(X.astype(np.float64), y == c)
            .predict_proba(X.astype(np.float64))[:, 1]
            for c in range(3)
        ]
    )
    np.testing.assert_allclose(ours.predict_proba(X), P / P.sum(1, keepdims=True), atol=1e-3)


# -- dropout and normalisation ---------------------------------------------------------------------


def test_dropout_scales_features_at_test_time():
    X, y = blobs(300, 20, 3, 0.5, seed=10)
    probe = LinearProbe(C=1.0, dropout=0.5, dropout_copies=3).fit(X, y)
    expected = (0.5 * X.astype(np.float64)) @ probe.coef_.T.astype(np.float64) + probe.intercept_
    np.testing.assert_allclose(probe.decision_function(X), expected, rtol=1e-4, atol=1e-4)
    assert probe.predict_proba(X).shape == (300, 3)
    plain = LinearProbe(C=1.0).fit(X, y)
    assert np.abs(plain.coef_ - probe.coef_).max() > 1e-2
    assert np.abs(plain.decision_function(X) - probe.decision_function(X)).max() > 1e-2


def test_dropout_with_cv():
    X, y = blobs(300, 20, 3, 3.0, seed=10)
    probe = LinearProbe(dropout=0.3, dropout_copies=2, Cs=[0.01, 1.0]).fit(X[:200], y[:200])
    assert probe.score(X[200:], y[200:]) >= 0.99


@pytest.mark.parametrize("loss", ["logistic", "squared_hinge", "hinge"])
def test_normalize_equals_normalising_first(loss):
    X, y = blobs(300, 20, 3, 0.5, seed=11)
    X = X * np.random.default_rng(1).uniform(0.1, 10, size=(300, 1)).astype(np.float32)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    a = LinearProbe(loss=loss, C=1.0, normalize=True).fit(X, y)
    b = LinearProbe(loss=loss, C=1.0).fit(Xn, y)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(Xn), atol=1e-4)
    np.testing.assert_allclose(a.decision_function(X), a.decision_function(Xn), atol=1e-4)


# -- bad input -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return blobs(60, 5, 3, 2.0, seed=12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_features(small, bad):
    X, y = small
    X = X.copy()
    X[7, 2] = bad
    with pytest.raises(DataError, match=r"NaN or infinite values in 1 rows \(first rows: \[7\]\)"):
        LinearProbe(C=1.0).fit(X, y)
    fitted = LinearProbe(C=1.0).fit(small[0], y)
    with pytest.raises(DataError, match="NaN"):
        fitted.predict(X)


def test_single_class(small):
    X, _ = small
    with pytest.raises(DataError, match="single class"):
        LinearProbe(C=1.0).fit(X, np.zeros(len(X), dtype=int))


def test_length_mismatch(small):
    X, y = small
    with pytest.raises(DataError, match="X has 60 samples but y has 59"):
        LinearProbe(C=1.0).fit(X, y[:-1])


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (
            {"loss": "hinge2"},
            "unknown loss 'hinge2'; valid: hinge, logistic, squared_hinge",
        ),  # close matches first
        ({"multi_class": "auto"}, "unknown multi_class 'auto'; valid: multinomial, ovr"),
        ({"C": 0.0}, "C must be positive"),
        ({"C": -1.0}, "C must be positive"),
        ({"C": "best"}, "C must be a positive number or 'cv'"),
        ({"Cs": [1.0, -0.1]}, "Cs must be a non-empty list of positive numbers"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ({"cv": 1}, "cv must be at least 2"),
        ({"path_patience": 0}, "path_patience must be at least 1"),
        ({"cv_tol": 0.0}, "cv_tol must be"),
        ({"scoring": "f1"}, "unknown scoring 'f1'; valid: accuracy, mean_class_accuracy, map"),
    ],
)
def test_bad_params(small, params, match):
    X, y = small
    with pytest.raises(ConfigError, match=match):
        LinearProbe(**params).fit(X, y)


@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_cv_tol_applies_to_the_search_only(loss):
    """cv_tol=None solves the search to tol; a fixed C never uses cv_tol; the final fit after a search
    is solved to tol whatever cv_tol is, so the chosen model is the optimum at the chosen C."""
    X, y = blobs(240, 12, 4, 0.6, seed=3)
    tight = LinearProbe(loss=loss, tol=1e-5, cv_tol=None).fit(X, y)
    same = LinearProbe(loss=loss, tol=1e-5, cv_tol=1e-5).fit(X, y)
    assert tight.C_ == same.C_
    np.testing.assert_array_equal(tight.coef_, same.coef_)
    fixed = [LinearProbe(loss=loss, C=0.3, cv_tol=t).fit(X, y).coef_ for t in (1e-1, 1e-6)]
    np.testing.assert_array_equal(*fixed)
    loose = LinearProbe(loss=loss, tol=1e-5, cv_tol=1e-2).fit(X, y)
    ref = LinearProbe(loss=loss, C=loose.C_, tol=1e-5).fit(X, y)
    np.testing.assert_allclose(loose.coef_, ref.coef_, atol=2e-3)


def test_unknown_probe_name():
    with pytest.raises(ConfigError, match="unknown probe 'svc'; valid: svm, svm-hinge, logreg, logreg-ovr"):
        probe_for("svc")
    # (a typo raised TypeError; a parameter the name sets, "multiple values for keyword argument")
    with pytest.raises(ConfigError, match=r"probe 'svm' takes no parameter 'foo'; valid: .*C"):
        probe_for("svm", foo=1)
    with pytest.raises(ConfigError, match="probe 'svm' sets loss='squared_hinge'; choose another probe name"):
        probe_for("svm", loss="hinge")
    with pytest.raises(ConfigError, match="probe 'ksvm' takes no parameter 'gamma'"):
        probe_for("ksvm", gamma=1)
    # the other kind's options are dropped, as the evaluation layer passes them to every probe
    assert probe_for("svm", kernel_normalize="cosine").loss == "squared_hinge"
    from deepfeat.probes import KernelProbe

    assert probe_for("ksvm", normalize=True).normalize == KernelProbe().normalize  # not the linear one


@pytest.mark.parametrize("loss", ["squared_hinge", "hinge"])
def test_predict_proba_needs_logistic(small, loss):
    X, y = small
    probe = LinearProbe(loss=loss, C=1.0).fit(X, y)
    with pytest.raises(AttributeError, match="has no attribute 'predict_proba'") as refused:
        probe.predict_proba(X)
    assert f"predict_proba needs loss='logistic', this probe uses {loss!r}" in str(refused.value.__cause__)
    # absent, as on LinearSVC: scikit-learn's ensembles fall back to decision_function (they failed)
    assert not hasattr(probe, "predict_proba") and hasattr(LinearProbe(loss="logistic"), "predict_proba")
    from sklearn.ensemble import BaggingClassifier, StackingClassifier

    assert (
        BaggingClassifier(LinearProbe(loss=loss, C=1.0), n_estimators=2, random_state=0).fit(X, y).score(X, y)
        > 0.8
    )
    assert StackingClassifier([("svm", LinearProbe(loss=loss, C=1.0))], cv=3).fit(X, y).score(X, y) > 0.8


def test_wrong_feature_count_at_predict(small):
    X, y = small
    probe = LinearProbe(C=1.0).fit(X, y)
    with pytest.raises(DataError, match="X has 4 features, but LinearProbe is expecting 5 features as input"):
        probe.predict(X[:, :4])


def test_bad_multilabel_targets(small):
    X, _ = small
    Y = np.zeros((60, 2), dtype=int)
    Y[:30, 0] = 1
    with pytest.raises(DataError, match=r"labels \[1\] are positive for none or all"):
        LinearProbe(C=1.0).fit(X, Y)
    Y[::2, 1] = 1
    with pytest.raises(DataError, match="indicator matrix"):
        LinearProbe(C=1.0).fit(X, Y * 2)
    with pytest.raises(DataError, match="ignore must have the shape"):
        LinearProbe(C=1.0).fit(X, Y, ignore=np.zeros((60, 3), bool))
    with pytest.raises(ConfigError, match="ignore applies only to multi-label"):
        LinearProbe(C=1.0).fit(X, Y[:, 0], ignore=np.zeros(60, bool))
    with pytest.raises(ConfigError, match="hinge' does not support ignore"):
        LinearProbe(loss="hinge", C=1.0).fit(X, Y, ignore=np.zeros((60, 2), bool))
    ignore = np.zeros((60, 2), bool)
    ignore[:, 1] = Y[:, 1] == 1  # every positive of label 1 is 'difficult'
    with pytest.raises(DataError, match=r"labels \[1\] have no positive or no negative"):
        LinearProbe(C=1.0).fit(X, Y, ignore=ignore)


def test_not_fitted_error(small):
    X, _ = small
    for method in ("decision_function", "predict", "predict_proba"):
        with pytest.raises(NotFittedError):
            getattr(LinearProbe(), method)(X)


# -- scikit-learn compatibility --------------------------------------------------------------------


def test_clone_keeps_params_and_drops_fit(small):
    X, y = small
    probe = LinearProbe(loss="squared_hinge", C=0.3, normalize=True, dropout=0.2).fit(X, y)
    copy = clone(probe)
    assert copy.get_params() == probe.get_params()
    assert not hasattr(copy, "coef_")
    assert copy.set_params(C=2.0).C == 2.0


def test_pipeline_cross_val_score():
    X, y = blobs(300, 20, 3, 3.0, seed=13)
    X = X * 100 + 7  # badly scaled: StandardScaler's job
    model = make_pipeline(StandardScaler(), LinearProbe(Cs=[0.01, 1.0]))
    scores = cross_val_score(model, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() >= 0.99


def test_log_expit_reference_helper():
    """Sanity check of the float64 objective helper: a two-class softmax equals the logistic loss."""
    X, y = blobs(50, 4, 2, 1.0, seed=14)
    W, b = np.random.default_rng(2).normal(size=(2, 4)), np.array([0.3, -0.2])
    z = X.astype(np.float64) @ (W[1] - W[0]) + (b[1] - b[0])
    t = np.where(y == 1, 1.0, -1.0)
    assert softmax_objective(W, b, X, y, 2.0) == pytest.approx(
        -2.0 * log_expit(t * z).sum() + 0.5 * (W**2).sum()
    )


# -- two classes: one output, scikit-learn's conventions ---------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_binary_is_one_output(name):
    X, y = blobs(300, 10, 2, sep=1.0, seed=20)
    labels = np.array(["neg", "pos"])[y]
    probe = probe_for(name, C=1.0).fit(X, labels)
    scores = probe.decision_function(X)
    assert scores.shape == (300,) and probe.coef_.shape == (1, 10)
    np.testing.assert_array_equal(probe.predict(X), np.where(scores > 0, "pos", "neg"))
    if probe.loss == "logistic":
        proba = probe.predict_proba(X)
        np.testing.assert_allclose(proba[:, 1], expit(scores.astype(np.float64)), rtol=1e-6)
        ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(X.astype(np.float64), labels)
        np.testing.assert_allclose(proba, ref.predict_proba(X.astype(np.float64)), atol=2e-3)


def test_binary_roc_auc_in_cross_val_score():
    X, y = blobs(200, 10, 2, sep=0.5, seed=21)
    scores = cross_val_score(LinearProbe(C=1.0), X, y, cv=3, scoring="roc_auc")
    assert scores.shape == (3,) and 0.6 < scores.min() <= 1.0


def test_grid_search_over_probe_params():
    from sklearn.model_selection import GridSearchCV

    X, y = blobs(240, 10, 3, sep=0.5, seed=22)
    search = GridSearchCV(LinearProbe(), {"C": [0.01, 1.0], "loss": ["logistic", "squared_hinge"]}, cv=3)
    search.fit(X, y)
    assert search.best_params_["C"] in (0.01, 1.0)
    assert isinstance(search.best_estimator_, LinearProbe) and search.best_estimator_.C_ in (0.01, 1.0)
    assert search.score(X, y) > 0.5


# -- dropout: the loss is the mean over the masked copies --------------------------------------------


def test_dropout_zero_equals_no_dropout():
    X, y = blobs(200, 12, 3, 0.5, seed=23)
    plain = LinearProbe(C=0.5).fit(X, y)
    zero = LinearProbe(C=0.5, dropout=0.0, dropout_copies=5).fit(X, y)
    np.testing.assert_array_equal(zero.coef_, plain.coef_)
    # a vanishing drop rate: the copies are the data, and weighted by 1/copies they are the data once
    tiny = LinearProbe(C=0.5, dropout=1e-9, dropout_copies=4).fit(X, y)
    np.testing.assert_allclose(tiny.coef_, plain.coef_, atol=2e-4 * np.abs(plain.coef_).max())
    summed = LinearProbe(C=2.0).fit(X, y)  # what summing 4 copies would amount to
    assert np.abs(summed.coef_ - tiny.coef_).max() > 10 * np.abs(plain.coef_ - tiny.coef_).max()


@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_dropout_minimises_the_mean_over_copies(loss):
    """The fit is scikit-learn's optimum on the same masked copies with sample weights 1/copies."""
    import torch

    X, y = blobs(150, 8, 3, 0.5, seed=24)
    probe = LinearProbe(loss=loss, C=0.7, dropout=0.3, dropout_copies=3).fit(X, y)
    copies, codes, _, weight = dropout_copies(
        torch.as_tensor(X), y, None, probe.dropout, probe.dropout_copies, probe.random_state
    )
    assert weight == pytest.approx(1 / 3) and len(codes) == 3 * len(y)
    Xa = copies.numpy().astype(np.float64)
    sample_weight = np.full(len(codes), weight)
    if loss == "logistic":
        mean = Xa.mean(0)
        ref = LogisticRegression(C=0.7, tol=1e-10, max_iter=20000)
        coef = ref.fit(Xa - mean, codes, sample_weight=sample_weight).coef_
    else:
        ref = LinearSVC(C=0.7, dual=False, tol=1e-10, max_iter=100000, intercept_scaling=1e3)
        coef = ref.fit(Xa, codes, sample_weight=sample_weight).coef_
    np.testing.assert_allclose(probe.coef_, coef, atol=2e-3 * np.abs(coef).max())


# -- device ------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch_cuda_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_a_config_error(small):
    X, y = small
    with pytest.raises(ConfigError, match="CUDA is not available"):
        LinearProbe(C=1.0, device="cuda").fit(X, y)


def test_unknown_device(small):
    X, y = small
    with pytest.raises(ConfigError, match="device"):
        LinearProbe(C=1.0, device="tpu").fit(X, y)


@pytest.mark.skipif(not torch_cuda_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_cuda_matches_cpu(loss):
    X, y = blobs(600, 40, 5, 0.4, seed=25)
    cpu = LinearProbe(loss=loss, path_patience=None).fit(X, y)
    gpu = LinearProbe(loss=loss, path_patience=None, device="cuda").fit(X, y)
    assert gpu.C_ == cpu.C_
    np.testing.assert_allclose(gpu.cv_results_["mean"], cpu.cv_results_["mean"], atol=2 / 600)
    S = cpu.decision_function(X)
    np.testing.assert_allclose(gpu.decision_function(X), S, atol=2e-3 * np.abs(S).max())
    assert isinstance(gpu.coef_, np.ndarray)


@pytest.mark.parametrize("loss", ["multinomial", "squared_hinge", "logistic"])
def test_stacked_folds_have_each_folds_optimum(loss):
    """All folds of a C search as one problem (rows selected by weights): every fold's block of
    outputs is the optimum of that fold's own problem, including (per-output losses) an output with
    no positive in a fold, which stays constant."""
    rng = np.random.default_rng(0)
    n, d, K = 90, 8, 4
    X = torch.as_tensor(rng.normal(size=(n, d)))
    codes = rng.integers(0, K, n)
    codes[:K] = np.arange(K)
    if loss != "multinomial":  # (a softmax class without samples has no finite optimum)
        codes[codes == 3] = 2
        codes[5] = 3  # class 3 has one sample: absent from the folds that hold it out
    basis = Basis.of(X)
    Z = basis.project(X)
    part = np.arange(n) % 3
    folds = [(np.flatnonzero(part != f), np.flatnonzero(part == f)) for f in range(3)]
    multinomial = loss == "multinomial"
    make = lambda rows: make_problem(  # noqa: E731
        Z[torch.as_tensor(rows)], codes[rows], None, K, loss, multinomial
    )
    stacked = stack_folds(make(np.arange(n)), [train for train, _ in folds])
    assert stacked.n_outputs == 3 * K
    sol = solve(stacked, 3.0, tol=1e-9, max_iter=2000)
    for f, (train, _) in enumerate(folds):
        own = solve(make(train), 3.0, tol=1e-9, max_iter=2000)
        torch.testing.assert_close(sol.W[f * K : (f + 1) * K], own.W, rtol=1e-5, atol=1e-6)
        b, own_b = sol.b[f * K : (f + 1) * K], own.b
        if loss == "multinomial":  # softmax intercepts are defined up to a common shift
            b, own_b = b - b.mean(), own_b - own_b.mean()
        torch.testing.assert_close(b, own_b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "loss, k", [("logistic", 3), ("squared_hinge", 18), ("logistic", 2), ("squared_hinge", 2)]
)
def test_batched_fold_search_equals_the_per_fold_search(loss, k, monkeypatch):
    """Folds solved as one problem (Newton-CG / L-BFGS, or exact Newton for two classes) give the
    per-fold search's scores, C and final fit (the torch solvers: two-class logistic problems on the
    CPU go to NumPy, tests/probes/test_binary_logistic.py)."""
    torch_solvers_only(monkeypatch)
    if loss == "squared_hinge" and k > 2:  # Newton-CG (else exact Newton, stacked or per fold)
        monkeypatch.setattr(solver_module, "DUAL_WORK", 0)
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(k, 30))[np.arange(360) % k] * 0.4 + rng.normal(size=(360, 30))).astype(np.float32)
    y = np.arange(360) % k
    batched = LinearProbe(loss=loss, path_patience=None).fit(X, y)
    calls = []
    real = linear_module.LinearProbe._folds_path
    monkeypatch.setattr(linear_module.LinearProbe, "_folds_path", lambda *a: calls.append(1) or real(*a))
    LinearProbe(loss=loss, path_patience=None).fit(X, y)
    assert calls, "the small search should take the batched path"
    monkeypatch.setattr(solver_module, "FOLD_BATCH_WORK", 0)
    monkeypatch.setattr(solver_module, "FOLD_BATCH_CLASSES", 0)
    calls.clear()
    per_fold = LinearProbe(loss=loss, path_patience=None).fit(X, y)
    assert not calls
    # fits to the search tolerance: a near-tied validation prediction may flip (1/360 each)
    np.testing.assert_allclose(batched.cv_results_["mean"], per_fold.cv_results_["mean"], atol=2 / 360)
    assert batched.C_ == per_fold.C_
    np.testing.assert_allclose(batched.coef_, per_fold.coef_, rtol=1e-3, atol=1e-4)


def _fold_gram_case():
    """A squared-hinge probe's prepared 40 rows and the problem of 27 of them, whose Gram matrix
    must be its rows' Z Z^T."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 25)).astype(np.float32)
    codes = np.arange(40) % 3
    probe = LinearProbe(loss="squared_hinge").fit(X, codes)
    prepared = probe.prepare_path(X, codes, None)
    rows = np.sort(rng.choice(40, 27, replace=False))
    problem, _ = probe._problem(prepared, rows, codes[rows], None)
    Z64 = prepared.Z[torch.as_tensor(rows)].double()
    torch.testing.assert_close(problem.gram(), Z64 @ Z64.t())
    return probe, prepared, codes, rows


def test_prepared_gram_blocks_are_the_rows_gram():
    """The probe's problems take their Gram matrix (squared-hinge dual steps) as blocks of one
    computed for the whole training set: a fold's block equals its rows' Z Z^T, and a stacked
    fold problem shares its base problem's."""
    probe, prepared, codes, rows = _fold_gram_case()
    whole, _ = probe._problem(prepared, np.arange(40), codes, None)
    assert whole.gram() is prepared.gram_of(torch.arange(40))
    stacked = stack_folds(whole, [rows, np.setdiff1d(np.arange(40), rows)])
    assert stacked.gram() is whole.gram()


def test_folds_of_a_set_above_the_dual_rows_share_its_gram_matrix(monkeypatch):
    """A training set of more rows than the dual steps keep (DUAL_ROWS, DUAL_ROWS_FLOAT32) still
    lends its Gram matrix to the fold problems under that size; the set's own problem gets none."""
    monkeypatch.setattr(linear_module, "DUAL_ROWS", 30)
    monkeypatch.setattr(linear_module, "DUAL_ROWS_FLOAT32", 30)
    probe, prepared, codes, _ = _fold_gram_case()
    assert prepared._grams and all(G.shape == (40, 40) for G in prepared._grams.values())
    whole, _ = probe._problem(prepared, np.arange(40), codes, None)
    assert whole.gram_from is None


@pytest.mark.parametrize(
    "loss, k, stacks",
    [("logistic", 2, True), ("squared_hinge", 2, True), ("logistic", 5, True), ("squared_hinge", 5, False)],
)
def test_searches_of_one_output_or_few_softmax_classes_stack_their_folds_at_any_size(
    loss, k, stacks, monkeypatch
):
    """Above FOLD_BATCH_WORK the folds are still solved as one problem for two classes (one output)
    and multinomial problems of few classes, not for one-vs-rest outputs; same search and fit."""
    torch_solvers_only(monkeypatch)
    rng = np.random.default_rng(2)
    X = (rng.normal(size=(k, 30))[np.arange(300) % k] * 0.4 + rng.normal(size=(300, 30))).astype(np.float32)
    y = np.arange(300) % k
    monkeypatch.setattr(solver_module, "FOLD_BATCH_WORK", 0)
    calls = []
    real = linear_module.LinearProbe._folds_path
    monkeypatch.setattr(linear_module.LinearProbe, "_folds_path", lambda *a: calls.append(1) or real(*a))
    large = LinearProbe(loss=loss, path_patience=None).fit(X, y)
    assert bool(calls) == stacks
    monkeypatch.setattr(solver_module, "FOLD_BATCH_CLASSES", 0)
    per_fold = LinearProbe(loss=loss, path_patience=None).fit(X, y)
    np.testing.assert_allclose(large.cv_results_["mean"], per_fold.cv_results_["mean"], atol=2 / 300)
    assert large.C_ == per_fold.C_
    np.testing.assert_allclose(large.coef_, per_fold.coef_, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("k", "loss", "factor"),
    [
        (2, "logistic", "cholesky"),
        (2, "squared_hinge", "cholesky"),
        (3, "logistic", "eigh"),
        (3, "squared_hinge", "eigh"),
    ],
)
def test_two_class_probes_with_fewer_rows_than_dimensions_take_the_cholesky_basis(
    k, loss, factor, monkeypatch
):
    """One output: Newton steps, indifferent to correlated coordinates, so the rows' Cholesky factor;
    several outputs keep the principal directions their first-order solvers scale by. Both reach
    the same fit."""
    torch_solvers_only(monkeypatch)
    seen = []
    original = Basis.of.__func__

    def forced(choice):
        def of(cls, X, rel_tol=1e-7, factor="eigh"):
            seen.append(factor)
            return original(cls, X, rel_tol, choice or factor)

        return classmethod(of)

    X, y = blobs(40, 60, k, 1.0, 3)
    monkeypatch.setattr(Basis, "of", forced(None))
    probe = LinearProbe(loss=loss, C=0.5).fit(X, y)
    assert seen == [factor]
    monkeypatch.setattr(Basis, "of", forced("eigh"))  # the principal directions for every probe
    reference = LinearProbe(loss=loss, C=0.5).fit(X, y)
    np.testing.assert_allclose(probe.coef_, reference.coef_, rtol=1e-4, atol=1e-5)
