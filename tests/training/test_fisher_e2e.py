"""The end-to-end Fisher-vector layer: autograd against finite differences and against the closed-form
derivatives of the paper's appendix, the exact start of the feature transform, and training."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian
from torch.func import functional_call

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher import (
    DiagonalGMM,
    GMMParams,
    fisher_vectors,
    fv_from_statistics,
    fv_statistics,
    normalize_fv,
)
from deepfeat.training.fisher_e2e import (
    FeatureTransform,
    FisherE2E,
    FisherVectorLayer,
    FVNormalization,
    train_fisher_e2e,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_gmm(k: int = 3, d: int = 3, seed: int = 0) -> GMMParams:
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, k)
    return GMMParams(
        torch.as_tensor(w / w.sum()),
        torch.as_tensor(rng.normal(size=(k, d))),
        torch.as_tensor(rng.uniform(0.4, 1.6, (k, d))),
    )


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


# --- gradcheck --------------------------------------------------------------------------------------


def test_layer_gradcheck_wrt_descriptors_and_gmm_parameters():
    layer = FisherVectorLayer.from_gmm(small_gmm(), dtype=torch.float64)
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(2, 6, 3)), requires_grad=True)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False  # a padded set
    names = ("nu", "means", "zeta")
    params = tuple(getattr(layer, n).detach().clone().requires_grad_(True) for n in names)

    def f(x, *p):
        return functional_call(layer, dict(zip(names, p)), (x, mask))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_normalisation_and_transform_gradcheck():
    z = torch.tensor(np.random.default_rng(2).normal(size=(3, 7)), requires_grad=True)
    assert torch.autograd.gradcheck(FVNormalization(0.5, True), (z,), eps=1e-7, atol=1e-6)
    assert torch.autograd.gradcheck(FVNormalization(0.3, False), (z,), eps=1e-7, atol=1e-6)
    ft = FeatureTransform(4, "xavier").double()
    u = torch.tensor(np.random.default_rng(3).normal(size=(2, 5, 4)), requires_grad=True)
    w = ft.weight.detach().clone().requires_grad_(True)
    b = ft.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda u, w, b: functional_call(ft, {"weight": w, "bias": b}, (u,)), (u, w, b), eps=1e-6, atol=1e-6
    )


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


# --- the appendix's closed forms --------------------------------------------------------------------


class Appendix:
    """The quantities of the paper's appendix for one image: gamma (T, K), alpha and beta (T, K, D)."""

    def __init__(self, T: int = 7, K: int = 3, D: int = 3, seed: int = 5):
        p = small_gmm(K, D, seed)
        self.lam, self.mu, self.var = p.weights, p.means, p.variances
        self.x = torch.as_tensor(np.random.default_rng(seed + 1).normal(size=(T, D)))
        self.T, self.K, self.D = T, K, D
        self.sig = self.var.sqrt()
        diff = self.x[:, None, :] - self.mu  # (T, K, D)
        self.al, self.be = diff / self.sig, diff / self.var
        logp = self.lam.log() - 0.5 * ((2 * np.pi * self.var).log().sum(1) + (diff**2 / self.var).sum(2))
        self.g = torch.softmax(logp, dim=1)
        self.IK, self.ID = torch.eye(K, dtype=torch.float64), torch.eye(D, dtype=torch.float64)
        self.N = self.IK[None] - self.g[:, None, :]  # (T, k, s): delta_ks - gamma_s
        self.M = self.IK[None] - 2 * self.g[:, None, :]  # (T, k, s): delta_ks - 2 gamma_s
        # eq. (9): d gamma_k / d x_e, (T, K, D)
        self.dg = self.g[:, :, None] * (-self.be + torch.einsum("tne,tn->te", self.be, self.g)[:, None, :])

    @staticmethod
    def fv(lam, mu, var, x):
        """Eqs. (2)-(4) as a function of free (not renormalised) weights, as the appendix treats them."""
        p = GMMParams(lam, mu, var)
        return fv_from_statistics(*fv_statistics(x[None], p), p)[0]

    def jacobians(self):
        """Autograd Jacobians of (F_lambda, F_mu, F_sigma2) w.r.t. lambda, mu, sigma2 and x."""
        K, D, T = self.K, self.D, self.T
        J = jacobian(self.fv, (self.lam, self.mu, self.var, self.x))
        split = {}
        for name, j, shape in zip(("lam", "mu", "var", "x"), J, ((K,), (K, D), (K, D), (T, D))):
            split[name] = (j[:K].reshape(K, *shape), j[K : K + K * D].reshape(K, D, *shape), j[K + K * D :])
            split[name] = (*split[name][:2], split[name][2].reshape(K, D, *shape))
        return split


