"""The Fisher-vector encoding: eqs. (2)-(4) written out, skimage.feature.fisher_vector, precision, chunking,
the normalisations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.feature import fisher_vector
from sklearn.mixture import GaussianMixture

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher import (
    GMMParams,
    fisher_dim,
    fisher_vectors,
    fv_statistics,
    normalize_fv,
    power_normalize,
)
from tests.features.fisher.conftest import blobs


def reference_fv(x: np.ndarray, w: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Eqs. (2)-(4) of the paper written out descriptor by descriptor (no statistics, no expansion)."""
    T, _ = x.shape
    K = len(w)
    logp = np.stack(
        [
            np.log(w[k]) - 0.5 * (np.log(2 * np.pi * var[k]).sum() + ((x - mu[k]) ** 2 / var[k]).sum(1))
            for k in range(K)
        ],
        axis=1,
    )
    g = np.exp(logp - logp.max(1, keepdims=True))
    g /= g.sum(1, keepdims=True)
    fw = np.array([(g[:, k] - w[k]).sum() / (T * np.sqrt(w[k])) for k in range(K)])
    fmu = np.stack(
        [(g[:, k, None] * (x - mu[k]) / np.sqrt(var[k])).sum(0) / (T * np.sqrt(w[k])) for k in range(K)]
    )
    fvar = np.stack(
        [
            (g[:, k, None] * ((x - mu[k]) ** 2 / var[k] - 1) / np.sqrt(2)).sum(0) / (T * np.sqrt(w[k]))
            for k in range(K)
        ]
    )
    return np.concatenate([fw, fmu.ravel(), fvar.ravel()])


def test_paper_convention_is_eqs_2_to_4(gmm):
    rng = np.random.default_rng(1)
    sets = [rng.normal(scale=3.0, size=(n, 5)) for n in (40, 17, 63)]
    ours = fisher_vectors(sets, gmm, power=None, l2=False, dtype=torch.float64).numpy()
    for i, s in enumerate(sets):
        ref = reference_fv(s, gmm.weights_, gmm.means_, gmm.variances_)
        np.testing.assert_allclose(ours[i], ref, rtol=1e-10, atol=1e-12)
    assert ours.shape == (3, fisher_dim(6, 5)) == (3, 66)


@pytest.mark.parametrize("improved", [False, True])
def test_matches_skimage_on_random_descriptors(gmm, improved):
    rng = np.random.default_rng(2)
    sets = [rng.normal(scale=3.0, size=(n, 5)) for n in (50, 80, 33, 1)]
    ref = np.stack([fisher_vector(s, gmm.to_sklearn(), improved=improved, alpha=0.5) for s in sets])
    ours = fisher_vectors(
        sets, gmm, power=0.5 if improved else None, l2=improved, convention="skimage", dtype=torch.float64
    ).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_skimage_convention_differs_from_paper_in_the_sign_of_the_variance_part(gmm):
    """skimage's variance block is the normalised score w.r.t. the precisions: minus eq. (4)."""
    sets = torch.as_tensor(np.random.default_rng(3).normal(scale=3.0, size=(2, 30, 5)))
    paper = fisher_vectors(sets, gmm, power=None, l2=False)
    sk = fisher_vectors(sets, gmm, power=None, l2=False, convention="skimage")
    K, D = 6, 5
    torch.testing.assert_close(sk[:, : K + K * D], paper[:, : K + K * D])
    torch.testing.assert_close(sk[:, K + K * D :], -paper[:, K + K * D :])
    assert paper[:, K + K * D :].abs().max() > 0.1


def test_float32_matches_float64(gmm):
    sets = torch.as_tensor(np.random.default_rng(4).normal(scale=3.0, size=(3, 500, 5)) + 50.0)
    shifted = GMMParams(*(torch.as_tensor(a) for a in (gmm.weights_, gmm.means_ + 50.0, gmm.variances_)))
    f64 = fisher_vectors(sets, shifted, dtype=torch.float64)
    f32 = fisher_vectors(sets.float(), shifted)
    assert f32.dtype == torch.float32
    # uncentred data (offset 50): exact only because descriptors are shifted by the mixture mean first
    torch.testing.assert_close(f32.double(), f64, atol=2e-5, rtol=0)


def test_list_dense_and_chunked_agree(gmm):
    rng = np.random.default_rng(5)
    dense = torch.as_tensor(rng.normal(scale=3.0, size=(4, 37, 5)))
    full = fisher_vectors(dense, gmm)
    # chunk_rows smaller than one image: statistics accumulated over descriptor chunks
    torch.testing.assert_close(fisher_vectors(dense, gmm, chunk_rows=7), full)
    torch.testing.assert_close(fisher_vectors(list(dense.numpy()), gmm), full)
    # varying lengths, padded with a mask within a batch: each as if encoded alone
    sets = [dense[0, :10], dense[1], dense[2, :3], dense[3, :25]]
    together = fisher_vectors(sets, gmm, chunk_rows=200)
    alone = torch.cat([fisher_vectors(s[None], gmm) for s in sets])
    torch.testing.assert_close(together, alone)


