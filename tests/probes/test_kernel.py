"""The kernel probe: against scikit-learn's SVC, on factored vs explicit gradients, multi-label."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.svm import SVC

from deepfeat.errors import ConfigError, DataError, UnknownNameError
from deepfeat.kernels import FactoredLayout, explicit_gradients
from deepfeat.probes import KernelProbe, probe_for


def blobs(n, d, k, spread, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    y = np.arange(n) % k
    return (centres[y] + spread * rng.normal(size=(n, d))).astype(np.float32), y


def test_matches_sklearn_svc_one_vs_rest_on_the_linear_kernel():
    X, y = blobs(240, 12, 3, 2.5, seed=0)
    Xtr, ytr, Xte = X[:160], y[:160], X[160:]
    probe = KernelProbe(kernel="linear", normalize="none", C=0.05, tol=1e-6).fit(Xtr, ytr)
    ref = np.column_stack(
        [SVC(kernel="linear", C=0.05, tol=1e-6).fit(Xtr, ytr == c).decision_function(Xte) for c in range(3)]
    )
    np.testing.assert_allclose(probe.decision_function(Xte), ref, atol=1e-3 * np.abs(ref).max())


def test_separable_and_shuffled():
    X, y = blobs(300, 10, 4, 0.3, seed=1)
    probe = KernelProbe().fit(X[:200], y[:200])
    assert probe.score(X[200:], y[200:]) == 1.0
    assert probe.C_ in probe.Cs and len(probe.cv_results_["mean"]) == len(probe.Cs)
    rng = np.random.default_rng(0)
    Xr = rng.normal(size=(400, 20)).astype(np.float32)
    yr = rng.integers(0, 4, size=400)
    assert abs(KernelProbe(C=1.0).fit(Xr[:300], yr[:300]).score(Xr[300:], yr[300:]) - 0.25) < 0.12


@pytest.mark.parametrize("positions", [1, 3])
def test_factored_kernel_equals_linear_kernel_on_explicit_gradients(positions):
    layout = FactoredLayout(6, 4, positions)
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(90, layout.row_dim)).astype(np.float32)
    y = (explicit_gradients(rows, layout)[:, :3].sum(1) > 0).astype(int)
    explicit = explicit_gradients(rows, layout)
    a = KernelProbe(kernel="factored", layout=layout, normalize="gradient", C=1.0).fit(rows[:60], y[:60])
    b = KernelProbe(kernel="linear", normalize="factors", C=1.0).fit(explicit[:60], y[:60])
    np.testing.assert_allclose(a.decision_function(rows[60:]), b.decision_function(explicit[60:]), atol=1e-3)


def test_multilabel_with_ignored_entries():
    X, y = blobs(240, 8, 3, 1.0, seed=3)
    Y = np.stack([y == 0, (y == 1) | (y == 2), y == 2], axis=1).astype(int)
    ignore = np.zeros_like(Y, dtype=bool)
    ignore[:30, 1] = True
    probe = KernelProbe(C=1.0).fit(X[:160], Y[:160], ignore=ignore[:160])
    assert probe.predict(X[160:]).shape == (80, 3)
    assert probe.score(X[160:], Y[160:]) > 0.95
    # an ignored row does not enter its label's problem: flipping its label changes nothing
    flipped = Y[:160].copy()
    flipped[:30, 1] = 1 - flipped[:30, 1]
    other = KernelProbe(C=1.0).fit(X[:160], flipped, ignore=ignore[:160])
    np.testing.assert_allclose(other.decision_function(X[160:]), probe.decision_function(X[160:]), atol=1e-6)
    cv = KernelProbe(Cs=[0.1, 10.0]).fit(X[:160], Y[:160])
    assert cv.cv_results_["scoring"] == "map"


def test_errors_and_sklearn_conventions():
    X, y = blobs(60, 4, 2, 1.0, seed=4)
    with pytest.raises(UnknownNameError, match="kernel"):
        KernelProbe(kernel="rbf").fit(X, y)
    with pytest.raises(ConfigError, match="needs layout"):
        KernelProbe(kernel="factored").fit(X, y)
    with pytest.raises(DataError, match="single class"):
        KernelProbe().fit(X, np.zeros(60))
    with pytest.raises(DataError, match="NaN"):
        KernelProbe().fit(np.full((60, 4), np.nan), y)
    with pytest.raises(NotFittedError):
        KernelProbe().predict(X)
    fitted = KernelProbe(C=1.0).fit(X, y)
    with pytest.raises(DataError, match="3 features"):
        fitted.predict(X[:, :3])
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and not hasattr(copy, "dual_coef_")
    ksvm = probe_for("ksvm", random_state=3, kernel_normalize="none", dropout=0.0, normalize=True)
    assert isinstance(ksvm, KernelProbe) and ksvm.normalize == "none" and ksvm.random_state == 3
    with pytest.raises(ConfigError, match="dropout"):
        probe_for("ksvm", dropout=0.5)
    with pytest.raises(ConfigError, match="ksvm"):
        probe_for("kvm")


def test_binary_is_one_svm():
    X, y = blobs(120, 6, 2, 1.5, seed=5)
    probe = KernelProbe(kernel="linear", normalize="none", C=0.1, tol=1e-6).fit(X[:80], y[:80])
    scores = probe.decision_function(X[80:])
    assert scores.shape == (40,) and probe.dual_coef_.shape == (1, 80)
    ref = SVC(kernel="linear", C=0.1, tol=1e-6).fit(X[:80], y[:80]).decision_function(X[80:])
    np.testing.assert_allclose(scores, ref, atol=1e-3 * np.abs(ref).max())
    np.testing.assert_array_equal(probe.predict(X[80:]), (scores > 0).astype(int))


def test_cuda_kernel_without_cuda():
    import torch

    X, y = blobs(30, 4, 2, 1.0, seed=6)
    if torch.cuda.is_available():
        cpu = KernelProbe(C=1.0).fit(X, y)
        gpu = KernelProbe(C=1.0, device="cuda").fit(X, y)
        np.testing.assert_allclose(gpu.decision_function(X), cpu.decision_function(X), atol=1e-4)
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            KernelProbe(C=1.0, device="cuda").fit(X, y)
