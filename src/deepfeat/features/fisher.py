"""Fisher vectors of local descriptors: conv-map descriptors, PCA, a diagonal GMM fitted by EM, and the
Fisher-vector encoding of Wieschollek et al. (eqs. 2-4), batched over images and vectorised in torch.

Descriptors
    A conv map (C, H, W) of one image gives H*W descriptors of dimension C, one per spatial position.
    Maps come as (n, C, H, W) arrays, or as flat rows (n, C*H*W) (channel-major, as the feature store
    keeps unrolled maps) with ``layer_shape=(C, H, W)``. Ready-made descriptor sets come as a dense
    (n, T, D) array or a list of (T_i, D) arrays of varying T_i. At most ``max_descriptors`` of an
    image's descriptors are used: a random subset that depends only on ``random_state`` and the
    image's own descriptors, so an image is encoded the same way whatever batch or split it is in.

Fisher vector (``convention="paper"``, eqs. 2-4 of the paper)
    For an image with descriptors x_1..x_T, a GMM with weights w_k, means mu_k and variances
    sigma2_k (diagonal) and posteriors g_tk = p(k | x_t)::

        F_w[k]      = 1 / (T sqrt(w_k))     sum_t (g_tk - w_k)
        F_mu[k]     = 1 / (T sqrt(w_k))     sum_t g_tk (x_t - mu_k) / sigma_k
        F_sigma2[k] = 1 / (T sqrt(2 w_k))   sum_t g_tk ((x_t - mu_k)^2 / sigma2_k - 1)

    laid out as [F_w (K), F_mu (K x D, component-major), F_sigma2 (K x D)]: (2D + 1) K values, then
    optionally the signed power sign(z)|z|^alpha (eq. 5) and L2 normalisation (eq. 6). Everything is
    computed from the per-image statistics S0 = sum_t g_t, S1 = sum_t g_t x_t, S2 = sum_t g_t x_t^2
    with matrix products, chunked over descriptors: no (images x descriptors x D x K) tensor is formed.

``convention="skimage"`` reproduces ``skimage.feature.fisher_vector`` exactly: the same layout, the
same weight and mean parts and the same 1/T scaling, but its variance part is the negative of eq. (4)
(it is the normalised score with respect to the precisions 1/sigma2 rather than the variances).
skimage's ``improved=True`` is ``power=alpha, l2=True``; ``improved=False`` is ``power=None,
l2=False``. The two conventions give the same kernel up to the sign of one block, so the same
classification results.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from deepfeat.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CONVENTIONS = ("paper", "skimage")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Descriptor rows encoded together: bounds the (rows, D) and (rows, K) intermediates of one chunk
#: (a few MB, cache-sized; larger chunks were slower on the 2-core test machine).
CHUNK_ROWS = 1 << 13

__all__ = [
    "CONVENTIONS",
    "DescriptorPCA",
    "DiagonalGMM",
    "FisherEncoder",
    "GMMParams",
    "as_descriptor_sets",
    "as_gmm_params",
    "check_device",
    "check_finite_sets",
    "conv_descriptors",
    "fisher_dim",
    "fisher_vectors",
    "fv_from_statistics",
    "fv_statistics",
    "log_joint",
    "normalize_fv",
    "padded_batches",
    "power_normalize",
    "subsample_descriptors",
]


# --- GMM parameters ---------------------------------------------------------------------------------


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


def fisher_dim(n_components: int, dim: int) -> int:
    """Length of a Fisher vector of a K-component GMM on D-dimensional descriptors: (2D + 1) K."""
    return (2 * dim + 1) * n_components


# --- the encoding -----------------------------------------------------------------------------------


def log_joint(x: torch.Tensor, params: GMMParams) -> torch.Tensor:
    """log(w_k N(x; mu_k, sigma2_k)) for descriptors ``x`` (..., D): (..., K)."""
    prec = params.variances.reciprocal()
    const = params.weights.log() - 0.5 * (
        params.dim * math.log(2 * math.pi)
        + params.variances.log().sum(1)
        + (params.means.square() * prec).sum(1)
    )
    return x.square() @ (-0.5 * prec).T + x @ (params.means * prec).T + const


def fv_statistics(
    x: torch.Tensor,
    params: GMMParams,
    mask: torch.Tensor | None = None,
    chunk_rows: int = CHUNK_ROWS,
    centre: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zeroth, first and second order statistics of descriptor sets ``x`` (B, T, D) under ``params``.

    ``mask`` (B, T), true for real descriptors, leaves out padding; ``centre`` (D,) is subtracted from
    the descriptors first (``params`` must then be relative to it too). Returns S0 (B, K), S1 (B, K, D),
    S2 (B, K, D) and the descriptor counts (B,). Differentiable; chunked over T so that at most
    ``chunk_rows`` descriptor rows are processed at once.
    """
    B, T, D = x.shape
    prec = params.variances.reciprocal()
    w2, w1 = (-0.5 * prec).T, (params.means * prec).T  # (D, K)
    const = params.weights.log() - 0.5 * (
        D * math.log(2 * math.pi) + params.variances.log().sum(1) + (params.means.square() * prec).sum(1)
    )
    step = max(1, chunk_rows // max(B, 1))
    s0 = s1 = s2 = None
    for t0 in range(0, T, step):
        xc = x[:, t0 : t0 + step] if step < T else x
        if centre is not None:
            xc = xc - centre
        x2 = xc * xc
        logp = torch.addmm(torch.addmm(const, x2.reshape(-1, D), w2), xc.reshape(-1, D), w1)
        gamma = torch.softmax(logp, dim=-1).reshape(B, -1, logp.shape[-1])  # (B, t, K)
        if mask is not None:
            gamma = gamma * mask[:, t0 : t0 + step, None].to(gamma.dtype)
        g_t = gamma.transpose(1, 2)
        a0, a1, a2 = gamma.sum(1), g_t @ xc, g_t @ x2
        s0, s1, s2 = (a0, a1, a2) if s0 is None else (s0 + a0, s1 + a1, s2 + a2)
    if mask is None:
        count = torch.full((B,), float(T), dtype=x.dtype, device=x.device)
    else:
        count = mask.to(x.dtype).sum(1)
    return s0, s1, s2, count


def fv_from_statistics(
    s0: torch.Tensor,
    s1: torch.Tensor,
    s2: torch.Tensor,
    count: torch.Tensor,
    params: GMMParams,
    convention: str = "paper",
) -> torch.Tensor:
    """Unnormalised Fisher vectors (B, (2D + 1) K) from the statistics of :func:`fv_statistics`."""
    w, mu, var = params.weights, params.means, params.variances
    t = count.clamp_min(1)[:, None]  # an empty set gives -sqrt(w), 0, 0 rather than NaN
    sw = w.sqrt()
    f_w = (s0 / t - w) / sw
    s0e = s0[..., None]
    f_mu = (s1 - s0e * mu) / (t[..., None] * sw[:, None] * var.sqrt())
    f_var = (s2 - 2 * mu * s1 + s0e * (mu.square() - var)) / (t[..., None] * math.sqrt(2) * sw[:, None] * var)
    if convention == "skimage":
        f_var = -f_var
    return torch.cat([f_w, f_mu.flatten(1), f_var.flatten(1)], dim=1)


class _SignedPower(torch.autograd.Function):
    """sign(z)|z|^alpha with a finite gradient everywhere: alpha max(|z|, eps)^(alpha-1), 0 at z = 0."""

    @staticmethod
    def forward(ctx, z, alpha, eps):
        a = z.abs()
        ctx.save_for_backward(a)
        ctx.alpha, ctx.eps = alpha, eps
        return z.sign() * a.pow(alpha)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        slope = ctx.alpha * a.clamp_min(ctx.eps).pow(ctx.alpha - 1)
        return grad * torch.where(a > 0, slope, torch.zeros_like(slope)), None, None


def power_normalize(z: torch.Tensor, alpha: float = 0.5, eps: float = 1e-12) -> torch.Tensor:
    """Signed power sign(z)|z|^alpha (eq. 5); its gradient is 0 at z = 0 and bounded near it."""
    if alpha == 1:
        return z
    return _SignedPower.apply(z, float(alpha), float(eps))


def normalize_fv(
    fv: torch.Tensor, power: float | None = 0.5, l2: bool = True, eps: float = 1e-12
) -> torch.Tensor:
    """Signed power (``power`` = alpha, None to skip) then L2 normalisation of rows (``l2``)."""
    if power is not None:
        fv = power_normalize(fv, power, eps)
    if l2:
        fv = fv / fv.norm(dim=-1, keepdim=True).clamp_min(eps)
    return fv


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ConfigError(f"unknown Fisher vector convention {convention!r}; valid: {', '.join(CONVENTIONS)}")


def _check_power(power) -> None:
    if power is not None and not (
        isinstance(power, numbers.Real) and not isinstance(power, bool) and 0 < power <= 1
    ):
        raise ConfigError(f"power must be a number in (0, 1] or None (no power normalisation), got {power!r}")


def padded_batches(
    sets: torch.Tensor | Sequence[torch.Tensor], chunk_rows: int
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor | None]]:
    """Consecutive groups of images as (slice, (b, T, D) descriptors, (b, T) mask or None)."""
    if isinstance(sets, torch.Tensor):
        n, T = sets.shape[0], sets.shape[1]
        step = max(1, chunk_rows // max(T, 1))
        for i0 in range(0, n, step):
            yield slice(i0, min(n, i0 + step)), sets[i0 : i0 + step], None
        return
    i0, n = 0, len(sets)
    while i0 < n:
        i1, longest = i0 + 1, len(sets[i0])
        while i1 < n and (i1 - i0 + 1) * max(longest, len(sets[i1])) <= chunk_rows:
            longest = max(longest, len(sets[i1]))
            i1 += 1
        group = sets[i0:i1]
        if all(len(s) == longest for s in group):
            yield slice(i0, i1), torch.stack(list(group)), None
        else:
            x = group[0].new_zeros((len(group), longest, group[0].shape[1]))
            mask = torch.zeros((len(group), longest), dtype=torch.bool, device=x.device)
            for j, s in enumerate(group):
                x[j, : len(s)] = s
                mask[j, : len(s)] = True
            yield slice(i0, i1), x, mask
        i0 = i1


def fisher_vectors(
    descriptors,
    gmm,
    *,
    power: float | None = 0.5,
    l2: bool = True,
    convention: str = "paper",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> torch.Tensor:
    """Fisher vectors (n, (2D + 1) K) of n descriptor sets under a diagonal GMM.

    ``descriptors``: a dense (n, T, D) array or tensor, or a list of (T_i, D) arrays (T_i may vary).
    ``gmm``: a fitted DiagonalGMM, GMMParams or diagonal sklearn GaussianMixture. ``power`` and
    ``l2``: the normalisations (see :func:`normalize_fv`); ``convention``: ``"paper"`` or
    ``"skimage"`` (see the module docstring). Computed in ``dtype`` (default: the descriptors' floating
    type, else float32) on ``device`` (default: the descriptors' device).
    """
    _check_convention(convention)
    _check_power(power)
    sets = as_descriptor_sets(descriptors, "descriptors")
    first = sets if isinstance(sets, torch.Tensor) else sets[0]
    dtype = dtype or (first.dtype if first.dtype.is_floating_point else torch.float32)
    device = torch.device(device) if device is not None else first.device
    params = as_gmm_params(gmm).to(device, dtype)
    if first.shape[-1] != params.dim:
        raise DataError(f"descriptors have dimension {first.shape[-1]}, the GMM was fitted on {params.dim}")
    if isinstance(sets, torch.Tensor):
        sets = sets.to(device=device, dtype=dtype)
    else:
        sets = [s.to(device=device, dtype=dtype) for s in sets]
    check_finite_sets(sets, "descriptors")
    # shifting descriptors and means by the mixture mean changes nothing but keeps the expanded
    # quadratic forms and the variance statistics accurate in float32
    params, centre = _centred_params(params)
    out = []
    for _, x, mask in padded_batches(sets, chunk_rows):
        stats = fv_statistics(x, params, mask, chunk_rows, centre)
        out.append(normalize_fv(fv_from_statistics(*stats, params, convention), power, l2))
    return torch.cat(out)


# --- descriptor sets --------------------------------------------------------------------------------


def _to_tensor(a, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric arrays ({exc})") from None
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind != "f" or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr))


def as_descriptor_sets(descriptors, name: str) -> torch.Tensor | list[torch.Tensor]:
    """A dense (n, T, D) tensor or a list of (T_i, D) tensors with the same D."""
    if isinstance(descriptors, (list, tuple)):
        if not descriptors:
            raise DataError(f"{name} is an empty list; give one (T_i, D) array per image")
        sets = [_to_tensor(s, name) for s in descriptors]
        bad = [i for i, s in enumerate(sets) if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0]
        if bad:
            raise DataError(
                f"{name}[{bad[0]}] has shape {tuple(sets[bad[0]].shape)}; every image needs a non-empty "
                "(T_i, D) array of descriptors"
            )
        dims = {s.shape[1] for s in sets}
        if len(dims) > 1:
            raise DataError(f"{name} have different dimensions {sorted(dims)}; all must share one D")
        return sets
    x = _to_tensor(descriptors, name)
    if x.ndim != 3 or 0 in x.shape:
        raise DataError(
            f"{name} must be a dense (n, T, D) array or a list of (T_i, D) arrays, got shape {tuple(x.shape)}"
        )
    return x


def _nonfinite_images(x: torch.Tensor) -> torch.Tensor:
    """Flags (n,) of the images of ``x`` (n, ...) holding NaN or infinite values. A sum propagates
    them, so one cheap reduction settles the common all-finite case; isfinite only runs on images whose
    sum is not finite (which includes finite values summing past the float range)."""
    flags = ~torch.isfinite(x.sum(dim=tuple(range(1, x.ndim))))
    if bool(flags.any()):
        idx = torch.nonzero(flags).flatten()
        flags[idx] = ~torch.isfinite(x[idx]).flatten(1).all(1)
    return flags


def check_finite_sets(sets, name: str, offset: int = 0) -> None:
    """DataError naming the images (numbered from ``offset``) that hold NaN or infinite values."""
    if isinstance(sets, torch.Tensor):
        flags = _nonfinite_images(sets)
    else:
        flags = torch.tensor([bool(_nonfinite_images(s[None])[0]) for s in sets])
    if bool(flags.any()):
        bad = torch.nonzero(flags).flatten().tolist()
        total = sum(int((~torch.isfinite(sets[i])).sum()) for i in bad)
        raise DataError(
            f"{name} hold {total} NaN or infinite values in {len(bad)} images (first: "
            f"{[offset + i for i in bad[:5]]}); clean or drop those images"
        )


def conv_descriptors(maps, layer_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Descriptors (n, H*W, C) of conv maps (n, C, H, W), or of flat rows (n, C*H*W) with
    ``layer_shape=(C, H, W)``: one C-dimensional descriptor per spatial position."""
    x = _to_tensor(maps, "maps")
    shape = _check_layer_shape(layer_shape)
    if shape is not None:
        if x.ndim < 2 or math.prod(x.shape[1:]) != math.prod(shape):
            raise DataError(
                f"rows of shape {tuple(x.shape[1:])} do not hold layer_shape {shape} "
                f"({math.prod(shape)} values per image); give the layer's (C, H, W)"
            )
        x = x.reshape(x.shape[0], *shape)
    if x.ndim != 4:
        raise DataError(
            "conv maps must be (n, C, H, W), or flat (n, C*H*W) rows with layer_shape; "
            f"got shape {tuple(x.shape)}"
        )
    n, c = x.shape[:2]
    return x.reshape(n, c, -1).transpose(1, 2)


def _check_layer_shape(layer_shape) -> tuple[int, int, int] | None:
    if layer_shape is None:
        return None
    try:
        shape = tuple(int(s) for s in layer_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or any(s < 1 for s in shape) or shape != tuple(layer_shape):
        raise ConfigError(
            f"layer_shape must be (C, H, W) with positive integer sizes or None, got {layer_shape!r}"
        )
    return shape


def _content_rng(x: torch.Tensor, random_state: int | None) -> np.random.Generator:
    """A generator seeded by ``random_state`` and the bytes of ``x`` (CPU tensor)."""
    if random_state is None:
        return np.random.default_rng()
    crc = zlib.crc32(np.ascontiguousarray(x.detach().cpu().numpy()).view(np.uint8))
    return np.random.default_rng([int(random_state), crc])


def subsample_descriptors(
    sets, max_descriptors: int, random_state: int | None = 0
) -> torch.Tensor | list[torch.Tensor]:
    """At most ``max_descriptors`` descriptors of every image, drawn without replacement and kept in
    their original order; the draw depends only on ``random_state`` and the image's descriptors."""
    sets = as_descriptor_sets(sets, "descriptors")
    if isinstance(sets, torch.Tensor):
        n, T, _ = sets.shape
        if max_descriptors >= T:
            return sets
        idx = torch.stack([_draw(sets[i], max_descriptors, random_state) for i in range(n)])
        return torch.gather(sets, 1, idx.to(sets.device)[..., None].expand(-1, -1, sets.shape[2]))
    return [s if len(s) <= max_descriptors else s[_draw(s, max_descriptors, random_state)] for s in sets]


def _draw(x: torch.Tensor, m: int, random_state: int | None) -> torch.Tensor:
    rng = _content_rng(x, random_state)
    return torch.from_numpy(np.sort(rng.choice(len(x), size=m, replace=False)))


# --- PCA --------------------------------------------------------------------------------------------


class DescriptorPCA:
    """PCA of descriptors: centre, project onto the leading ``n_components`` principal axes and
    optionally whiten (divide by the square root of each axis's variance)."""

    def __init__(self, n_components: int, whiten: bool = False, eps: float = 1e-12):
        self.n_components = n_components
        self.whiten = whiten
        self.eps = eps

    def fit(self, x: torch.Tensor) -> DescriptorPCA:
        """Fit on descriptors ``x`` (N, C), N >= 2 (covariance in float64, chunked)."""
        n, c = x.shape
        if self.n_components > c:
            raise ConfigError(
                f"pca_dim={self.n_components} exceeds the descriptor dimension {c}; "
                f"use pca_dim <= {c} or None"
            )
        if n < 2:
            raise DataError(f"PCA needs at least 2 descriptors, got {n}")
        mean = torch.zeros(c, dtype=torch.float64, device=x.device)
        for i in range(0, n, CHUNK_ROWS):
            mean += x[i : i + CHUNK_ROWS].to(torch.float64).sum(0)
        mean /= n
        cov = torch.zeros((c, c), dtype=torch.float64, device=x.device)
        for i in range(0, n, CHUNK_ROWS):
            xc = x[i : i + CHUNK_ROWS].to(torch.float64) - mean
            cov += xc.T @ xc
        cov /= n - 1
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)[: self.n_components]
        comps = evecs[:, order].T  # (n_components, C)
        # deterministic signs: the largest entry of every axis is positive
        big = comps.gather(1, comps.abs().argmax(1, keepdim=True))
        comps = comps * torch.where(big < 0, -1.0, 1.0).to(comps.dtype)
        self.mean_ = mean
        self.components_ = comps
        self.explained_variance_ = evals[order].clamp_min(0)
        return self

    def transform(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Projected descriptors (..., n_components) in the dtype of ``x``, minus ``offset`` if given."""
        comps = self.components_
        if self.whiten:
            scale = (self.explained_variance_ + self.eps * self.explained_variance_.max()).sqrt()
            comps = comps / scale[:, None]
        comps = comps.to(device=x.device, dtype=x.dtype)
        shift = self.mean_.to(device=x.device, dtype=x.dtype) @ comps.T
        if offset is not None:
            shift = shift + offset.to(device=x.device, dtype=x.dtype)
        out = torch.addmm(-shift, x.reshape(-1, x.shape[-1]), comps.T)
        return out.reshape(*x.shape[:-1], comps.shape[0])


# --- the GMM ----------------------------------------------------------------------------------------


def check_device(device) -> torch.device:
    """The torch device of ``device``; ConfigError for unknown devices or CUDA where there is none."""
    try:
        dev = torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here; use device='cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}")
    return dev


def _check_int(value, name: str, minimum: int = 1) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_random_state(random_state) -> None:
    if random_state is not None and (
        not isinstance(random_state, numbers.Integral) or isinstance(random_state, bool) or random_state < 0
    ):
        raise ConfigError(f"random_state must be a non-negative integer or None, got {random_state!r}")


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
        _check_int(self.n_components, "n_components")
        _check_int(self.max_iter, "max_iter")
        _check_int(self.kmeans_iter, "kmeans_iter", 0)
        _check_random_state(self.random_state)
        if not (isinstance(self.tol, numbers.Real) and self.tol > 0):
            raise ConfigError(f"tol must be a positive number, got {self.tol!r}")
        if not (isinstance(self.var_floor, numbers.Real) and 0 < self.var_floor < 1):
            raise ConfigError(f"var_floor must be in (0, 1), got {self.var_floor!r}")
        return check_device(self.device)

    def _data(self, X, device: torch.device) -> torch.Tensor:
        x = _to_tensor(X, "X")
        if x.ndim != 2 or 0 in x.shape:
            raise DataError(f"X must be a non-empty (n_descriptors, D) array, got shape {tuple(x.shape)}")
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
        k = self.n_components
        if n < k:
            raise DataError(
                f"{n} descriptors are too few for n_components={k}; give at least {k} or lower n_components"
            )
        centre = x.mean(0)
        x = x - centre
        floor = float(self.var_floor * x.var(0).mean())
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
        for it in range(self.max_iter + 1):
            params = GMMParams(w, mu, var)
            logp = log_joint(x, params)
            lse = torch.logsumexp(logp, dim=1)
            ll = float(lse.mean())
            if prev is not None and abs(ll - prev) <= self.tol * max(abs(prev), 1e-12):
                converged = True
                break
            if it == self.max_iter:
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
        k = self.n_components
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
        for _ in range(self.kmeans_iter):
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
        x = self._data(X, params.means.device)
        return torch.logsumexp(log_joint(x, params), dim=1).cpu().numpy()

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of the descriptors."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X) -> np.ndarray:
        """Posterior probabilities (N, K) of the components."""
        params = self._params(check_device(self.device))
        x = self._data(X, params.means.device)
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


# --- the scikit-learn transformer -------------------------------------------------------------------


class _Source:
    """Images of ``X`` in chunks, as CPU descriptor sets: dense (b, T, C) tensors or lists."""

    def __init__(self, X, layer_shape):
        self.shape = _check_layer_shape(layer_shape)
        if isinstance(X, (list, tuple)):
            self.kind = "list"
            self.sets = as_descriptor_sets(X, "X")
            self.n, self.dim = len(self.sets), int(self.sets[0].shape[1])
            self.counts = np.array([len(s) for s in self.sets])
            return
        arr = X if hasattr(X, "shape") else np.asarray(X)
        self.arr = arr
        ndim = len(arr.shape)
        if ndim == 2:
            if self.shape is None:
                raise DataError(
                    f"X has flat rows of {arr.shape[1]} values; pass layer_shape=(C, H, W) to read them "
                    "as conv maps (or give (n, C, H, W) maps, (n, T, D) descriptors or a list of (T_i, D) "
                    "arrays)"
                )
            if arr.shape[1] != math.prod(self.shape):
                raise DataError(
                    f"X rows have {arr.shape[1]} values but layer_shape {self.shape} holds "
                    f"{math.prod(self.shape)}; give the (C, H, W) of the layer the rows come from"
                )
            self.kind, (c, h, w) = "rows", self.shape
            self.dim, t = c, h * w
        elif ndim == 4:
            if self.shape is not None and tuple(arr.shape[1:]) != self.shape:
                raise DataError(f"X maps have shape {tuple(arr.shape[1:])} but layer_shape is {self.shape}")
            self.kind, self.dim, t = "maps", int(arr.shape[1]), int(arr.shape[2] * arr.shape[3])
        elif ndim == 3:
            self.kind, self.dim, t = "dense", int(arr.shape[2]), int(arr.shape[1])
        else:
            raise DataError(
                f"X must be flat conv-map rows (with layer_shape), (n, C, H, W) maps, (n, T, D) descriptors "
                f"or a list of (T_i, D) arrays; got shape {tuple(arr.shape)}"
            )
        self.n = int(arr.shape[0])
        if self.n == 0 or t == 0 or self.dim == 0:
            raise DataError(f"X holds no descriptors (shape {tuple(arr.shape)})")
        self.counts = np.full(self.n, t)

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, int]]:
        if self.kind == "list":
            i0 = 0
            while i0 < self.n:
                i1, rows = i0, 0
                while i1 < self.n and (i1 == i0 or rows + self.counts[i1] <= chunk_rows):
                    rows += self.counts[i1]
                    i1 += 1
                yield i0, i1
                i0 = i1
            return
        step = max(1, chunk_rows // int(self.counts[0]))
        for i0 in range(0, self.n, step):
            yield i0, min(self.n, i0 + step)

    def get(self, i0: int, i1: int):
        if self.kind == "list":
            sets = self.sets[i0:i1]
        else:
            x = _to_tensor(self.arr[i0:i1], "X")
            if self.kind != "dense":
                x = conv_descriptors(x, self.shape if self.kind == "rows" else None)
            sets = x
        check_finite_sets(sets, "X", offset=i0)
        return sets


class FisherEncoder(TransformerMixin, BaseEstimator):
    """Fisher vectors of conv-map descriptors (or of any descriptor sets) as a scikit-learn transformer.

    ``fit`` draws at most ``max_descriptors`` descriptors per training image, then ``fit_sample`` of
    them uniformly at random, fits a PCA to ``pca_dim`` dimensions (None: no PCA) and a diagonal GMM of
    ``n_components`` by EM; ``transform`` encodes every image (again at most ``max_descriptors``
    descriptors) into a float32 Fisher vector of (2 pca_dim + 1) n_components values.

    X: flat rows of unrolled conv maps (n, C*H*W) with ``layer_shape=(C, H, W)``, (n, C, H, W) maps, a
    dense (n, T, D) array of descriptor sets or a list of (T_i, D) arrays.

    Parameters
    ----------
    n_components: GMM components K.
    pca_dim: PCA dimension D (<= the descriptor dimension), or None for no PCA.
    whiten: divide the PCA axes by their standard deviations.
    max_descriptors: descriptors used per image (a random subset beyond that).
    fit_sample: descriptors the PCA and GMM are fitted on (drawn from all training images).
    power: signed-power normalisation exponent alpha in (0, 1], or None.
    l2: L2-normalise the Fisher vectors.
    layer_shape: (C, H, W) of flat rows.
    convention: ``"paper"`` (eqs. 2-4) or ``"skimage"`` (see :mod:`deepfeat.features.fisher`).
    tol, max_iter: EM convergence (relative log-likelihood change) and iteration limit.
    dtype: ``"float32"`` or ``"float64"`` for the encoding arithmetic (the output is float32).
    random_state: seed of the descriptor draws and of the k-means++ start.
    device: ``"cpu"`` or ``"cuda"``.
    progress: show progress bars.
    """

    def __init__(
        self,
        n_components: int = 32,
        pca_dim: int | None = 64,
        whiten: bool = False,
        max_descriptors: int = 10_000,
        fit_sample: int = 50_000,
        power: float | None = 0.5,
        l2: bool = True,
        layer_shape: tuple[int, int, int] | None = None,
        convention: str = "paper",
        tol: float = 1e-6,
        max_iter: int = 300,
        dtype: str = "float32",
        random_state: int | None = 0,
        device: str = "cpu",
        progress: bool = False,
    ):
        self.n_components = n_components
        self.pca_dim = pca_dim
        self.whiten = whiten
        self.max_descriptors = max_descriptors
        self.fit_sample = fit_sample
        self.power = power
        self.l2 = l2
        self.layer_shape = layer_shape
        self.convention = convention
        self.tol = tol
        self.max_iter = max_iter
        self.dtype = dtype
        self.random_state = random_state
        self.device = device
        self.progress = progress

    def _validate_params(self) -> torch.device:
        _check_int(self.n_components, "n_components")
        if self.pca_dim is not None:
            _check_int(self.pca_dim, "pca_dim")
        _check_int(self.max_descriptors, "max_descriptors")
        _check_int(self.fit_sample, "fit_sample")
        _check_int(self.max_iter, "max_iter")
        _check_power(self.power)
        _check_convention(self.convention)
        _check_random_state(self.random_state)
        _check_layer_shape(self.layer_shape)
        for name in ("whiten", "l2", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        if not (isinstance(self.tol, numbers.Real) and self.tol > 0):
            raise ConfigError(f"tol must be a positive number, got {self.tol!r}")
        if self.fit_sample < self.n_components:
            raise ConfigError(
                f"fit_sample={self.fit_sample} is smaller than n_components={self.n_components}; "
                "the GMM needs at least one descriptor per component"
            )
        return check_device(self.device)

    def _capped(self, sets):
        return subsample_descriptors(sets, self.max_descriptors, self.random_state)

    def fit(self, X, y=None) -> FisherEncoder:
        """Fit the PCA and the GMM on the descriptors of the training images ``X`` (``y`` is ignored)."""
        device = self._validate_params()
        src = _Source(X, self.layer_shape)
        if self.pca_dim is not None and self.pca_dim > src.dim:
            raise ConfigError(
                f"pca_dim={self.pca_dim} exceeds the descriptor dimension {src.dim}; "
                f"use pca_dim <= {src.dim} or None"
            )
        counts = np.minimum(src.counts, self.max_descriptors)
        total = int(counts.sum())
        if total < self.n_components:
            raise DataError(
                f"X holds {total} descriptors, too few for n_components={self.n_components}; "
                "give more images or lower n_components"
            )
        m = min(self.fit_sample, total)
        rng = np.random.default_rng(self.random_state)
        chosen = np.sort(rng.choice(total, size=m, replace=False)) if m < total else np.arange(total)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        rows: list[torch.Tensor] = []
        bar = tqdm(total=src.n, desc="fisher fit", unit="img", disable=not self.progress, dynamic_ncols=True)
        for i0, i1 in src.chunks(CHUNK_ROWS * 8):
            capped = self._capped(src.get(i0, i1))
            lo, hi = np.searchsorted(chosen, [offsets[i0], offsets[i1]])
            picks = chosen[lo:hi]
            owner = np.searchsorted(offsets, picks, side="right") - 1
            for i in np.unique(owner):
                local = torch.from_numpy(picks[owner == i] - offsets[i])
                rows.append(capped[int(i) - i0][local])
            bar.update(i1 - i0)
        bar.close()
        sample = torch.cat(rows).to(device)
        if self.pca_dim is not None:
            self.pca_ = DescriptorPCA(self.pca_dim, self.whiten).fit(sample)
            sample = self.pca_.transform(sample.to(torch.float64))
        else:
            self.pca_ = None
        self.gmm_ = DiagonalGMM(
            self.n_components,
            tol=self.tol,
            max_iter=self.max_iter,
            random_state=self.random_state,
            device=str(device),
        ).fit(sample)
        self.descriptor_dim_ = src.dim
        self.dim_ = self.pca_dim if self.pca_dim is not None else src.dim
        self.n_features_out_ = fisher_dim(self.n_components, self.dim_)
        self.n_fit_descriptors_ = m
        if src.kind == "rows":
            self.n_features_in_ = int(math.prod(src.shape))
        log.info(
            "FisherEncoder: GMM of %d components on %d descriptors (dim %d), EM %d iterations",
            self.n_components,
            m,
            self.dim_,
            self.gmm_.n_iter_,
        )
        return self

    def transform(self, X) -> np.ndarray:
        """Fisher vectors (n, (2D + 1) K), float32."""
        check_is_fitted(self, "gmm_")
        device = self._validate_params()
        dtype = DTYPES[self.dtype]
        src = _Source(X, self.layer_shape)
        if src.dim != self.descriptor_dim_:
            raise DataError(
                f"X has descriptors of dimension {src.dim}, the encoder was fitted on {self.descriptor_dim_}"
            )
        params = self.gmm_.params_.to(device, dtype)
        params, centre = _centred_params(params)
        out = np.empty((src.n, self.n_features_out_), dtype=np.float32)
        bar = tqdm(total=src.n, desc="fisher", unit="img", disable=not self.progress, dynamic_ncols=True)
        with torch.no_grad():
            for i0, i1 in src.chunks(CHUNK_ROWS * 8):
                sets = self._project(self._capped(src.get(i0, i1)), device, dtype, centre)
                fvs = []
                for _, x, mask in padded_batches(sets, CHUNK_ROWS):
                    stats = fv_statistics(x, params, mask, CHUNK_ROWS, None if self.pca_ else centre)
                    fv = fv_from_statistics(*stats, params, self.convention)
                    fvs.append(normalize_fv(fv, self.power, self.l2))
                out[i0:i1] = torch.cat(fvs).float().cpu().numpy()
                bar.update(i1 - i0)
        bar.close()
        return out

    def _project(self, sets, device, dtype, centre=None):
        """PCA-projected sets minus ``centre`` (with PCA; without, the sets as they are)."""

        def one(x):
            x = x.to(device=device, dtype=dtype)
            return x if self.pca_ is None else self.pca_.transform(x, centre)

        return one(sets) if isinstance(sets, torch.Tensor) else [one(s) for s in sets]

    def descriptors(self, X) -> torch.Tensor | list[torch.Tensor]:
        """The (sampled, PCA-projected) descriptor sets the encoder turns into Fisher vectors: a dense
        (n, T, D) tensor or a list of (T_i, D) tensors, float64 on the CPU."""
        check_is_fitted(self, "gmm_")
        src = _Source(X, self.layer_shape)
        parts = []
        for i0, i1 in src.chunks(CHUNK_ROWS):
            parts.append(self._project(self._capped(src.get(i0, i1)), "cpu", torch.float64))
        if all(isinstance(p, torch.Tensor) for p in parts) and len({p.shape[1] for p in parts}) == 1:
            return torch.cat(parts)
        return [s for p in parts for s in (list(p) if isinstance(p, torch.Tensor) else p)]


def _centred_params(params: GMMParams) -> tuple[GMMParams, torch.Tensor]:
    """Means relative to the mixture mean, and that mean (descriptors must be shifted by it too)."""
    c = (params.weights[:, None] * params.means).sum(0) / params.weights.sum()
    return GMMParams(params.weights, params.means - c, params.variances), c