def test_power_normalisation_gradient_is_finite_at_zero():
    z = torch.tensor([0.0, 1e-30, -4.0, 9.0], dtype=torch.float64, requires_grad=True)
    out = power_normalize(z, 0.5)
    out.sum().backward()
    assert out.detach().tolist() == pytest.approx([0.0, 1e-15, -2.0, 3.0])
    assert torch.isfinite(z.grad).all() and z.grad[0] == 0
    assert z.grad[2:].tolist() == pytest.approx([0.25, 1 / 6])
    v = normalize_fv(torch.tensor([[3.0, -4.0]]), power=None, l2=True)
    assert v[0].tolist() == pytest.approx([0.6, -0.8])


def test_fisher_vectors_input_errors(gmm):
    with pytest.raises(DataError, match=r"dense \(n, T, D\) array or a list"):
        fisher_vectors(np.zeros((10, 5)), gmm)
    with pytest.raises(DataError, match="dimension 4, the GMM was fitted on 5"):
        fisher_vectors(np.zeros((1, 10, 4)), gmm)
    with pytest.raises(ConfigError, match="diagonal GMM"):
        fisher_vectors(np.zeros((1, 10, 5)), GaussianMixture(2, covariance_type="full").fit(blobs(100, 5, 2)))
    assert math.isfinite(float(fisher_vectors(np.zeros((1, 10, 5)), gmm).sum()))


def test_fast_path_matches_the_differentiable_one(gmm):
    """Without autograd the statistics come from a reused buffer; with it, from out-of-place operations.
    Both agree, with padding masks and chunks splitting images, and the gradient flows."""
    rng = np.random.default_rng(20)
    sets = [torch.as_tensor(rng.normal(scale=3.0, size=(t, 5))) for t in (37, 5, 61, 23)]
    settings = [(7, "paper", 0.5, True), (50, "skimage", 0.3, False), (1000, "paper", None, True)]
    for rows, convention, power, l2 in settings:
        kw = dict(dtype=torch.float64, chunk_rows=rows, convention=convention, power=power, l2=l2)
        fast = fisher_vectors(sets, gmm, **kw)
        leaves = [s.clone().requires_grad_(True) for s in sets]
        slow = fisher_vectors(leaves, gmm, **kw)
        torch.testing.assert_close(slow.detach(), fast, rtol=1e-12, atol=1e-14)
    slow.sum().backward()
    assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in leaves)


def test_tiny_posteriors_are_dropped_without_changing_the_vectors():
    """Descriptors between two far-apart components: the posterior of the far one would be a subnormal
    float32 number (exp of -65 to -87 relative to the near one); both paths set it to 0, and the
    vectors agree with eqs. (2)-(4) computed in float64 (where no posterior is dropped) to float32
    rounding."""
    w = np.array([0.5, 0.5])
    mu = np.array([[0.0, 0.0], [13.0, 0.0]])
    var = np.ones((2, 2))
    p = GMMParams(*(torch.as_tensor(a) for a in (w, mu, var)))
    rng = np.random.default_rng(21)
    x = np.concatenate([rng.normal(size=(200, 2)) * 0.3, rng.normal(size=(100, 2)) * 0.3 + [13.0, 0.0]])
    x[:, 0] += rng.choice([-0.5, 0.5], size=len(x))  # log-posterior gaps of 78-91: subnormal range
    x = x[rng.permutation(len(x))]
    gaps = np.abs(x[:, 0] - 6.5) * 13
    assert ((gaps > 65) & (gaps < 87)).mean() > 0.3
    x32 = torch.as_tensor(x[None], dtype=torch.float32)
    ours = fisher_vectors(x32, p, power=None, l2=False)
    slow = fisher_vectors(x32.clone().requires_grad_(True), p, power=None, l2=False).detach()
    ref = reference_fv(x, w, mu, var)
    for f32 in (ours, slow):  # float32 rounding of S2 - 2 mu S1 + S0 (mu^2 - var), |mu| = 6.5 from the centre
        np.testing.assert_allclose(f32.double().numpy()[0], ref, rtol=0, atol=2e-5)
    f64 = fisher_vectors(x[None], p, power=None, l2=False, dtype=torch.float64).numpy()[0]
    np.testing.assert_allclose(f64, ref, rtol=1e-10, atol=1e-12)