@pytest.fixture(scope="module")
def app():
    return Appendix()


@pytest.fixture(scope="module")
def jac(app):
    return app.jacobians()


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def differs(a, b):
    assert (a - b).abs().max() > 1e-3 * b.abs().max()


def test_posterior_derivatives(app):
    """d gamma / d (lambda, mu, sigma2, x): the appendix's last three formulas and eq. (9) hold."""

    def gamma(lam, mu, var, x):
        from deepfeat.features.fisher import log_joint

        return torch.softmax(log_joint(x, GMMParams(lam, mu, var)), dim=1)

    j_lam, j_mu, j_var, j_x = jacobian(gamma, (app.lam, app.mu, app.var, app.x))
    g, lam = app.g, app.lam
    close(j_lam, g[:, :, None] * (app.IK / lam[:, None] - g[:, None, :] / lam[None, None, :]))
    close(j_mu, torch.einsum("tk,tks,tse->tkse", g, app.N, app.be))
    close(j_var, torch.einsum("tk,tks,tse->tkse", g, app.N, (app.al**2 - 1) / (2 * app.var)))
    close(torch.einsum("tkue->tke", j_x), app.dg)  # gamma(x_t) depends on x_t only
    close(torch.einsum("tkte->tke", j_x), app.dg)


def test_weight_derivatives(app, jac):
    """d F / d lambda_s (first three formulas), with the factor 1/T of eqs. (2)-(4) that the
    appendix leaves out throughout. The third formula as printed has the indices of its left-hand side
    swapped (d F_sigma2_s / d lambda_k); its right-hand side is d F_sigma2_k / d lambda_s."""
    g, lam, al, T = app.g, app.lam, app.al, app.T
    den = 2 * lam[None, :] * lam.sqrt()[:, None]  # [k, s]: 2 lambda_s sqrt(lambda_k)
    a = (torch.einsum("sk,tk->ks", app.IK, g - lam) - 2 * torch.einsum("ts,tk->ks", g, g)) / den / T
    close(jac["lam"][0], a)
    b = torch.einsum("tk,tkd,tks->kds", g, al, app.M) / den[:, None, :] / T
    close(jac["lam"][1], b)
    c = torch.einsum("tk,tkd,tks->kds", g, al**2 - 1, app.M) / (den[:, None, :] * np.sqrt(2)) / T
    close(jac["lam"][2], c)


def test_mean_derivatives(app, jac):
    """d F / d mu_s. The printed d F_sigma2 / d mu has ([alpha_k]_d - 1) where the derivative of
    gamma_k (alpha_k^2 - 1) needs ([alpha_k]_d^2 - 1); the printed form does not match."""
    g, al, N, T = app.g, app.al, app.N, app.T
    sq = app.lam.sqrt()
    kron = torch.einsum("tk,ks,de->kdse", g, app.IK, app.ID)  # sum_t gamma_k delta_ks delta_de
    d = torch.einsum("tk,tks,tse->kse", g, N, al) / (app.sig[None] * sq[:, None, None]) / T
    close(jac["mu"][0], d)
    e = (torch.einsum("tk,tks,tse,tkd->kdse", g, N, al, al) - kron) / (app.sig * sq[:, None, None, None]) / T
    close(jac["mu"][1], e)

    def f(square: bool):
        ak = al**2 if square else al
        num = torch.einsum("tk,tse,tks,tkd->kdse", g, al, N, ak - 1)
        num = num - 2 * torch.einsum("tk,tse,ks,de->kdse", g, al, app.IK, app.ID)
        return num / (app.sig * (2 * app.lam).sqrt()[:, None, None, None]) / T

    close(jac["mu"][2], f(square=True))
    differs(f(square=False), jac["mu"][2])


