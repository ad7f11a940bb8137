"""End-to-end training of the Fisher-vector layer: the whole head's gradients, the exact start of the
feature transform, the SVM signals, and training (the layer's own derivatives are tested in
tests/features/fisher/test_layer.py)."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC
from torch.func import functional_call

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher import DiagonalGMM, FeatureTransform, GMMParams, fisher_vectors
from deepfeat.metrics import average_precision_per_class
from deepfeat.training.fisher_e2e import FisherE2E, train_fisher_e2e
from deepfeat.training.fisher_svm import ap_summary, fit_ovr_svm, svm_objective


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
        ({"lr": 0}, ConfigError, r"lr must be in \(0, inf"),
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


# --- per-class heads and difficult labels -----------------------------------------------------------


def difficult_mask(Y: np.ndarray, rate: float = 0.2, seed: int = 0) -> np.ndarray:
    """About ``rate`` of the entries marked difficult, at least one per class, leaving every class
    positives and negatives."""
    hard = np.random.default_rng(seed).random(Y.shape) < rate
    hard[:2] = False  # rows 0 and 1 are a positive and a negative of every class
    classes = np.arange(Y.shape[1])
    hard[2 + classes, classes] = True  # and every class has some
    return hard


def surrogate(fv, ysign, keep, theta, bias, gradient, loss):
    """The loss whose gradient w.r.t. the Fisher vectors the signal is, batch-averaged, difficult
    entries left out: the paper's linear -y theta.f, or the SVM's (squared) hinge."""
    if gradient == "paper":
        per = -ysign * (fv @ theta.T)
    else:
        slack = (1 - ysign * (fv @ theta.T + bias)).clamp_min(0)
        per = slack if loss == "hinge" else slack**2
    return (per * keep).sum() / len(fv)


@pytest.mark.parametrize(
    "heads,gradient,loss",
    [
        ("per_class", "paper", "hinge"),
        ("per_class", "hinge", "squared_hinge"),
        ("per_class", "hinge", "hinge"),
        ("shared", "hinge", "squared_hinge"),
    ],
)
def test_one_step_follows_the_autograd_gradient_of_each_heads_svm_loss(heads, gradient, loss):
    """One full-batch SGD step: head h moves by -lr times the autograd gradient, through a copy of its
    start, of the loss of its own classes' SVMs (one class per head for "per_class", all summed for
    "shared"), with difficult entries left out; other classes' signals do not reach it."""
    X, Y = multilabel_problem(n=24, T=12, D=3, n_classes=3, seed=5)
    hard = difficult_mask(Y, seed=1)
    gmm = DiagonalGMM(2, random_state=0).fit(X.reshape(-1, 3))
    params = dict(heads=heads, gradient=gradient, svm_loss=loss, dtype="float64", progress=False)
    start = FisherE2E(epochs=0, **params).fit(X, Y, gmm, difficult=hard)
    lr = 0.05
    moved = FisherE2E(epochs=1, batch_size=len(X), lr=lr, **params).fit(X, Y, gmm, difficult=hard)
    assert len(moved.heads_) == (3 if heads == "per_class" else 1)
    ysign = torch.as_tensor(2.0 * Y - 1)
    keep = torch.as_tensor(~hard, dtype=torch.float64)
    for h, classes in enumerate(start.classes_of_head_):
        theta, bias = (torch.as_tensor(a, dtype=torch.float64) for a in start.svms_[h])
        head = copy.deepcopy(start.heads_[h])
        fv = head(head.inputs(torch.as_tensor(X)))
        args = (ysign[:, classes], keep[:, classes], theta, bias, gradient, loss)
        surrogate(fv, *args).backward()
        grads = {n: p.grad.clone() for n, p in head.named_parameters()}
        for name, p in moved.heads_[h].named_parameters():
            expected = dict(start.heads_[h].named_parameters())[name].detach() - lr * grads[name]
            torch.testing.assert_close(p.detach(), expected, rtol=1e-9, atol=1e-12)
        # the difficult entries matter: counting them gives another gradient
        head.zero_grad()
        fv = head(head.inputs(torch.as_tensor(X)))
        surrogate(fv, *args[:1], torch.ones_like(args[1]), *args[2:]).backward()
        assert not torch.allclose(head.layer.means.grad, grads["layer.means"], rtol=1e-3)


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
def test_difficult_labels_change_nothing(problem, loss):
    """Flipping every difficult label, for training and held-out images, changes no SVM, objective,
    AP or trained GMM: difficult entries are out of every loss, signal and score."""
    X, Y, gmm = problem
    hard = difficult_mask(Y, seed=2)
    flipped = np.where(hard, 1 - Y, Y)
    runs = []
    for labels in (Y, flipped):
        model = FisherE2E(
            heads="per_class", gradient="hinge", svm_loss=loss, epochs=1, batch_size=20, lr=3e-3,
            dtype="float64", progress=False,
        )  # fmt: skip
        model.fit(X[:60], labels[:60], gmm, difficult=hard[:60], eval_set=(X[60:], labels[60:], hard[60:]))
        runs.append(model)
    a, b = (m.results_ for m in runs)
    for stage in ("before", "after"):
        assert a[stage] == b[stage]
    for ha, hb in zip(runs[0].heads_, runs[1].heads_, strict=True):
        torch.testing.assert_close(ha.layer.means, hb.layer.means, rtol=0, atol=0)
    assert a["data"]["difficult_train"] == int(hard[:60].sum()) > 0
    assert a["data"]["difficult_eval"] == int(hard[60:].sum()) > 0
    # and without the mask, the flipped labels do change the outcome
    plain = FisherE2E(heads="per_class", svm_loss=loss, epochs=0, dtype="float64", progress=False)
    assert plain.fit(X, flipped, gmm).results_["before"] != a["before"]


