"""The NumPy solver of small two-class logistic problems, against scikit-learn's exact optima and the
torch solvers it replaces on the CPU."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

import deepfeat.probes.binary_logistic as binary_module
import deepfeat.probes.linear as linear_module
from deepfeat.probes import LinearProbe
from deepfeat.probes.basis import PreparedFeatures
from deepfeat.probes.binary_logistic import MAX_DIM, MAX_ENTRIES, BinaryLogistic, applies
from deepfeat.probes.selection import make_folds

GRID = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]


def two_blobs(n: int, d: int, sep: float = 0.6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, d)) * rng.uniform(0.2, 3.0, size=d) + sep * y[:, None] * rng.normal(size=d)
    return (X + 2.0).astype(np.float32), y


def objective(X, t, coef, intercept, C, weight=None) -> float:
    """C x the (weighted) summed log loss + ||coef||^2 / 2, float64."""
    X = X.astype(np.float64)
    z = X @ np.asarray(coef, np.float64).ravel() + float(np.ravel(intercept)[0])
    loss = np.logaddexp(0.0, np.where(t > 0, -z, z))
    if weight is not None:
        loss = loss * weight
    return float(C * loss.sum() + 0.5 * np.sum(np.asarray(coef, np.float64) ** 2))


def optimum(X, t, C, weight=None):
    model = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    model.fit(X.astype(np.float64), t, sample_weight=weight)
    return model.coef_.ravel(), model.intercept_


def torch_solvers(monkeypatch) -> None:
    monkeypatch.setattr(linear_module, "applies", lambda *args: False)


def test_folds_path_reaches_every_folds_optimum():
    X, y = two_blobs(240, 24)
    folds = make_folds(y, 3, 0)
    problem = BinaryLogistic(X, y, None)
    for C, fits in zip(GRID, problem.folds_path([train for train, _ in folds], GRID, 1e-4, 300)):
        assert len(fits) == len(folds)
        for fit, (train, _) in zip(fits, folds):
            coef, intercept = problem.coefficients(fit)
            best = objective(X[train], y[train], *optimum(X[train], y[train], C), C)
            gap = (objective(X[train], y[train], coef, intercept, C) - best) / best
            assert -1e-6 < gap < 1e-4, (C, gap)
        # the whole set, solved alongside, is kept for the final fit
        w, _ = problem._whole[C]
        coef, intercept = problem.coefficients(binary_module.BinaryFit(C, w[0]))
        best = objective(X, y, *optimum(X, y, C), C)
        assert (objective(X, y, coef, intercept, C) - best) / best < 1e-4


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0, "cv"])
def test_final_fit_is_scikit_learns_optimum(C):
    X, y = two_blobs(300, 40, seed=1)
    probe = LinearProbe(C=C, Cs=GRID).fit(X, y)
    coef, intercept = optimum(X, y, probe.C_)
    np.testing.assert_allclose(probe.coef_.ravel(), coef, rtol=2e-4, atol=2e-5 * np.abs(coef).max())
    np.testing.assert_allclose(probe.intercept_, intercept, rtol=2e-4, atol=1e-4)
    assert probe.n_iter_ >= 1


def test_weights_are_scikit_learns():
    X, y = two_blobs(200, 16, seed=2)
    rng = np.random.default_rng(0)
    sw = rng.uniform(0.0, 3.0, size=len(y))
    sw[:10] = 0.0
    probe = LinearProbe(C=0.3).fit(X, y, sample_weight=sw)
    coef, intercept = optimum(X, y, 0.3, sw)
    np.testing.assert_allclose(probe.coef_.ravel(), coef, rtol=2e-4, atol=2e-5 * np.abs(coef).max())
    np.testing.assert_allclose(probe.intercept_, intercept, rtol=2e-4, atol=1e-4)
    balanced = LinearProbe(C=3.0, class_weight="balanced").fit(X[20:], y[20:])
    reference = LogisticRegression(C=3.0, class_weight="balanced", solver="newton-cholesky", tol=1e-12)
    reference.fit(X[20:].astype(np.float64), y[20:])
    np.testing.assert_allclose(
        balanced.coef_, reference.coef_, rtol=2e-4, atol=2e-5 * np.abs(reference.coef_).max()
    )


def test_search_and_fit_equal_the_torch_solvers(monkeypatch):
    """Digits 3 against 8 (64 pixels, several always zero): the same validation scores, C and fit."""
    X, y = load_digits(return_X_y=True)
    keep = np.isin(y, (3, 8))
    X, y = X[keep].astype(np.float32), y[keep]
    numpy_fit = LinearProbe(path_patience=None).fit(X, y)
    torch_solvers(monkeypatch)
    torch_fit = LinearProbe(path_patience=None).fit(X, y)
    np.testing.assert_allclose(
        numpy_fit.cv_results_["mean"], torch_fit.cv_results_["mean"], atol=1.5 / len(y)
    )
    assert numpy_fit.C_ == torch_fit.C_
    np.testing.assert_allclose(
        numpy_fit.coef_, torch_fit.coef_, rtol=1e-3, atol=1e-4 * np.abs(torch_fit.coef_).max()
    )
    np.testing.assert_allclose(numpy_fit.intercept_, torch_fit.intercept_, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("switch", "predict"), [(10**9, 0.0), (0, 0.0), (0, 1.0), (6, 1.0)])
def test_preconditioners_and_predictor_reach_the_same_fits(monkeypatch, switch, predict):
    """Diagonal preconditioning only, exact Hessians from the first C, with and without the secant
    start: the same optimum at every C (the path's steps may differ, not where they end)."""
    X, y = two_blobs(300, 30, sep=1.0, seed=3)
    monkeypatch.setattr(binary_module, "HESSIAN_SWITCH", switch)
    monkeypatch.setattr(binary_module, "PREDICT", predict)
    problem = BinaryLogistic(X, y, None)
    trains = [train for train, _ in make_folds(y, 3, 0)]
    for C, fits in zip(GRID, problem.folds_path(trains, GRID, 1e-5, 300)):
        for fit, train in zip(fits, trains):
            coef, intercept = problem.coefficients(fit)
            best = objective(X[train], y[train], *optimum(X[train], y[train], C), C)
            assert (objective(X[train], y[train], coef, intercept, C) - best) / best < 2e-5, (C, switch)


def test_fewer_rows_than_dimensions_and_repeated_columns():
    """Rank-deficient features (n < d, a column repeated, a constant column): the optimum anyway."""
    X, y = two_blobs(50, 60, seed=4)
    X = np.hstack([X, X[:, :5], np.full((50, 1), 3.0, np.float32)])
    probe = LinearProbe(C=1.0).fit(X, y)
    best = objective(X, y, *optimum(X, y, 1.0), 1.0)
    assert (objective(X, y, probe.coef_, probe.intercept_, 1.0) - best) / best < 1e-5
    assert probe.coef_.shape == (1, X.shape[1])


def test_a_fold_without_one_class_stays_at_its_log_odds(monkeypatch):
    """Given folds may leave a class out of a fold's training rows: that fold's model stays at the
    log odds of its rows (the optimum is at infinity), as the torch solvers hold it."""
    X, y = two_blobs(120, 10, seed=5)
    order = np.argsort(y, kind="stable")  # 60 of class 0, then 60 of class 1
    one_class = (order[:50], order[50:])  # training rows of class 0 only
    both = (order[::2], order[1::2])
    probe = LinearProbe(cv=[one_class, both], Cs=GRID).fit(X, y)
    problem = BinaryLogistic(X, y, None)
    fits = next(problem.folds_path([one_class[0], both[0]], [1.0], 1e-4, 300))
    assert np.all(fits[0].w[:-1] == 0) and fits[0].w[-1] == pytest.approx(np.log(1e-4 / (1 - 1e-4)), rel=1e-5)
    torch_solvers(monkeypatch)
    reference = LinearProbe(cv=[one_class, both], Cs=GRID).fit(X, y)
    np.testing.assert_allclose(probe.cv_results_["mean"], reference.cv_results_["mean"], atol=1 / 120)
    assert probe.C_ == reference.C_


def test_unconverged_final_fit_warns():
    X, y = two_blobs(200, 20, sep=3.0, seed=6)
    with pytest.warns(ConvergenceWarning, match="stopped after"):
        LinearProbe(C=100.0, max_iter=1).fit(X, y)


def test_which_fits_are_solved_here():
    assert applies("logistic", 2, False, 0.0, "cpu", (300, 192))
    assert applies("logistic", 2, False, 0.0, "cpu", (MAX_ENTRIES // (MAX_DIM + 1), MAX_DIM))
    assert applies("logistic", 2, False, 0.0, "cpu", (MAX_ENTRIES // 193, 192))
    for args in [
        ("squared_hinge", 2, False, 0.0, "cpu", (300, 192)),
        ("logistic", 3, False, 0.0, "cpu", (300, 192)),
        ("logistic", 2, True, 0.0, "cpu", (300, 192)),
        ("logistic", 2, False, 0.5, "cpu", (300, 192)),
        ("logistic", 2, False, 0.0, "cuda", (300, 192)),
        ("logistic", 2, False, 0.0, "cpu", (300, MAX_DIM + 1)),
        ("logistic", 2, False, 0.0, "cpu", (MAX_ENTRIES // 193 + 1, 192)),
    ]:
        assert not applies(*args), args
    X, y = two_blobs(60, MAX_DIM + 1, seed=7)
    probe = LinearProbe(C=1.0)
    probe.classes_, probe.multilabel_ = np.unique(y), False
    assert isinstance(probe.prepare_path(X, y, None), PreparedFeatures)
    assert isinstance(probe.prepare_path(X[:, :MAX_DIM], y, None), BinaryLogistic)


def test_per_fold_protocol_equals_the_stacked_search():
    """``fit_path`` (one row set, the PathProbe protocol) gives the stacked search's fold fits."""
    X, y = two_blobs(150, 12, seed=8)
    probe = LinearProbe(Cs=GRID)
    probe.classes_, probe.multilabel_ = np.unique(y), False
    prepared = probe.prepare_path(X, y, None)
    folds = make_folds(y, 3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stacked = list(probe.fit_folds_path(prepared, folds, y, None, GRID))
        single = list(probe.fit_path(prepared, folds[1][0], y[folds[1][0]], None, GRID))
    for per_C, fit in zip(stacked, single):
        a = probe.decision_on(prepared, per_C[1], folds[1][1])
        b = probe.decision_on(prepared, fit, folds[1][1])
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fits_take_the_torch_solvers_and_agree():
    X, y = two_blobs(400, 32, seed=9)
    cpu = LinearProbe(path_patience=None).fit(X, y)
    gpu = LinearProbe(path_patience=None, device="cuda").fit(X, y)
    assert gpu.C_ == cpu.C_
    np.testing.assert_allclose(gpu.cv_results_["mean"], cpu.cv_results_["mean"], atol=2 / 400)
    S = cpu.decision_function(X)
    np.testing.assert_allclose(gpu.decision_function(X), S, atol=2e-3 * np.abs(S).max())


def test_fits_run_numpy_on_one_blas_thread_and_restore_it(monkeypatch):
    """NumPy's BLAS runs on one thread during a fit solved here (its idle workers would spin beside
    torch's), and gets its thread count back afterwards; torch-solved fits leave it alone."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return sorted(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")

    seen = []
    real = BinaryLogistic.folds_path

    def recording(self, *args, **kwargs):
        seen.append(blas_threads())
        yield from real(self, *args, **kwargs)

    monkeypatch.setattr(BinaryLogistic, "folds_path", recording)
    X, y = two_blobs(120, 10, seed=10)
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        LinearProbe(Cs=GRID).fit(X, y)
        assert seen and all(set(threads) == {1} for threads in seen)
        assert blas_threads() == before
        seen.clear()
        LinearProbe(Cs=GRID, loss="squared_hinge").fit(X, y)
        assert not seen and blas_threads() == before


def test_large_C_on_separable_data_reaches_the_optimum():
    """C = 1e6 on separable blobs: the line search once stopped past the line minimum and the fit
    ran away (objective 7e8 times the optimum); every step now lowers the objective."""
    rng = np.random.default_rng(7)
    y = np.arange(200) % 2
    X = rng.normal(size=(200, 20)) * rng.uniform(0.2, 3.0, size=20) + 0.6 * y[:, None] * rng.normal(size=20)
    X = (X + 2.0).astype(np.float32)
    for C in (1e5, 1e6, 1e7):
        probe = LinearProbe(C=C).fit(X, y)
        best = objective(X, y, *optimum(X, y, C), C)
        assert objective(X, y, probe.coef_, probe.intercept_, C) / best < 1.02, C


@pytest.mark.parametrize("scale", [1e-50, 1e-6, 1e6, 1e10])
def test_uniform_weights_far_from_one_act_as_a_change_of_C(scale):
    """Weights w on every row are C x w: the same fit as scikit-learn's at that C, without overflow
    or underflow (1e-50 gave NaN coefficients, 1e6 spoiled validation scores at large C)."""
    X, y = two_blobs(160, 12, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (overflow, invalid value)
        fixed = LinearProbe(C=1.0).fit(X, y, sample_weight=np.full(len(y), scale))
        searched = LinearProbe(Cs=GRID).fit(X, y, sample_weight=np.full(len(y), scale))
    coef, intercept = optimum(X, y, scale)
    scale_of_coef = max(np.abs(coef).max(), 1e-30)
    np.testing.assert_allclose(fixed.coef_.ravel(), coef, rtol=2e-4, atol=1e-4 * scale_of_coef)
    np.testing.assert_allclose(fixed.intercept_, intercept, rtol=2e-4, atol=1e-4)
    unweighted = LinearProbe(Cs=[c * scale for c in GRID]).fit(X, y)
    np.testing.assert_allclose(searched.cv_results_["mean"], unweighted.cv_results_["mean"], atol=1 / 160)


OVERLAPPING_FITS = """
import threading
import numpy as np
from threadpoolctl import threadpool_info
import deepfeat.probes.binary_logistic as binary_module
from deepfeat.probes import LinearProbe

def blas_threads():
    return sorted(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")

rng = np.random.default_rng(0)
X, y = rng.normal(size=(120, 10)).astype(np.float32), np.arange(120) % 2
before = blas_threads()
first_in, second_in, first_gone = threading.Event(), threading.Event(), threading.Event()
real = binary_module._newton

def gated(*args, **kwargs):
    if threading.current_thread().name == "first":
        first_in.set()
        second_in.wait(10)
    else:
        second_in.set()
        first_gone.wait(10)
    return real(*args, **kwargs)

binary_module._newton = gated
first = threading.Thread(target=lambda: LinearProbe(C=1.0).fit(X, y), name="first")
first.start()
first_in.wait(10)
second = threading.Thread(target=lambda: LinearProbe(C=1.0).fit(X, y), name="second")
second.start()
first.join()
first_gone.set()
second.join()
print(before, blas_threads())
"""


def test_overlapping_fits_in_threads_leave_the_blas_threads_alone():
    """Fits in two threads of a fresh process (no thread controls OpenBLAS yet), the first ending
    and its thread gone while the second runs: the BLAS thread counts are those from before (the
    second once restored the one thread it had found, for good: threadpoolctl lets only one live
    thread set OpenBLAS's threads)."""
    import subprocess
    import sys

    command = [sys.executable, "-c", OVERLAPPING_FITS]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = out.stdout.strip().splitlines()[-1].split("] [")
    assert before + "]" == "[" + after, out.stdout


def test_weights_scale_with_C_also_from_a_cold_start():
    """C = 1e-4 with weights of 1e10 on every row is C = 1e6 unweighted, the same rescaled problem, so
    the same fit: the final fit's short path towards a large C follows the rescaled C (the user's C,
    under 1, skipped it, and the fit stopped elsewhere)."""
    X, y = two_blobs(60, 100, sep=0.3, seed=1)
    weighted = LinearProbe(C=1e-4).fit(X, y, sample_weight=np.full(len(y), 1e10))
    unweighted = LinearProbe(C=1e6).fit(X, y)
    np.testing.assert_allclose(
        weighted.coef_, unweighted.coef_, rtol=1e-4, atol=1e-5 * np.abs(unweighted.coef_).max()
    )


def test_weights_spanning_many_decades_stay_positive_in_float32():
    """Weights from 1e-25 to 1e23 are rescaled around their geometric midpoint: none flushes to zero
    (rescaled to a mean of 1, a whole class's weights once did, and its fit stayed at the start)."""
    X, y = two_blobs(100, 8, seed=13)
    weights = np.where(y == 1, 1e-25, 1e23)[:, None]
    problem = BinaryLogistic(X, y, weights)
    assert (problem.weight > 0).all() and np.isfinite(problem.weight).all()
    assert problem.weight.max() / problem.weight.min() == pytest.approx(1e48, rel=1e-5)
    probe = LinearProbe(C=1.0).fit(X, y, sample_weight=weights.ravel())
    assert np.isfinite(probe.coef_).all() and np.abs(probe.coef_).max() > 0