def test_variance_derivatives(app, jac):
    """d F / d sigma2_s. The printed d F_mu / d sigma2 and d F_sigma2 / d sigma2 lack the "- 1" of
    d gamma_s / d sigma2_s (its factor is alpha_s^2 - 1, as the appendix's own gamma derivative says),
    and the latter also the "- 1" of eq. (4); the printed forms do not match, the corrected ones do."""
    g, al, N, T, var = app.g, app.al, app.N, app.T, app.var
    sq = app.lam.sqrt()
    gg = torch.einsum("tk,tks,tse->kse", g, N, al**2 - 1) / (2 * var[None] * sq[:, None, None]) / T
    close(jac["var"][0], gg)

    def h(c: float):
        num = torch.einsum("tk,tkd,tks,tse->kdse", g, al, N, al**2 - c)
        num = num - torch.einsum("tk,tkd,ks,de->kdse", g, al, app.IK, app.ID)
        return num / (2 * var * sq[:, None, None, None]) / T

    def i(c: float):
        num = torch.einsum("tk,tks,tse,tkd->kdse", g, N, al**2 - c, al**2 - c)
        num = num - 2 * torch.einsum("tk,ks,de,tkd->kdse", g, app.IK, app.ID, al**2)
        return num / (2 * var * (2 * app.lam).sqrt()[:, None, None, None]) / T

    close(jac["var"][1], h(1.0))
    differs(h(0.0), jac["var"][1])
    close(jac["var"][2], i(1.0))
    differs(i(0.0), jac["var"][2])


def test_descriptor_derivatives(app, jac):
    """d F / d x_t (per descriptor, with 1/T). The printed d F_sigma2 / d x has [alpha_k^2]_d where
    d/dx of gamma_k (alpha_k^2 - 1) gives ([alpha_k^2]_d - 1); the printed form does not match."""
    g, al, dg, T = app.g, app.al, app.dg, app.T
    sq = app.lam.sqrt()
    close(jac["x"][0], dg.permute(1, 0, 2) / sq[:, None, None] / T)
    mu_part = torch.einsum("tke,tkd->kdte", dg, al) + torch.einsum("tk,de,kd->kdte", g, app.ID, 1 / app.sig)
    close(jac["x"][1], mu_part / sq[:, None, None, None] / T)

    def var_part(c: float):
        num = torch.einsum("tke,tkd->kdte", dg, al**2 - c)
        num = num + 2 * torch.einsum("tk,de,tkd->kdte", g, app.ID, app.be)
        return num / (2 * app.lam).sqrt()[:, None, None, None] / T

    close(jac["x"][2], var_part(1.0))
    differs(var_part(0.0), jac["x"][2])


def test_normalisation_jacobian_eq_15():
    """Eq. (15) as printed, 2 / ||x||_1 (I - x^ x^T / x^T x^), is not the Jacobian of eq. (14) for
    alpha = 1/2: the signed square root contributes diag(1 / (2 sqrt|x_i|)) and the L2 step the factor
    1 / ||x^||_2 = 1 / sqrt(||x||_1), i.e. the Jacobian is ||x||_1^(-1/2) P diag(1 / (2 sqrt|x|))."""
    x = torch.as_tensor(np.random.default_rng(6).normal(size=6))
    J = jacobian(lambda z: normalize_fv(z[None], 0.5, True)[0], x)
    xh = x.sign() * x.abs().sqrt()
    P = torch.eye(6, dtype=torch.float64) - torch.outer(xh, xh) / (xh @ xh)
    l1 = x.abs().sum()
    close(J, P @ torch.diag(1 / (2 * x.abs().sqrt())) / l1.sqrt())
    differs(2 / l1 * P, J)


# --- the layer and the exact start ------------------------------------------------------------------


def test_layer_starts_as_the_fitted_gmm():
    gmm = DiagonalGMM(4, random_state=0, tol=1e-4).fit(np.random.default_rng(7).normal(size=(400, 3)))
    layer = FisherVectorLayer.from_gmm(gmm, dtype=torch.float64)
    p = layer.gmm_params()
    np.testing.assert_allclose(p.weights.detach().numpy(), gmm.weights_, rtol=1e-12)
    np.testing.assert_allclose(p.variances.detach().numpy(), gmm.variances_, rtol=1e-12)
    x = torch.as_tensor(np.random.default_rng(8).normal(size=(3, 50, 3)))
    torch.testing.assert_close(layer(x), fisher_vectors(x, gmm, power=None, l2=False))
    assert layer.eps < gmm.variances_.min()
    with pytest.raises(ConfigError, match="eps must be in"):
        FisherVectorLayer.from_gmm(gmm, eps=float(gmm.variances_.min()) * 2)


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
