"""End-to-end training of the Fisher-vector layer: the whole head's gradients, the exact start of the
feature transform, the SVM signals, and training (the layer's own derivatives are tested in
tests/features/fisher/test_layer.py)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch.func import functional_call

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher import (
    DiagonalGMM,
    GMMParams,
    fisher_vectors,
)
from deepfeat.training.fisher_e2e import (
    FeatureTransform,
    FisherE2E,
    train_fisher_e2e,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def multilabel_problem(n: int = 80, T: int = 40, D: int = 4, n_classes: int = 3, seed: int = 0):
    """Images of T descriptors from 3 background blobs; a present class replaces ~12% of them by draws
    from a tight blob near a background one; 10% of the labels flipped (so no perfect separation)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(3, D))
    marks = centres[rng.integers(0, 3, n_classes)] + rng.normal(scale=0.7, size=(n_classes, D))
    Y = (rng.random((n, n_classes)) < 0.4).astype(int)
    X = np.empty((n, T, D))
    for i in range(n):
        X[i] = centres[rng.integers(0, 3, T)] + rng.normal(size=(T, D))
        for c in np.flatnonzero(Y[i]):
            k = rng.random(T) < 0.12
            X[i, k] = marks[c] + 0.3 * rng.normal(size=(int(k.sum()), D))
    Y = np.where(rng.random(Y.shape) < 0.1, 1 - Y, Y)
    Y[0], Y[1] = 1, 0  # every class has positives and negatives
    return X, Y


# --- the head --------------------------------------------------------------------------------------


def test_whole_head_gradcheck_with_transform():
    X, Y = multilabel_problem(n=6, T=5, D=3, n_classes=2, seed=4)
    gmm = DiagonalGMM(2, random_state=0).fit(X.reshape(-1, 3))
    model = FisherE2E(
        train=("gmm", "transform"),
        transform_init="orthogonal",  # a Xavier draw this small can be near-singular (see the warning)
        epochs=0,
        svm_loss="squared_hinge",
        dtype="float64",
    )
    model.fit(X, Y, gmm)
    head = model.head_
    z = head.inputs(torch.as_tensor(X[:2])).detach().requires_grad_(True)
    names = [n for n, _ in head.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in head.named_parameters())
    assert set(names) == {"transform.weight", "transform.bias", "layer.nu", "layer.means", "layer.zeta"}

    def f(z, *p):
        return functional_call(head, dict(zip(names, p)), (z,))

    assert torch.autograd.gradcheck(f, (z, *params), eps=1e-6, atol=1e-5, rtol=1e-4)


# --- the exact start -------------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["xavier", "orthogonal", "identity"])
def test_feature_transform_starts_exactly_at_the_fixed_descriptors(init):
    X, Y = multilabel_problem(n=10, T=20, seed=9)
    gmm = DiagonalGMM(3, random_state=0).fit(X.reshape(-1, 4))
    model = FisherE2E(train=("gmm", "transform"), transform_init=init, epochs=0, svm_loss="squared_hinge")
    for dtype, tol in (("float64", 1e-10), ("float32", 2e-5)):
        model.dtype = dtype
        model.fit(X, Y, gmm)
        head = model.head_
        z = head.inputs(torch.as_tensor(X, dtype=head.scale.dtype))
        u = (torch.as_tensor(X, dtype=z.dtype) - head.shift) / head.scale
        torch.testing.assert_close(head.transform(z), u, atol=tol, rtol=0)
        # the affine map to (-0.9, 0.9) and the GMM mapped with it: the Fisher vectors of the raw descriptors
        ref = fisher_vectors(torch.as_tensor(X), gmm, dtype=torch.float64).numpy()
        np.testing.assert_allclose(model.encode(X), ref, atol=max(10 * tol, 1e-6), rtol=0)  # float32 output
        assert float(u.abs().max()) == pytest.approx(0.9, rel=1e-5)
    w0 = FeatureTransform(4, init).weight0
    if init == "xavier":
        assert float(w0.abs().max()) <= np.sqrt(6 / 8)
    else:
        torch.testing.assert_close(w0 @ w0.T, torch.eye(4, dtype=torch.float64))


def test_hinge_signal_is_the_gradient_of_the_svm_loss():
    rng = np.random.default_rng(10)
    fv = torch.as_tensor(rng.normal(size=(5, 8)))
    ysign = torch.as_tensor(np.where(rng.random((5, 3)) < 0.5, -1.0, 1.0))
    theta, bias = torch.as_tensor(rng.normal(size=(3, 8))), torch.as_tensor(rng.normal(size=3))
    for loss in ("hinge", "squared_hinge"):
        model = FisherE2E(gradient="hinge", svm_loss=loss)
        f = fv.clone().requires_grad_(True)
        slack = (1 - ysign * (f @ theta.T + bias)).clamp_min(0)
        (slack if loss == "hinge" else slack**2).sum().backward()
        torch.testing.assert_close(-(model._signal(fv, ysign, theta, bias) @ theta), f.grad)
    paper = FisherE2E(gradient="paper")._signal(fv, ysign, theta, bias)
    torch.testing.assert_close(paper, ysign)


