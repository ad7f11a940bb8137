"""The Fisher-vector layer as torch modules, for end-to-end training (Wieschollek et al., sections 3-4).

:class:`FisherVectorLayer` computes eqs. (2)-(4) of descriptor sets (B, T, D), padded sets with a mask,
from GMM parameters kept unconstrained as in the paper: weights w_k = s(nu_k) / sum_l s(nu_l) with s the
logistic sigmoid (eq. 11) and variances sigma2_k = eps + exp(zeta_k) (eq. 12, one zeta per component and
dimension). :class:`FVNormalization` is the signed power and L2 normalisation (eqs. 5, 6 and 14) with a
finite gradient at 0. :class:`FeatureTransform` is tanh(W z + b); :class:`FisherHead` chains the three
with the fixed map from raw descriptors to the head's inputs. Gradients come from autograd
(vector-Jacobian products through the sufficient statistics, O(B T K D) per batch); no Jacobian is
ever formed. The training loop that sends an SVM's signal back lives in
:mod:`deepfeat.training.fisher_e2e`.

Exact start of the feature transform
    The paper feeds the transform inputs z chosen so that tanh(W z + b) equals the fixed descriptors x
    at the start, with W Xavier-initialised. :meth:`FeatureTransform.preimage` does exactly that: W0 is
    drawn by Xavier (uniform), b0 = 0, and z = W0^-1 (atanh(u) - b0) is computed once in float64 from u,
    the descriptors mapped into (-tanh_range, tanh_range) by a fixed per-dimension affine map (the head's
    ``shift`` and ``scale``). A per-dimension affine map changes no Fisher vector of a diagonal GMM
    (posteriors and (x - mu) / sigma are invariant when the GMM is mapped with it), so with the GMM
    mapped along the head starts from exactly the Fisher vectors of the fixed descriptors. But W0^-1
    inflates z, and with it the gradient of W, by up to the condition number of W0, which for a Xavier
    draw is large (D = 64: a median of about 270 over 20 seeds, once 1.3e4; the constructor warns above
    1e3), so two other starts are offered: ``"orthogonal"``, a random orthogonal W0, whose entries have
    exactly the Xavier variance 1/D but whose condition number is 1, and ``"identity"``, W0 = I.
    Descriptors outside the range of the affine map are clipped to (-1, 1) before atanh (a warning
    says how many).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher._common import check_convention, check_power
from deepfeat.features.fisher.encoding import (
    fisher_dim,
    fv_from_statistics,
    fv_statistics,
    normalize_fv,
    working_dtype,
)
from deepfeat.features.fisher.gmm import GMMParams, as_gmm_params
from deepfeat.validation import check_choice

TRANSFORM_INITS = ("xavier", "orthogonal", "identity")

__all__ = ["TRANSFORM_INITS", "FVNormalization", "FeatureTransform", "FisherHead", "FisherVectorLayer"]


class FVNormalization(nn.Module):
    """Signed power sign(z)|z|^power (None: skip) and L2 normalisation of Fisher vectors (B, d)."""

    def __init__(self, power: float | None = 0.5, l2: bool = True, eps: float = 1e-12):
        super().__init__()
        check_power(power)
        self.power, self.l2, self.eps = power, l2, eps

    def forward(self, fv: torch.Tensor) -> torch.Tensor:
        return normalize_fv(fv, self.power, self.l2, self.eps)

    def extra_repr(self) -> str:
        return f"power={self.power}, l2={self.l2}"


class FisherVectorLayer(nn.Module):
    """Fisher vectors (eqs. 2-4) of descriptor sets, with trainable GMM parameters.

    Parameters ``nu`` (K,), ``means`` (K, D), ``zeta`` (K, D): weights softmax-free normalised
    sigmoids of ``nu`` (eq. 11), variances ``eps + exp(zeta)`` (eq. 12). Build it from a fitted GMM
    with :meth:`from_gmm`; ``forward(x, mask=None)`` maps (B, T, D) descriptors (``mask`` (B, T) true
    for real descriptors of padded sets) to unnormalised Fisher vectors (B, (2D + 1) K) in the layer's
    dtype (descriptors of another floating dtype are converted to it).
    """

    def __init__(self, n_components: int, dim: int, *, eps: float = 1e-6, convention: str = "paper"):
        super().__init__()
        check_convention(convention)
        if not eps > 0:
            raise ConfigError(f"eps must be positive, got {eps!r}")
        self.eps, self.convention = float(eps), convention
        self.nu = nn.Parameter(torch.zeros(n_components))
        self.means = nn.Parameter(torch.zeros(n_components, dim))
        self.zeta = nn.Parameter(torch.zeros(n_components, dim))

    @classmethod
    def from_gmm(
        cls,
        gmm,
        *,
        eps: float | None = None,
        convention: str = "paper",
        dtype: torch.dtype = torch.float32,
    ) -> FisherVectorLayer:
        """A layer whose GMM is exactly ``gmm`` (DiagonalGMM, GMMParams or diagonal GaussianMixture).

        ``eps``: the variance floor of eq. (12); default 1e-3 times the smallest variance. It must be
        below every variance of ``gmm``.
        """
        p = as_gmm_params(gmm).to("cpu", torch.float64)
        vmin = float(p.variances.min())
        eps = 1e-3 * vmin if eps is None else float(eps)
        if not 0 < eps < vmin:
            raise ConfigError(f"eps must be in (0, smallest GMM variance {vmin:.3g}), got {eps!r}")
        layer = cls(p.n_components, p.dim, eps=eps, convention=convention).to(torch.float64)
        w = p.weights / p.weights.sum()
        s = w / (2 * w.max())  # sigmoid values in (0, 1/2]: normalised they give back w exactly
        with torch.no_grad():
            layer.nu.copy_(torch.log(s / (1 - s)))
            layer.means.copy_(p.means)
            layer.zeta.copy_(torch.log(p.variances - eps))
        return layer.to(dtype)

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def out_dim(self) -> int:
        return fisher_dim(self.n_components, self.dim)

    def gmm_params(self) -> GMMParams:
        """The current GMM (differentiable functions of the layer's parameters)."""
        s = torch.sigmoid(self.nu)
        return GMMParams(s / s.sum(), self.means, self.eps + torch.exp(self.zeta))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise DataError(f"descriptors must be (B, T, {self.dim}), got shape {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise DataError(f"descriptor sets are empty (shape {tuple(x.shape)}); each needs at least one")
        if not x.is_floating_point():
            raise DataError(f"descriptors must be floating point, got {x.dtype}")
        p = self.gmm_params()
        x = x.to(p.means.dtype)  # the layer's dtype, as its parameters
        # shifting x and the means by one constant changes neither the value nor the gradients, and
        # keeps the expanded quadratic forms accurate in float32
        c = ((p.weights[:, None] * p.means).sum(0)).detach()
        shifted = GMMParams(p.weights, p.means - c, p.variances)
        # ... unless some component lies too far from the mixture mean for float32: then in float64
        dtype = working_dtype(p, x.dtype)
        if dtype != x.dtype:
            shifted, c = shifted.to(dtype=dtype), c.to(dtype)
        # one chunk when autograd records (it keeps every chunk's tensors for the backward pass anyway);
        # cache-sized chunks otherwise
        rows = x.shape[0] * x.shape[1] if torch.is_grad_enabled() else None
        stats = fv_statistics(x.to(dtype), shifted, mask, rows, c)
        return fv_from_statistics(*stats, shifted, self.convention).to(x.dtype)


class FeatureTransform(nn.Module):
    """tanh(W z + b) applied to every descriptor, W (D, D) and b (D,) trainable.

    ``init``: W0 Xavier-uniform (``"xavier"``, seeded by ``random_state``), a random orthogonal matrix
    (``"orthogonal"``) or I (``"identity"``); b0 = 0.
    :meth:`preimage` gives the inputs z with tanh(W0 z + b0) = u for descriptors u in (-1, 1), so the
    transform starts as the identity on them.
    """

    def __init__(self, dim: int, init: str = "xavier", random_state: int | None = 0):
        super().__init__()
        check_choice("transform init", init, TRANSFORM_INITS)
        gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
        if init == "xavier":
            bound = math.sqrt(6.0 / (dim + dim))
            w0 = (torch.rand((dim, dim), generator=gen, dtype=torch.float64) * 2 - 1) * bound
        elif init == "orthogonal":
            q, r = torch.linalg.qr(torch.randn((dim, dim), generator=gen, dtype=torch.float64))
            w0 = q * torch.sign(torch.diagonal(r))
        else:
            w0 = torch.eye(dim, dtype=torch.float64)
        cond = float(torch.linalg.cond(w0))
        if cond > 1e3:
            warnings.warn(
                f"the {init} draw of W0 has condition number {cond:.3g}: its inverse inflates the "
                "transform's inputs and the gradient of W; transform_init='orthogonal' has Xavier's entry "
                "variance and condition number 1",
                stacklevel=2,
            )
        self.weight = nn.Parameter(w0.clone())
        self.bias = nn.Parameter(torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("weight0", w0.clone())
        self.register_buffer("bias0", torch.zeros(dim, dtype=torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ self.weight.T + self.bias)

    def preimage(self, u: torch.Tensor, clip: float = 1e-6) -> torch.Tensor:
        """Inputs z with tanh(W0 z + b0) = u (float64 solve), in the dtype of ``u``; values of ``u``
        outside (-1 + clip, 1 - clip) are clipped first."""
        u64 = u.to(torch.float64)
        lim = 1 - clip
        outside = int((u64.abs() > lim).sum())
        if outside:
            warnings.warn(
                f"{outside} descriptor values lie outside (-1, 1) of the tanh transform and were clipped",
                stacklevel=2,
            )
        # W0 and b0 in the precision the forward pass uses them, solved in float64
        a = torch.atanh(u64.clamp(-lim, lim)) - self.bias0.to(torch.float64)
        w0 = self.weight0.to(torch.float64)
        z = torch.linalg.solve(w0, a.reshape(-1, a.shape[-1]).T).T
        return z.reshape(u.shape).to(u.dtype)


class FisherHead(nn.Module):
    """Optional feature transform, Fisher-vector layer and normalisation, with the fixed map from raw
    descriptors to the head's inputs (:meth:`inputs`)."""

    def __init__(
        self,
        layer: FisherVectorLayer,
        norm: FVNormalization,
        transform: FeatureTransform | None = None,
        shift: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ):
        super().__init__()
        self.transform, self.layer, self.norm = transform, layer, norm
        d = layer.dim
        self.register_buffer("shift", torch.zeros(d) if shift is None else shift.clone())
        self.register_buffer("scale", torch.ones(d) if scale is None else scale.clone())

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The head's fixed inputs for raw descriptors ``x`` (..., D)."""
        if self.transform is None:
            return x
        u = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        return self.transform.preimage(u)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.transform(z) if self.transform is not None else z
        return self.norm(self.layer(x, mask))