def test_svm_objective_and_ap_leave_difficult_entries_out():
    rng = np.random.default_rng(30)
    F = rng.normal(size=(30, 6))
    Y = (rng.random((30, 2)) < 0.5).astype(int)
    Y[0], Y[1] = 1, 0
    hard = difficult_mask(Y, 0.3, seed=3)
    coef, intercept = fit_ovr_svm(F, Y, loss="hinge", C=1.0, ignore=hard)
    total = 0.5 * np.square(coef.astype(np.float64)).sum()
    for c in range(2):
        keep = ~hard[:, c]
        ref = LinearSVC(loss="hinge", C=1.0, dual=True, max_iter=5000, tol=1e-4, random_state=0)
        ref.fit(F[keep], Y[keep, c])
        np.testing.assert_allclose(coef[c], ref.coef_[0], rtol=1e-4, atol=1e-5)
        margins = (2 * Y[keep, c] - 1) * (F[keep] @ coef[c].astype(np.float64) + intercept[c])
        total += np.maximum(0, 1 - margins).sum()
    assert svm_objective(F, Y, coef, intercept, 1.0, "hinge", hard) == pytest.approx(total, rel=1e-9)
    scores = F @ coef.T + intercept
    ap = ap_summary(Y, scores, hard)["ap"]
    assert ap[1] == pytest.approx(average_precision_per_class(Y[~hard[:, 1]], scores[~hard[:, 1]])[1])


def test_per_class_results_and_scores(problem):
    X, Y, gmm = problem
    per = FisherE2E(heads="per_class", epochs=1, lr=1e-3, svm_loss="squared_hinge", progress=False)
    r = per.fit(X[:40], Y[:40], gmm, eval_set=(X[40:], Y[40:])).results_
    assert r["settings"]["heads"] == "per_class" and r["settings"]["deviation_from_paper"] is None
    assert r["data"]["n_heads"] == 3 and per.classes_of_head_ == [[0], [1], [2]]
    scores = per.decision_function(X[40:])
    assert scores.shape == (40, 3)
    # class c is scored by head c's Fisher vectors and SVM
    coef, intercept = per.svms_[1]
    np.testing.assert_allclose(scores[:, 1], per.encode(X[40:], head=1) @ coef[0] + intercept[0], rtol=1e-5)
    with pytest.raises(AttributeError, match="one head per class"):
        per.head_  # noqa: B018
    shared = FisherE2E(epochs=0, svm_loss="squared_hinge", progress=False).fit(X[:40], Y[:40], gmm)
    assert "per class" in shared.results_["settings"]["deviation_from_paper"]
    json.dumps(r)
