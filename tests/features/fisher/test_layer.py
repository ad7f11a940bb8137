"""The Fisher-vector layer: autograd against finite differences and against the closed-form derivatives of
the paper's appendix (with its errors pinned down), eq. (15), and the layer's exact start from a GMM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian
from torch.func import functional_call

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher import (
    DiagonalGMM,
    FeatureTransform,
    FisherVectorLayer,
    FVNormalization,
    GMMParams,
    fisher_vectors,
    fv_from_statistics,
    fv_statistics,
    log_joint,
    normalize_fv,
)


def small_gmm(k: int = 3, d: int = 3, seed: int = 0) -> GMMParams:
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, k)
    return GMMParams(
        torch.as_tensor(w / w.sum()),
        torch.as_tensor(rng.normal(size=(k, d))),
        torch.as_tensor(rng.uniform(0.4, 1.6, (k, d))),
    )


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


def test_layer_starts_as_the_fitted_gmm():
    gmm = DiagonalGMM(4, random_state=0, tol=1e-4).fit(np.random.default_rng(7).normal(size=(400, 3)))
    layer = FisherVectorLayer.from_gmm(gmm, dtype=torch.float64)
    p = layer.gmm_params()
    np.testing.assert_allclose(p.weights.detach().numpy(), gmm.weights_, rtol=1e-12)
    np.testing.assert_allclose(p.variances.detach().numpy(), gmm.variances_, rtol=1e-12)
    x = torch.as_tensor(np.random.default_rng(8).normal(size=(3, 50, 3)))
    torch.testing.assert_close(layer(x), fisher_vectors(x, gmm, power=None, l2=False, dtype=torch.float64))
    assert layer.eps < gmm.variances_.min()
    with pytest.raises(ConfigError, match="eps must be in"):
        FisherVectorLayer.from_gmm(gmm, eps=float(gmm.variances_.min()) * 2)


def test_a_float32_layer_on_far_apart_components_matches_float64():
    # components 1,000 sigma from the mixture mean: float32's expanded quadratic forms cancelled (0.5
    # relative error); the layer computes in float64 then and keeps its gradients
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 1, (2000, 4)), rng.normal(1000, 1, (2000, 4))])
    gmm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(pts)
    x = np.stack(
        [np.concatenate([rng.normal(0, 1, (50, 4)), rng.normal(1000, 1, (50, 4))]) for _ in range(3)]
    )
    l32, l64 = FisherVectorLayer.from_gmm(gmm), FisherVectorLayer.from_gmm(gmm, dtype=torch.float64)
    x32 = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    a = l32(x32)
    assert a.dtype == torch.float32
    b = l64(torch.tensor(x))
    # float32 inputs and parameters at magnitude 1,000 themselves round at about 1e-4 of a sigma
    assert float((a.detach().double() - b.detach()).abs().max() / b.detach().abs().max()) < 1e-3
    a.sum().backward()
    assert x32.grad is not None and torch.isfinite(x32.grad).all()


def test_layer_inputs_empty_or_of_another_dtype():
    layer = FisherVectorLayer.from_gmm(small_gmm())  # float32
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    out = layer(x)  # converted to the layer's dtype, as its parameters
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, layer(x.float()))
    with pytest.raises(DataError, match="empty"):
        layer(torch.zeros(2, 0, 3))
