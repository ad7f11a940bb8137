"""Diagonal Gaussian mixtures: the parameter triple every Fisher-vector function takes, conversion from
a fitted model, the joint log-densities, and :class:`DiagonalGMM`, a mixture fitted by EM in torch."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher._common import check_random_state
from deepfeat.features.fisher.descriptors import _to_tensor
from deepfeat.validation import check_device, check_float, check_int, check_n_features

__all__ = ["DiagonalGMM", "GMMParams", "as_gmm_params", "log_joint"]


@dataclass(frozen=True)
class GMMParams:
    """Parameters of a diagonal-covariance GMM: ``weights`` (K,), ``means`` (K, D), ``variances`` (K, D)."""

    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GMMParams:
        return GMMParams(
            *(t.to(device=device, dtype=dtype) for t in (self.weights, self.means, self.variances))
        )

    def check(self) -> GMMParams:
        """Raise ConfigError unless the shapes agree and weights and variances are positive and finite."""
        w, m, v = self.weights, self.means, self.variances
        if m.ndim != 2 or w.shape != (m.shape[0],) or v.shape != m.shape:
            raise ConfigError(
                f"GMM parameters must be weights (K,), means (K, D), variances (K, D); got "
                f"{tuple(w.shape)}, {tuple(m.shape)}, {tuple(v.shape)}"
            )
        if not (torch.isfinite(w).all() and torch.isfinite(m).all() and torch.isfinite(v).all()):
            raise ConfigError("GMM parameters hold NaN or infinite values")
        if (w <= 0).any() or (v <= 0).any():
            raise ConfigError("GMM weights and variances must be positive")
        total = float(w.double().sum())
        if abs(total - 1.0) > 1e-4:
            raise ConfigError(
                f"GMM weights must sum to 1 (a mixture), they sum to {total:.6g}; divide by their sum"
            )
        return self


def as_gmm_params(gmm) -> GMMParams:
    """GMMParams of a fitted :class:`DiagonalGMM`, a GMMParams, or a fitted scikit-learn
    ``GaussianMixture(covariance_type="diag")`` (float64, on the CPU for the last)."""
    if isinstance(gmm, GMMParams):
        return gmm.check()
    if isinstance(gmm, DiagonalGMM):
        check_is_fitted(gmm, "params_")
        return gmm.params_
    cov_type = getattr(gmm, "covariance_type", None)
    if cov_type is not None and hasattr(gmm, "means_"):
        if cov_type != "diag":
            raise ConfigError(
                f"a Fisher vector needs a diagonal GMM (covariance_type='diag'), got {cov_type!r}"
            )
        return GMMParams(
            *(
                torch.as_tensor(np.asarray(a, dtype=np.float64))
                for a in (gmm.weights_, gmm.means_, gmm.covariances_)
            )
        ).check()
    raise ConfigError(
        "gmm must be a fitted DiagonalGMM, GMMParams or diagonal sklearn GaussianMixture, "
        f"got {type(gmm).__name__}"
    )


def log_joint(x: torch.Tensor, params: GMMParams) -> torch.Tensor:
    """log(w_k N(x; mu_k, sigma2_k)) for descriptors ``x`` (..., D): (..., K)."""
    prec = params.variances.reciprocal()
    const = params.weights.log() - 0.5 * (
        params.dim * math.log(2 * math.pi)
        + params.variances.log().sum(1)
        + (params.means.square() * prec).sum(1)
    )
    return x.square() @ (-0.5 * prec).T + x @ (params.means * prec).T + const


class DiagonalGMM(DensityMixin, BaseEstimator):
    """Gaussian mixture with diagonal covariances, fitted by EM from a k-means(++) start.

    EM stops when the mean log-likelihood changes by less than ``tol`` relative to its value, or after
    ``max_iter`` iterations (with a ConvergenceWarning). Variances are kept at or above ``var_floor``
    times the mean per-dimension variance of the data (the exact constrained M-step, so the likelihood
    never decreases). Responsibilities use log-sum-exp; all EM arithmetic is float64 on ``device``.

    Attributes after ``fit``: ``params_`` (GMMParams, float64 on the CPU), ``weights_``, ``means_``,
    ``variances_`` (NumPy), ``lower_bound_`` (mean log-likelihood of the fitted model on the data),
    ``n_iter_``, ``converged_``.
    """

    def __init__(
        self,
        n_components: int = 32,
        *,
        tol: float = 1e-6,
        max_iter: int = 300,
        var_floor: float = 1e-6,
        kmeans_iter: int = 30,
        random_state: int | None = 0,
        device: str = "cpu",
    ):
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.var_floor = var_floor
        self.kmeans_iter = kmeans_iter
        self.random_state = random_state
        self.device = device

    def _validate(self) -> torch.device:
        check_int("n_components", self.n_components, 1)
        check_int("max_iter", self.max_iter, 1)
        check_int("kmeans_iter", self.kmeans_iter, 0)
        check_random_state(self.random_state)
        check_float("tol", self.tol, 0, low_open=True)
        check_float("var_floor", self.var_floor, 0, 1, low_open=True, high_open=True)
        return check_device(self.device)

    def _data(self, X, device: torch.device, dim: int | None = None) -> torch.Tensor:
        """``X`` as float64 (N, D) descriptors on ``device``; ``dim``: the D the mixture was fitted on."""
        x = _to_tensor(X, "X").detach()  # fitting is not differentiable
        if x.ndim == 1:
            raise DataError(
                f"X must be a 2-D (n_descriptors, D) array, got a 1-D one of shape {tuple(x.shape)}; "
                "Reshape your data: X.reshape(1, -1) for one descriptor"
            )
        if x.ndim != 2 or 0 in x.shape:
            raise DataError(f"X must be a non-empty (n_descriptors, D) array, got shape {tuple(x.shape)}")
        if dim is not None:
            check_n_features(x.shape[1], dim, self, "descriptor dimension")
        x = x.to(device=device, dtype=torch.float64)
        if not bool(torch.isfinite(x).all()):
            rows = torch.nonzero(~torch.isfinite(x).all(1)).flatten()
            raise DataError(
                f"X holds NaN or infinite values in {rows.numel()} descriptors (first rows: "
                f"{rows[:5].tolist()}); clean or drop them"
            )
        return x

    def fit(self, X, y=None, init=None) -> DiagonalGMM:
        """Fit on descriptors ``X`` (N, D). ``init``: starting parameters (GMMParams, DiagonalGMM or
        diagonal sklearn GaussianMixture) instead of k-means."""
        device = self._validate()
        x = self._data(X, device)
        n, d = x.shape
        k = int(self.n_components)
        if n < max(k, 2):
            raise DataError(
                f"{n} descriptors are too few for n_components={k}; give at least {max(k, 2)}"
                + (" or lower n_components" if k > 1 else " (a variance needs two)")
            )
        centre = x.mean(0)
        x = x - centre
        floor = float(self.var_floor) * float(x.var(0).mean())
        if floor <= 0:
            raise DataError("all descriptors are identical; a GMM cannot be fitted")
        if init is None:
            w, mu, var = self._kmeans_init(x, floor)
        else:
            p = as_gmm_params(init).to(device, torch.float64)
            if p.n_components != k or p.dim != d:
                raise ConfigError(
                    f"init has {p.n_components} components of dimension {p.dim}; expected {k} of {d}"
                )
            w, mu, var = p.weights / p.weights.sum(), p.means - centre, p.variances
        x2 = x.square()
        prev = None
        converged = False
        n_iter = 0
        for it in range(int(self.max_iter) + 1):
            params = GMMParams(w, mu, var)
            logp = log_joint(x, params)
            lse = torch.logsumexp(logp, dim=1)
            ll = float(lse.mean())
            if prev is not None and abs(ll - prev) <= float(self.tol) * max(abs(prev), 1e-12):
                converged = True
                break
            if it == int(self.max_iter):
                break
            resp = torch.exp(logp - lse[:, None])
            nk = resp.sum(0)
            alive = nk > 1e-10 * n
            safe = nk.clamp_min(1e-300)[:, None]
            new_mu = (resp.T @ x) / safe
            new_var = ((resp.T @ x2) / safe - new_mu.square()).clamp_min(floor)
            mu = torch.where(alive[:, None], new_mu, mu)
            var = torch.where(alive[:, None], new_var, var)
            w = (nk / n).clamp_min(1e-300)
            w = w / w.sum()
            prev = ll
            n_iter = it + 1
        if not converged:
            warnings.warn(
                f"DiagonalGMM(n_components={k}) did not converge in max_iter={self.max_iter} EM iterations "
                f"(relative change above tol={self.tol:g}); raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.params_ = GMMParams(w, mu + centre, var).to("cpu")
        self.lower_bound_ = ll
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.n_features_in_ = d
        return self

    def _kmeans_init(self, x: torch.Tensor, floor: float):
        """k-means++ seeding and Lloyd iterations; weights, means and variances of the clusters."""
        rng = np.random.default_rng(self.random_state)
        n, _ = x.shape
        k = int(self.n_components)
        centres = torch.empty((k, x.shape[1]), dtype=x.dtype, device=x.device)
        centres[0] = x[int(rng.integers(n))]
        d2 = (x - centres[0]).square().sum(1)
        for j in range(1, k):
            total = float(d2.sum())
            if total <= 0:
                raise DataError(
                    f"the descriptors have fewer than n_components={k} distinct values; lower n_components"
                )
            p = (d2 / total).cpu().numpy()
            centres[j] = x[int(rng.choice(n, p=p / p.sum()))]
            d2 = torch.minimum(d2, (x - centres[j]).square().sum(1))
        xn = x.square().sum(1)
        labels = None
        for _ in range(int(self.kmeans_iter)):
            dist = xn[:, None] - 2 * x @ centres.T + centres.square().sum(1)
            new = dist.argmin(1)
            if labels is not None and torch.equal(new, labels):
                break
            labels = new
            counts = torch.bincount(labels, minlength=k)
            sums = torch.zeros_like(centres).index_add_(0, labels, x)
            empty = torch.nonzero(counts == 0).flatten()
            if empty.numel():  # re-seed empty clusters at the points farthest from their centre
                far = dist.gather(1, labels[:, None]).flatten().topk(empty.numel()).indices
                sums[empty], counts[empty] = x[far], 1
            centres = sums / counts[:, None].to(x.dtype)
        if labels is None:
            labels = (xn[:, None] - 2 * x @ centres.T + centres.square().sum(1)).argmin(1)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sq = torch.zeros_like(centres).index_add_(0, labels, x.square())
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        safe = counts.clamp_min(1)[:, None]
        means = torch.where(counts[:, None] > 0, sums / safe, centres)
        var = torch.where(counts[:, None] > 1, sq / safe - means.square(), x.var(0)).clamp_min(floor)
        w = counts.clamp_min(0.5) / counts.clamp_min(0.5).sum()
        return w, means, var

    # -- fitted model ----------------------------------------------------------------------------------
    def _params(self, device=None) -> GMMParams:
        check_is_fitted(self, "params_")
        return self.params_.to(device)

    @property
    def weights_(self) -> np.ndarray:
        return self._params().weights.numpy()

    @property
    def means_(self) -> np.ndarray:
        return self._params().means.numpy()

    @property
    def variances_(self) -> np.ndarray:
        return self._params().variances.numpy()

    def score_samples(self, X) -> np.ndarray:
        """Log-likelihood of every descriptor (N,)."""
        params = self._params(check_device(self.device))
        x = self._data(X, params.means.device, params.dim)
        return torch.logsumexp(log_joint(x, params), dim=1).cpu().numpy()

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of the descriptors."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X) -> np.ndarray:
        """Posterior probabilities (N, K) of the components."""
        params = self._params(check_device(self.device))
        x = self._data(X, params.means.device, params.dim)
        return torch.softmax(log_joint(x, params), dim=1).cpu().numpy()

    def to_sklearn(self):
        """An equivalent fitted scikit-learn ``GaussianMixture(covariance_type="diag")`` (for example
        for ``skimage.feature.fisher_vector``)."""
        from sklearn.mixture import GaussianMixture

        p = self._params()
        gm = GaussianMixture(n_components=p.n_components, covariance_type="diag")
        gm.weights_ = p.weights.numpy().copy()
        gm.means_ = p.means.numpy().copy()
        gm.covariances_ = p.variances.numpy().copy()
        gm.precisions_ = 1.0 / gm.covariances_
        gm.precisions_cholesky_ = 1.0 / np.sqrt(gm.covariances_)
        gm.converged_, gm.n_iter_, gm.lower_bound_ = self.converged_, self.n_iter_, self.lower_bound_
        gm.n_features_in_ = p.dim
        return gm
