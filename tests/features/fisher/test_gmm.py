"""The diagonal GMM fitted by EM, against scikit-learn's GaussianMixture."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.mixture import GaussianMixture

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher import DiagonalGMM, GMMParams, fisher_vectors
from tests.features.fisher.conftest import blobs


def _kmeans_start(x: np.ndarray, k: int, seed: int) -> GMMParams:
    xt = torch.as_tensor(x)
    centre = xt.mean(0)
    w, mu, var = DiagonalGMM(k, random_state=seed)._kmeans_init(xt - centre, 1e-6 * float(xt.var(0).mean()))
    return GMMParams(w, mu + centre, var)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gmm_likelihood_at_least_sklearn_from_the_same_start(seed):
    x = blobs(2000, 6, 5, seed=seed)
    start = _kmeans_start(x, 8, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = GaussianMixture(
            8,
            covariance_type="diag",
            weights_init=start.weights.numpy(),
            means_init=start.means.numpy(),
            precisions_init=1 / start.variances.numpy(),
        ).fit(x)
    ours = DiagonalGMM(8).fit(x, init=start)
    assert ours.converged_
    assert ours.score(x) >= ref.score(x) - 1e-9
    assert ours.lower_bound_ == pytest.approx(ours.score(x), rel=1e-12)
    # posteriors and likelihoods agree with scikit-learn's for the same parameters
    sk = ours.to_sklearn()
    np.testing.assert_allclose(ours.score_samples(x), sk.score_samples(x), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(x), sk.predict_proba(x), atol=1e-10)


def test_gmm_from_kmeans_is_deterministic_and_sensible():
    x = blobs(1200, 4, 4, seed=3)
    a = DiagonalGMM(4, random_state=5).fit(x)
    b = DiagonalGMM(4, random_state=5).fit(x)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.weights_.sum() == pytest.approx(1.0)
    # four well separated blobs: each component takes one quarter
    np.testing.assert_allclose(np.sort(a.weights_), 0.25, atol=0.02)
    sk = GaussianMixture(4, covariance_type="diag", random_state=0, n_init=3).fit(x)
    assert a.score(x) >= sk.score(x) - 1e-3


def test_gmm_variance_floor_and_errors():
    x = blobs(300, 3, 3, seed=4)
    x[:40] = x[0]  # a cluster of identical points
    g = DiagonalGMM(5, random_state=0, max_iter=500).fit(x)
    assert (g.variances_ >= 1e-6 * x.var(0).mean() * (1 - 1e-12)).all()
    with pytest.raises(DataError, match="too few for n_components=5"):
        DiagonalGMM(5).fit(x[:4])
    bad = x.copy()
    bad[7, 1] = np.nan
    with pytest.raises(DataError, match="NaN or infinite"):
        DiagonalGMM(2).fit(bad)
    with pytest.raises(DataError, match="fewer than n_components=3 distinct"):
        DiagonalGMM(3).fit(np.repeat(x[-2:], 20, axis=0))
    with pytest.raises(ConfigError, match="n_components must be at least 1"):
        DiagonalGMM(0).fit(x)


def test_gmm_refuses_descriptors_of_another_dimension_sparse_or_complex():
    x = blobs(120, 3, 3, seed=5)
    g = DiagonalGMM(2, random_state=0).fit(x)
    for method in (g.predict_proba, g.score_samples, g.score):
        # (a torch shape error before)
        with pytest.raises(DataError, match="X has 2 features, but DiagonalGMM is expecting 3"):
            method(x[:, :2])
    with pytest.raises(DataError, match=r"1-D one of shape \(3,\); Reshape your data: X.reshape\(1, -1\)"):
        g.predict_proba(x[0])
    with pytest.raises(DataError, match=r"sparse input is not supported.*toarray\(\)"):
        DiagonalGMM(2).fit(scipy.sparse.csr_matrix(x))
    for complex_x in (x + 1j, torch.from_numpy(x) + 1j):
        with pytest.raises(DataError, match="Complex data not supported"):
            DiagonalGMM(2).fit(complex_x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = blobs(800, 4, 4, seed=8)
    cpu = DiagonalGMM(4, random_state=0).fit(x)
    gpu = DiagonalGMM(4, random_state=0, device="cuda").fit(x)
    np.testing.assert_allclose(gpu.means_, cpu.means_, rtol=1e-6, atol=1e-8)
    sets = torch.as_tensor(x[:600].reshape(3, 200, 4))
    torch.testing.assert_close(fisher_vectors(sets.cuda(), cpu).cpu(), fisher_vectors(sets, cpu))


def test_one_descriptor_is_refused_not_fitted_to_nan():
    # a variance of one sample is NaN; the later error blamed float32 overflow
    with pytest.raises(DataError, match="at least 2"):
        DiagonalGMM(1).fit([[0.5, -1.0, 2.0]])


def test_weights_that_are_not_a_mixture_are_refused():
    means, variances = torch.zeros(3, 2, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64)
    with pytest.raises(ConfigError, match="sum to 1"):
        fisher_vectors(
            np.zeros((1, 4, 2)), GMMParams(torch.tensor([1.0, 1.0, 2.0]).double(), means, variances)
        )


def test_a_tensor_that_requires_grad_is_fitted_on_its_values():
    X = torch.from_numpy(blobs()).requires_grad_()
    gmm = DiagonalGMM(2, random_state=0).fit(X)
    ref = DiagonalGMM(2, random_state=0).fit(X.detach().numpy())
    np.testing.assert_array_equal(gmm.means_, ref.means_)