def test_posteriors_below_the_cutoff_are_exactly_zero():
    """Descriptors near one component only, at log-posterior gaps of 70-80 from the other: the far
    component gets statistics of exactly 0 (its posteriors are dropped, not kept as tiny numbers), and
    a gap just above the cutoff keeps its posterior."""
    p = GMMParams(torch.tensor([0.5, 0.5]), torch.tensor([[0.0], [1.0]]), torch.ones(2, 1))
    x = torch.linspace(-79.0, -70.0, 50)[:, None]
    gaps = 0.5 - x  # log p(near) - log p(far) for unit variances and means 0 and 1
    assert bool(((gaps > 70) & (gaps < 80)).all())
    s0, s1, s2, _ = fv_statistics(x[None], p)
    assert s0[0, 1].item() == 0.0 and s1[0, 1].abs().max().item() == 0.0 and s2[0, 1].item() == 0.0
    assert s0[0, 0].item() == 50.0
    kept = torch.tensor([[[-63.5]]])  # gap 64: exp(-64) of the near one, a normal float32 number
    s0, *_ = fv_statistics(kept, p)
    assert s0[0, 1].item() == pytest.approx(np.exp(-64.0), rel=1e-2)


def test_overflow_and_nonfinite_inputs_are_named(gmm):
    x = np.random.default_rng(22).normal(size=(3, 20, 5))
    huge = x.copy()
    huge[1, 4] = 1e30  # finite, but its square overflows float32
    with pytest.raises(DataError, match=r"images \(first: \[1\]\) overflow float32 arithmetic"):
        fisher_vectors(huge, gmm)
    assert torch.isfinite(fisher_vectors(huge, gmm, dtype=torch.float64)).all()
    bad = x.copy()
    bad[2, 3, 1] = np.nan
    with pytest.raises(
        DataError, match=r"descriptors hold 1 NaN or infinite values in 1 images \(first: \[2\]\)"
    ):
        fisher_vectors(list(bad), gmm)


def test_float64_descriptors_are_encoded_in_float32_unless_asked(gmm):
    x = np.random.default_rng(23).normal(size=(2, 30, 5))
    assert fisher_vectors(x, gmm).dtype == torch.float32
    assert fisher_vectors(x, gmm, dtype=torch.float64).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_lists_and_dense_match_cpu(gmm):
    rng = np.random.default_rng(24)
    sets = [torch.as_tensor(rng.normal(scale=3.0, size=(t, 5)), dtype=torch.float32) for t in (40, 7, 90)]
    dense = torch.as_tensor(rng.normal(scale=3.0, size=(4, 300, 5)), dtype=torch.float32)
    for x in (sets, dense):
        cpu = fisher_vectors(x, gmm)
        gpu = fisher_vectors(x, gmm, device="cuda")
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-4)


def _far_apart(sep: float, D: int = 4, seed: int = 0):
    """Two unit-variance clusters ``sep`` apart, a diagonal GMM fitted on them, and 5 sets of both."""
    rng = np.random.default_rng(seed)
    pts = np.concatenate([rng.normal(0, 1, (2000, D)), rng.normal(sep, 1, (2000, D))])
    gmm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(pts)
    sets = [np.concatenate([rng.normal(0, 1, (100, D)), rng.normal(sep, 1, (100, D))]) for _ in range(5)]
    return gmm, sets


def test_float32_stays_accurate_when_components_lie_far_from_the_mixture_mean():
    # 1,000 sigma apart, float32's expanded quadratic forms cancel (the variance block was off by 0.38
    # relative); such mixtures are computed in float64 and returned in float32
    gmm, sets = _far_apart(1000.0)
    sk = np.stack([fisher_vector(s, gmm, improved=False) for s in sets])
    f32 = fisher_vectors(sets, gmm, convention="skimage", power=None, l2=False)
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.numpy(), sk, rtol=1e-5, atol=1e-6 * np.abs(sk).max())


def test_working_dtype_keeps_float32_for_compact_mixtures_only():
    from deepfeat.features.fisher import encoding
    from deepfeat.features.fisher.gmm import as_gmm_params

    near, _ = _far_apart(3.0)
    far, _ = _far_apart(100.0)
    assert encoding.working_dtype(as_gmm_params(near), torch.float32) == torch.float32
    assert encoding.working_dtype(as_gmm_params(far), torch.float32) == torch.float64
    assert encoding.working_dtype(as_gmm_params(far), torch.float64) == torch.float64
    # an ordinary mixture in 1,280 dimensions (a last conv layer without PCA) stays in float32, where it
    # is accurate to 4e-6: a sum of the per-dimension terms sent it to float64
    rng = np.random.default_rng(0)
    wide = GMMParams(
        torch.full((8,), 1 / 8, dtype=torch.float64),
        torch.from_numpy(rng.normal(size=(8, 1280))),
        torch.ones(8, 1280, dtype=torch.float64),
    )
    assert encoding.working_dtype(wide, torch.float32) == torch.float32


@pytest.mark.parametrize("bad", [0, -5, 2.5])
def test_chunk_rows_is_checked(bad):
    x = np.random.default_rng(0).normal(size=(2, 6, 3))
    gmm = GMMParams(torch.full((2,), 0.5).double(), torch.zeros(2, 3).double(), torch.ones(2, 3).double())
    with pytest.raises(ConfigError, match="chunk_rows"):
        fisher_vectors(x, gmm, chunk_rows=bad)