# --- training ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def problem():
    X, Y = multilabel_problem(seed=0)
    gmm = DiagonalGMM(3, random_state=0).fit(X.reshape(-1, X.shape[-1]))
    return X, Y, gmm


@pytest.mark.parametrize("gradient", ["paper", "hinge"])
def test_training_the_gmm_lowers_the_svm_objective(problem, gradient):
    X, Y, gmm = problem
    model = FisherE2E(
        gradient=gradient,
        svm_loss="squared_hinge",
        C=1.0,
        epochs=4,
        batch_size=16,
        lr=3e-3,
        dtype="float64",
        progress=False,
    ).fit(X, Y, gmm)
    r = model.results_
    objectives = [h["objective"] for h in r["history"]]
    assert len(objectives) == 5
    assert r["after"]["objective"] < r["before"]["objective"] - 0.2
    if gradient == "hinge":
        # the true gradient of the (smooth) squared-hinge objective, the SVM re-solved every epoch:
        # block-coordinate descent, every epoch lowers the objective and here raises the training mAP
        assert all(b < a for a, b in itertools.pairwise(objectives)), objectives
        assert r["after"]["train_map"] > r["before"]["train_map"]
    # the GMM constraints hold throughout: weights on the simplex, variances above eps
    p = model.head_.layer.gmm_params()
    p = GMMParams(*(t.detach() for t in (p.weights, p.means, p.variances)))
    assert float(p.weights.sum()) == pytest.approx(1.0) and (p.weights > 0).all()
    assert (p.variances > model.head_.layer.eps).all()
    assert not torch.allclose(p.means, torch.as_tensor(gmm.means_))
    json.dumps(r)


def test_paper_setting_with_eval_set_and_transform(problem):
    X, Y, gmm = problem
    with pytest.warns(UserWarning, match="1 descriptor values lie outside"):  # held-out, out of range
        r = train_fisher_e2e(
            X[:60],
            Y[:60],
            gmm,
            eval_set=(list(X[60:]), Y[60:]),
            train=("gmm", "transform"),
            transform_init="orthogonal",
            epochs=2,
            lr=1e-3,
            lr_transform=1e-4,
            progress=False,
        )
    assert r["settings"]["gradient"] == "paper" and r["settings"]["svm_loss"] == "hinge"
    assert r["data"]["fisher_dim"] == (2 * 4 + 1) * 3 and r["data"]["n_eval"] == 20
    for stage in ("before", "after"):
        assert len(r[stage]["train_ap"]) == len(r[stage]["test_ap"]) == 3
        assert 0 < r[stage]["test_map"] <= 1 and np.isfinite(r[stage]["objective"])
    assert [h["epoch"] for h in r["history"]] == [0, 1, 2]
    json.loads(json.dumps(r))


def test_varying_descriptor_counts(problem):
    X, Y, gmm = problem
    sets = [x[: 20 + (i % 3) * 10] for i, x in enumerate(X[:30])]
    model = FisherE2E(epochs=1, batch_size=8, lr=1e-3, svm_loss="squared_hinge", progress=False)
    model.fit(sets, Y[:30], gmm)
    ref = fisher_vectors(sets, gmm, dtype=torch.float64).numpy()
    assert model.decision_function(sets).shape == (30, 3)
    assert model.encode(sets).shape == ref.shape


def test_gmm_fitted_here_when_none_is_given(problem):
    X, Y, _ = problem
    model = FisherE2E(n_components=2, epochs=1, lr=1e-3, svm_loss="squared_hinge", progress=False)
    r = model.fit(X[:30], Y[:30]).results_
    assert r["data"]["n_components"] == 2 and r["data"]["fisher_dim"] == 18
    assert np.isfinite(r["after"]["objective"])


@pytest.mark.parametrize(
    "params,error,match",
    [
        ({"gradient": "squared"}, ConfigError, "valid: paper, hinge"),
        ({"train": ("transform",)}, ConfigError, r"train must be \('gmm',\)"),
        ({"svm_loss": "logistic"}, ConfigError, "valid: hinge, squared_hinge"),
        ({"lr": 0}, ConfigError, "lr must be a positive number"),
        ({"transform_init": "he"}, ConfigError, "valid: xavier, orthogonal, identity"),
        ({"tanh_range": 1.0}, ConfigError, r"tanh_range must be in \(0, 1\)"),
    ],
)
def test_config_errors(problem, params, error, match):
    X, Y, gmm = problem
    with pytest.raises(error, match=match):
        FisherE2E(progress=False, **params).fit(X[:10], Y[:10], gmm)


def test_data_errors(problem):
    X, Y, gmm = problem
    model = FisherE2E(epochs=0, progress=False)
    with pytest.raises(DataError, match=r"\(n_images=10, n_classes\) 0/1 indicator"):
        model.fit(X[:10], Y[:9], gmm)
    bad = X[:10].copy()
    bad[3, 2, 1] = np.nan
    with pytest.raises(DataError, match=r"NaN or infinite values in 1 images \(first: \[3\]\)"):
        model.fit(bad, Y[:10], gmm)
    with pytest.raises(DataError, match="dimension 3, the GMM has 4"):
        model.fit(X[:10, :, :3], Y[:10], gmm)
