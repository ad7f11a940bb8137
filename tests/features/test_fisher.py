"""Fisher vectors: descriptors of conv maps, the diagonal GMM, the encoding against
skimage.feature.fisher_vector and the scikit-learn transformer."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from skimage.feature import fisher_vector
from sklearn.base import clone
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher import (
    DescriptorPCA,
    DiagonalGMM,
    FisherEncoder,
    GMMParams,
    conv_descriptors,
    fisher_dim,
    fisher_vectors,
    normalize_fv,
    power_normalize,
    subsample_descriptors,
)
from deepfeat.probes.linear import LinearProbe


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(n: int = 1500, d: int = 5, k: int = 4, seed: int = 0) -> np.ndarray:
    """Descriptors from k elongated Gaussian blobs, shuffled."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.normal(size=(n // k, d)) * rng.uniform(0.3, 2.0, d) + rng.normal(scale=3.0, size=d)
        for _ in range(k)
    ]
    x = np.concatenate(parts)
    return x[rng.permutation(len(x))]


@pytest.fixture(scope="module")
def gmm() -> DiagonalGMM:
    return DiagonalGMM(6, random_state=0).fit(blobs())


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


# --- the encoding -----------------------------------------------------------------------------------


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


# --- descriptors ------------------------------------------------------------------------------------


def test_conv_descriptors_one_per_position():
    maps = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    d = conv_descriptors(maps)
    assert d.shape == (2, 20, 3)
    torch.testing.assert_close(d[1, 2 * 5 + 3], maps[1, :, 2, 3])
    torch.testing.assert_close(conv_descriptors(maps.reshape(2, -1).numpy(), (3, 4, 5)), d)
    with pytest.raises(DataError, match=r"layer_shape \(3, 5, 4\)|do not hold"):
        conv_descriptors(maps.reshape(2, -1)[:, :-1], (3, 4, 5))


def test_subsample_depends_on_the_image_not_its_batch():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    s1 = subsample_descriptors(torch.as_tensor(np.stack([a, b])), 20, random_state=0)
    s2 = subsample_descriptors(torch.as_tensor(np.stack([b, a, a])), 20, random_state=0)
    assert s1.shape == (2, 20, 3)
    torch.testing.assert_close(s1[0], s2[1])
    torch.testing.assert_close(s1[1], s2[0])
    # a subset of the rows, in their original order
    rows = [int(np.flatnonzero((a == r).all(1))[0]) for r in s1[0].numpy()]
    assert rows == sorted(rows) and len(set(rows)) == 20
    other = subsample_descriptors(torch.as_tensor(a[None]), 20, random_state=1)
    assert not torch.equal(other[0], s1[0])
    short = [torch.as_tensor(a[:5]), torch.as_tensor(b)]
    out = subsample_descriptors(short, 20, random_state=0)
    assert [len(s) for s in out] == [5, 20]


