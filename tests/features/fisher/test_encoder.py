"""FisherEncoder, the scikit-learn transformer: against skimage on real conv descriptors, sampling and PCA,
in a Pipeline, its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from skimage.feature import fisher_vector
from sklearn.base import clone
from sklearn.exceptions import SkipTestWarning
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils import estimator_checks, get_tags
from sklearn.utils.estimator_checks import check_estimator

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher import FisherEncoder
from deepfeat.probes.linear import LinearProbe
from tests.features.fisher.test_encoding import reference_fv


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
        ({"n_components": 0}, ConfigError, "n_components must be at least 1"),
        ({"pca_dim": 64}, ConfigError, "pca_dim=64 exceeds the descriptor dimension 6"),
        ({"power": 2.0}, ConfigError, r"power must be a number in \(0, 1\]"),
        ({"convention": "vlfeat"}, ConfigError, "valid: paper, skimage"),
        (
            {"dtype": "float16"},
            ConfigError,
            r"unknown dtype 'float16'; valid: (float32, float64|float64, float32)",
        ),
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


# --- scikit-learn conventions -----------------------------------------------------------------------


def test_encoder_in_make_pipeline_with_a_cross_validated_probe():
    """C chosen by cross-validation inside the pipeline (over the whole grid: with the default
    path_patience=2 the search stops on the flat start of the grid for these L2-normalised vectors)."""
    rng = np.random.default_rng(13)
    n, shape = 60, (6, 5, 5)
    y = np.arange(n) % 2
    maps = rng.normal(size=(n, *shape))
    maps[y == 1, 2] += 2.5 * (rng.random((int(y.sum()), 5, 5)) < 0.3)  # class 1: sparse bright spots
    X = maps.reshape(n, -1).astype(np.float32)
    pipe = make_pipeline(
        FisherEncoder(n_components=3, pca_dim=4, layer_shape=shape), LinearProbe(path_patience=None)
    )
    train = rng.permutation(n)[: n // 2]
    test = np.setdiff1d(np.arange(n), train)
    pipe.fit(X[train], y[train])
    assert pipe.score(X[test], y[test]) >= 0.8
    names = pipe[:-1].get_feature_names_out()
    assert len(names) == (2 * 4 + 1) * 3 == pipe[-1].n_features_in_
    assert names[0] == "fisherencoder_w_k0" and names[-1] == "fisherencoder_sigma2_k2_d3"


def test_feature_names_label_the_entries():
    """Each name points at the entry it names: checked against eqs. (2)-(4) written out."""
    rng = np.random.default_rng(14)
    sets = rng.normal(size=(3, 30, 4))
    enc = FisherEncoder(n_components=3, pca_dim=None, power=None, l2=False, dtype="float64", tol=1e-4)
    fv = enc.fit(sets).transform(sets)
    names = list(enc.get_feature_names_out())
    assert len(names) == len(set(names)) == fv.shape[1] == 27
    enc.set_params(n_components=8)  # not refitted: the names still follow the fitted encoder
    assert len(enc.get_feature_names_out()) == enc.transform(sets).shape[1] == 27
    enc.set_params(n_components=3)
    g = enc.gmm_
    ref = reference_fv(sets[1], g.weights_, g.means_, g.variances_)
    K, D = 3, 4
    for name, k, d, block in (
        ("fisherencoder_w_k2", 2, None, "w"),
        ("fisherencoder_mu_k1_d3", 1, 3, "mu"),
        ("fisherencoder_sigma2_k0_d2", 0, 2, "sigma2"),
    ):
        at = {"w": k, "mu": K + k * D + (d or 0), "sigma2": K + K * D + k * D + (d or 0)}[block]
        assert names.index(name) == at
        assert fv[1, at] == pytest.approx(ref[at], rel=1e-5, abs=1e-7)
    with pytest.raises(ConfigError, match="input_features has 2 names"):
        FisherEncoder(n_components=2, pca_dim=None, layer_shape=(3, 1, 1)).fit(
            rng.normal(size=(5, 3))
        ).get_feature_names_out(["a", "b"])


def test_tags_declare_the_input_and_generic_checks_are_honest():
    tags = get_tags(FisherEncoder())
    assert tags.input_tags.three_d_array and not tags.input_tags.two_d_array
    assert not tags.input_tags.allow_nan and not tags.input_tags.sparse and tags.requires_fit
    assert tags.transformer_tags.preserves_dtype == ["float32"]
    assert get_tags(FisherEncoder(layer_shape=(3, 1, 1))).input_tags.two_d_array
    # without layer_shape the estimator takes no generic 2-D data: scikit-learn skips its data checks
    with pytest.warns(SkipTestWarning, match="Can't test estimator FisherEncoder"):
        check_estimator(FisherEncoder(), on_fail=None)
    # the checks that hold for any estimator, and the refusal of sparse input
    enc = FisherEncoder(layer_shape=(3, 1, 1), n_components=2, pca_dim=None)
    for check in (
        estimator_checks.check_no_attributes_set_in_init,
        estimator_checks.check_get_params_invariance,
        estimator_checks.check_set_params,
        estimator_checks.check_parameters_default_constructible,
        estimator_checks.check_estimator_cloneable,
        estimator_checks.check_estimator_repr,
        estimator_checks.check_valid_tag_types,
        estimator_checks.check_mixin_order,
        estimator_checks.check_dont_overwrite_parameters,
        estimator_checks.check_estimator_sparse_tag,
    ):
        check("FisherEncoder", enc)
    X = np.random.default_rng(15).normal(size=(6, 3)).astype(np.float64)
    assert enc.fit(X).transform(X).dtype == np.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_encoder_on_cuda_matches_cpu():
    rng = np.random.default_rng(16)
    sets = [rng.normal(size=(t, 6)).astype(np.float32) for t in (40, 25, 60, 33)]
    dense = rng.normal(size=(5, 50, 6)).astype(np.float32)
    for X in (sets, dense):
        cpu = FisherEncoder(n_components=3, pca_dim=4, tol=1e-4).fit(X)
        gpu = FisherEncoder(n_components=3, pca_dim=4, tol=1e-4, device="cuda").fit(X)
        np.testing.assert_allclose(gpu.transform(X), cpu.transform(X), atol=2e-4)
        np.testing.assert_allclose(gpu.transform(X), cpu.transform(X), atol=2e-4)


def test_float32_encoding_of_a_far_apart_mixture_equals_float64():
    # clusters 1,000 sigma apart: float32 arithmetic would cancel (0.47 relative error before)
    rng = np.random.default_rng(0)
    sets = np.stack(
        [np.concatenate([rng.normal(0, 1, (100, 4)), rng.normal(1000, 1, (100, 4))]) for _ in range(6)]
    )
    enc = FisherEncoder(n_components=2, pca_dim=None, power=None, l2=False).fit(sets)
    f32 = enc.transform(sets)
    f64 = enc.set_params(dtype="float64").transform(sets)
    np.testing.assert_allclose(f32, f64, rtol=1e-5, atol=1e-6 * np.abs(f64).max())