# --- PCA and GMM ------------------------------------------------------------------------------------


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    x = blobs(600, 8, 3, seed=7)
    ours = DescriptorPCA(4).fit(torch.as_tensor(x))
    ref = PCA(4).fit(x)
    np.testing.assert_allclose(ours.explained_variance_.numpy(), ref.explained_variance_, rtol=1e-9)
    z, zr = ours.transform(torch.as_tensor(x)).numpy(), ref.transform(x)
    np.testing.assert_allclose(np.abs(z), np.abs(zr), atol=1e-9)  # axes agree up to sign
    white = DescriptorPCA(4, whiten=True).fit(torch.as_tensor(x)).transform(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(white.var(0, ddof=1), 1.0, rtol=1e-6)


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
    with pytest.raises(ConfigError, match="n_components must be an integer >= 1"):
        DiagonalGMM(0).fit(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = blobs(800, 4, 4, seed=8)
    cpu = DiagonalGMM(4, random_state=0).fit(x)
    gpu = DiagonalGMM(4, random_state=0, device="cuda").fit(x)
    np.testing.assert_allclose(gpu.means_, cpu.means_, rtol=1e-6, atol=1e-8)
    sets = torch.as_tensor(x[:600].reshape(3, 200, 4))
    torch.testing.assert_close(fisher_vectors(sets.cuda(), cpu).cpu(), fisher_vectors(sets, cpu))


# --- the transformer --------------------------------------------------------------------------------


def photo_maps() -> tuple[np.ndarray, tuple[int, int, int]]:
    """EfficientNet-Lite0 stage3 maps (40 x 28 x 28) of four skimage.data photos, flat rows."""
    from deepfeat.backbones import load_backbone
    from deepfeat.features.capture import LayerCapture

    bb = load_backbone("efficientnet_lite0")
    images = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    pre = bb.preprocess
    batch = pre.to_batch([pre(Image.fromarray(im)) for im in images], channels_last=bb.channels_last)
    with torch.no_grad(), LayerCapture(bb, bb.catalog.resolve("stage3")) as cap:
        maps = cap.run(batch)["stage3"]
    maps = maps.float().contiguous().numpy()
    return maps.reshape(len(maps), -1), tuple(maps.shape[1:])


@pytest.fixture(scope="module")
def real_rows():
    return photo_maps()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_encoder_matches_skimage_on_conv_descriptors(real_rows, dtype):
    """float64: skimage's improved FV to float32 rounding. float32: the raw (L2-normalised) FV to
    1e-5; the signed square root would magnify float32 rounding of entries near 0 (d sqrt(z) / dz)."""
    rows, shape = real_rows
    assert shape == (40, 28, 28)
    improved = dtype == "float64"
    enc = FisherEncoder(
        n_components=8,
        pca_dim=16,
        layer_shape=shape,
        convention="skimage",
        power=0.5 if improved else None,
        dtype=dtype,
        random_state=0,
    ).fit(rows[:3])
    fv = enc.transform(rows)
    assert fv.shape == (4, (2 * 16 + 1) * 8) and fv.dtype == np.float32
    descs = enc.descriptors(rows)
    ref = np.stack([fisher_vector(d.numpy(), enc.gmm_.to_sklearn(), improved=improved) for d in descs])
    if not improved:
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(fv, ref, atol=1e-6 if improved else 1e-5, rtol=0)
    # (n, C, H, W) maps give the same vectors as flat rows with layer_shape
    maps = rows.reshape(len(rows), *shape)
    np.testing.assert_array_equal(clone(enc).set_params(layer_shape=None).fit(maps[:3]).transform(maps), fv)


def test_encoder_sampling_pca_and_dimensions(real_rows):
    rows, shape = real_rows
    enc = FisherEncoder(n_components=4, pca_dim=8, max_descriptors=100, fit_sample=250, layer_shape=shape)
    fv = enc.fit(rows).transform(rows)
    assert enc.n_fit_descriptors_ == 250 and enc.n_features_out_ == 68 == fv.shape[1]
    assert len(enc.descriptors(rows[:1])[0]) == 100
    np.testing.assert_allclose(np.linalg.norm(fv, axis=1), 1.0, rtol=1e-5)
    # the same image encodes the same way alone or among others
    np.testing.assert_array_equal(enc.transform(rows[2:3]), fv[2:3])
    no_pca = FisherEncoder(n_components=2, pca_dim=None, power=None, l2=False, layer_shape=shape)
    assert no_pca.fit(rows[:2]).transform(rows[:1]).shape == (1, (2 * 40 + 1) * 2)


def test_encoder_in_a_pipeline_before_a_probe():
    rng = np.random.default_rng(9)
    n, shape = 40, (6, 5, 5)
    y = np.arange(n) % 2
    maps = rng.normal(size=(n, *shape))
    maps[y == 1, 2] += 1.5 * (rng.random((int(y.sum()), 5, 5)) < 0.3)  # class 1: sparse bright spots
    X = maps.reshape(n, -1).astype(np.float32)
    pipe = Pipeline(
        [
            ("fv", FisherEncoder(n_components=3, pca_dim=4, layer_shape=shape)),
            ("probe", LinearProbe(loss="squared_hinge", C=10.0)),
        ]
    )
    train = rng.permutation(n)[: n // 2]
    test = np.setdiff1d(np.arange(n), train)
    pipe.fit(X[train], y[train])
    assert pipe.score(X[test], y[test]) >= 0.8
    assert clone(pipe).get_params()["fv__pca_dim"] == 4


def test_encoder_accepts_descriptor_lists():
    rng = np.random.default_rng(10)
    sets = [rng.normal(size=(t, 5)) for t in (30, 12, 55)]
    enc = FisherEncoder(n_components=2, pca_dim=3, tol=1e-4).fit(sets)
    fv = enc.transform(sets)
    assert fv.shape == (3, 14)
    np.testing.assert_allclose(enc.transform([sets[1]])[0], fv[1], atol=1e-7)


@pytest.mark.parametrize(
    "params,error,match",
    [
        ({"n_components": 0}, ConfigError, "n_components must be an integer >= 1"),
        ({"pca_dim": 64}, ConfigError, "pca_dim=64 exceeds the descriptor dimension 6"),
        ({"power": 2.0}, ConfigError, r"power must be a number in \(0, 1\]"),
        ({"convention": "vlfeat"}, ConfigError, "valid: paper, skimage"),
        ({"dtype": "float16"}, ConfigError, "valid: float32, float64"),
        ({"layer_shape": (6, 5)}, ConfigError, r"layer_shape must be \(C, H, W\)"),
        (
            {"layer_shape": (6, 4, 5)},
            DataError,
            r"rows have 150 values but layer_shape \(6, 4, 5\) holds 120",
        ),
        ({"layer_shape": None}, DataError, "pass layer_shape"),
        (
            {"n_components": 200, "fit_sample": 1000},
            DataError,
            "150 descriptors, too few for n_components=200",
        ),
        ({"fit_sample": 2}, ConfigError, "fit_sample=2 is smaller than n_components=3"),
        ({"l2": "yes"}, ConfigError, "l2 must be True or False"),
    ],
)
def test_encoder_errors(params, error, match):
    X = np.random.default_rng(11).normal(size=(6, 150)).astype(np.float32)
    base = {"n_components": 3, "pca_dim": 4, "layer_shape": (6, 5, 5)}
    with pytest.raises(error, match=match):
        FisherEncoder(**{**base, **params}).fit(X)


def test_encoder_rejects_nan_and_mismatched_inputs():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(6, 150)).astype(np.float32)
    bad = X.copy()
    bad[4, 7] = np.inf
    enc = FisherEncoder(n_components=2, pca_dim=3, layer_shape=(6, 5, 5))
    with pytest.raises(DataError, match=r"NaN or infinite values in 1 images \(first: \[4\]\)"):
        enc.fit(bad)
    enc.fit(X)
    with pytest.raises(DataError, match=r"first: \[4\]"):
        enc.transform(bad)
    with pytest.raises(DataError, match="dimension 5, the encoder was fitted on 6"):
        enc.set_params(layer_shape=None).transform([rng.normal(size=(9, 5))])
    with pytest.raises(DataError, match="non-empty"):
        FisherEncoder(n_components=1, pca_dim=None).fit([np.zeros((0, 3))])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_device_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        FisherEncoder(device="cuda", pca_dim=None).fit([np.ones((40, 2))])


def test_fisher_vectors_input_errors(gmm):
    with pytest.raises(DataError, match=r"dense \(n, T, D\) array or a list"):
        fisher_vectors(np.zeros((10, 5)), gmm)
    with pytest.raises(DataError, match="dimension 4, the GMM was fitted on 5"):
        fisher_vectors(np.zeros((1, 10, 4)), gmm)
    with pytest.raises(ConfigError, match="diagonal GMM"):
        fisher_vectors(np.zeros((1, 10, 5)), GaussianMixture(2, covariance_type="full").fit(blobs(100, 5, 2)))
    assert math.isfinite(float(fisher_vectors(np.zeros((1, 10, 5)), gmm).sum()))
