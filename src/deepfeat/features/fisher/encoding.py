"""The Fisher-vector encoding of Wieschollek et al. (eqs. 2-4): statistics of descriptor sets under a
diagonal GMM, the vectors built from them, and the power and L2 normalisation.

Fisher vector (``convention="paper"``)
    For an image with descriptors x_1..x_T, a GMM with weights w_k, means mu_k and variances
    sigma2_k (diagonal) and posteriors g_tk = p(k | x_t)::

        F_w[k]      = 1 / (T sqrt(w_k))     sum_t (g_tk - w_k)
        F_mu[k]     = 1 / (T sqrt(w_k))     sum_t g_tk (x_t - mu_k) / sigma_k
        F_sigma2[k] = 1 / (T sqrt(2 w_k))   sum_t g_tk ((x_t - mu_k)^2 / sigma2_k - 1)

    laid out as [F_w (K), F_mu (K x D, component-major), F_sigma2 (K x D)]: (2D + 1) K values, then
    optionally the signed power sign(z)|z|^alpha (eq. 5) and L2 normalisation (eq. 6).

``convention="skimage"`` reproduces ``skimage.feature.fisher_vector`` exactly: the same layout, the
same weight and mean parts and the same 1/T scaling, but its variance part is the negative of eq. (4)
(it is the normalised score with respect to the precisions 1/sigma2 rather than the variances).
skimage's ``improved=True`` is ``power=alpha, l2=True``; ``improved=False`` is ``power=None,
l2=False``. The two conventions give the same kernel up to the sign of one block, so the same
classification results.

Computation
    Each descriptor row becomes z_t = [x_t, x_t^2, 1] (2D + 1 values). The log joint densities of all
    components are one matrix product z_t A with A (2D + 1, K) holding mu_k / sigma2_k, -1 / (2 sigma2_k)
    and the constants; after a softmax over k, the statistics S1 = sum_t g_t x_t, S2 = sum_t g_t x_t^2
    and S0 = sum_t g_t of every image are one batched product g^T [x, x^2, 1]. That is about
    8 (images x descriptors) D K floating-point operations, all in matrix products; the vectors follow
    from the statistics in O(images K D). Rows are processed in chunks small enough to stay in cache,
    so no (images x descriptors x D x K) tensor, nor any full-size copy of the descriptors, is formed.
    Descriptors and means are shifted by the mixture mean first: this changes nothing mathematically
    but keeps the expanded quadratic forms and S2 accurate in float32 while every component lies near
    that mean on the scale of its own spread. A component far from it (relative to its sigma) makes the
    expanded forms cancel: the error grows with float32's epsilon times the spread
    max_k ||(mu_k - c)^2 / sigma2_k||. Past :data:`FLOAT32_SPREAD` the arithmetic is done in
    float64 instead (:func:`working_dtype`), and the result returned in the dtype asked for.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from deepfeat.errors import DataError
from deepfeat.features.fisher._common import (
    CONVENTIONS,
    check_convention,
    check_power,
    chunk_rows_for,
)
from deepfeat.features.fisher.descriptors import as_descriptor_sets, check_finite_sets, padded_batches
from deepfeat.features.fisher.gmm import GMMParams, as_gmm_params
from deepfeat.features.fisher.normalization import normalize_fv, normalize_fv_inplace, power_normalize
from deepfeat.validation import check_device, check_int

__all__ = [
    "CONVENTIONS",
    "centred_params",
    "fisher_dim",
    "fisher_vectors",
    "fv_from_statistics",
    "fv_statistics",
    "normalize_fv",
    "posterior_map",
    "power_normalize",
    "working_dtype",
]


#: the largest spread max_k ||r_k||, r_kd = (mu_kd - c_d)^2 / sigma2_kd (c: the mixture mean), at which
#: Fisher vectors asked for in float32 are computed in float32; past it, in float64. (The L2 norm over
#: dimensions, not the sum: the terms' rounding errors do not all add up, and a sum sent ordinary
#: 1,280-dimensional mixtures to float64.) Largest error of float32 against float64 in power- and
#: L2-normalised vectors, by spread: 8 clusters in 1,280 dimensions 57, 4.0e-6; bench_fisher's mixture
#: 161, 3.4e-5; hymenoptera stage6 descriptors K = 16 / 32 on PCA 64, K = 32 without PCA: 36 / 42 / 81,
#: 1.8e-4 / 2.3e-4 / 1.8e-4; two clusters 10 / 20 / 30 / 100 sigma apart in 4 dimensions: 50 / 202 /
#: 466 / 4,930, 2.7e-5 / 1.3e-4 / 1.0e-3 / 2.4e-3
FLOAT32_SPREAD = 250.0


def working_dtype(params: GMMParams, dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute Fisher vectors of ``params`` in when ``dtype`` is asked for: ``dtype``, except
    float64 for float32 where some component lies so far from the mixture mean, relative to its own
    spread, that float32's expanded quadratic forms would cancel (see :data:`FLOAT32_SPREAD`)."""
    if dtype != torch.float32:
        return dtype
    with torch.no_grad():
        p = GMMParams(
            *(t.detach().to(torch.float64) for t in (params.weights, params.means, params.variances))
        )
        centred, _ = centred_params(p)
        spread = float(torch.linalg.vector_norm(centred.means.square() / centred.variances, dim=1).max())
    return torch.float64 if not spread <= FLOAT32_SPREAD else dtype


def fisher_dim(n_components: int, dim: int) -> int:
    """Length of a Fisher vector of a K-component GMM on D-dimensional descriptors: (2D + 1) K."""
    return (2 * dim + 1) * n_components


def centred_params(params: GMMParams) -> tuple[GMMParams, torch.Tensor]:
    """Means relative to the mixture mean, and that mean (descriptors must be shifted by it too)."""
    c = (params.weights[:, None] * params.means).sum(0) / params.weights.sum()
    return GMMParams(params.weights, params.means - c, params.variances), c


def posterior_map(params: GMMParams) -> torch.Tensor:
    """A (2D + 1, K) with [x, x^2, 1] A = log(w_k N(x; mu_k, sigma2_k)) for every component k."""
    prec = params.variances.reciprocal()
    const = params.weights.log() - 0.5 * (
        params.dim * math.log(2 * math.pi)
        + params.variances.log().sum(1)
        + (params.means.square() * prec).sum(1)
    )
    return torch.cat([(params.means * prec).T, (-0.5 * prec).T, const[None]])


def _needs_grad(x: torch.Tensor, params: GMMParams) -> bool:
    tensors = (x, params.weights, params.means, params.variances)
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _cutoff(dtype: torch.dtype) -> float:
    """Log-posterior gap below which a posterior is set to 0: 3/4 of the log of the smallest normal
    number of ``dtype`` (-65 in float32, -531 in float64)."""
    return 0.75 * math.log(torch.finfo(dtype).tiny)


def _statistics_autograd(x, a, mask, rows, centre) -> torch.Tensor:
    """[S1, S2, S0] (B, K, 2D + 1) by differentiable operations (posteriors below exp(cutoff) times the
    largest of their row are 0, as in :func:`_statistics_blocks`; so are their gradients)."""
    B, T, _ = x.shape
    cutoff = _cutoff(x.dtype)
    step = max(1, rows // max(B, 1))
    s = None
    for t0 in range(0, T, step):
        xc = x[:, t0 : t0 + step] if step < T else x
        if centre is not None:
            xc = xc - centre
        z = torch.cat([xc, xc * xc, torch.ones_like(xc[..., :1])], dim=-1)
        if mask is not None:  # padding rows: no statistics, and no gradient back to them
            z = z * mask[:, t0 : t0 + step, None].to(z.dtype)
        logp = z @ a
        logp = torch.threshold(logp - logp.amax(-1, keepdim=True).detach(), cutoff, -math.inf)
        gamma = torch.softmax(logp, dim=-1)
        part = gamma.transpose(1, 2) @ z
        s = part if s is None else s + part
    return s


def _statistics_blocks(x, a, mask, rows, centre) -> Iterator[tuple[int, int, torch.Tensor]]:
    """[S1, S2, S0] (b, K, 2D + 1) of consecutive groups of images i0..i1-1 as (i0, i1, S), without
    autograd; S is a reused buffer, valid until the next step. [x, x^2, 1] of a chunk of rows is written
    once into a reused buffer (rows padded to 16 values, so every row starts cache-aligned), then read by
    the two matrix products. Posteriors below exp(cutoff) times the largest of their row are set to 0
    (see :func:`_cutoff`): computed, they would be subnormal numbers, each of which slows the CPU's
    arithmetic by a factor of about a hundred, and they change no statistic at the dtype's precision."""
    B, T, D = x.shape
    K, W = a.shape[1], 2 * D + 1
    cutoff = _cutoff(x.dtype)
    # whole images when they fit, else equal slices of one image
    per, step = (max(1, rows // T), T) if rows >= T else (1, -(-T // -(-T // rows)))
    per = min(per, B)
    threads = torch.get_num_threads() if x.device.type == "cpu" else 1
    if per > threads:  # batched products split images between threads: a multiple of them balances
        per -= per % threads
    # images whose statistics are returned together: at least ``per``, about 1 MB of them
    block = max(1, min(B, (1 << 18) // (K * W)) // per) * per
    s_buf = x.new_empty((min(block, B), K, W))
    buf = x.new_empty((per * step, -(-W // 16) * 16))[:, :W]
    buf[:, 2 * D] = 1
    logp_buf, row_buf = x.new_empty((per * step, K)), x.new_empty((per * step, 1))
    floor = math.exp(cutoff) * 1.001  # above exp(cutoff) as any exp implementation rounds it
    for b0 in range(0, B, block):
        s = s_buf[: min(block, B - b0)].zero_()
        for i0 in range(b0, b0 + len(s), per):
            b = min(per, b0 + len(s) - i0)
            for t0 in range(0, T, step):
                xs = x[i0 : i0 + b, t0 : t0 + step]
                t = xs.shape[1]
                z = buf[: b * t]
                z3 = z.view(b, t, W)
                lin = z3[..., :D]
                if centre is None:
                    lin.copy_(xs)
                else:
                    torch.sub(xs, centre, out=lin)
                torch.mul(lin, lin, out=z3[..., D : 2 * D])
                if mask is not None:  # padding rows, ones column included, become 0: no statistics
                    m = mask[i0 : i0 + b, t0 : t0 + t, None].to(z.dtype)
                    z3[..., : 2 * D].mul_(m)
                    z3[..., 2 * D :].copy_(m)
                # posteriors in place: shifted by the row's largest, floored at the cutoff, exponentiated,
                # the floored ones set to exactly 0, normalised (a cut to -inf would cost a slow exp(-inf))
                gamma, row = logp_buf[: b * t], row_buf[: b * t]
                torch.mm(z, a, out=gamma)
                gamma.sub_(torch.amax(gamma, 1, keepdim=True, out=row)).clamp_min_(cutoff).exp_()
                torch.threshold_(gamma, floor, 0.0)
                gamma.div_(torch.sum(gamma, 1, keepdim=True, out=row))
                s[i0 - b0 : i0 - b0 + b].baddbmm_(gamma.view(b, t, K).transpose(1, 2), z3)
        yield b0, b0 + len(s), s


def fv_statistics(
    x: torch.Tensor,
    params: GMMParams,
    mask: torch.Tensor | None = None,
    chunk_rows: int | None = None,
    centre: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zeroth, first and second order statistics of descriptor sets ``x`` (B, T, D) under ``params``.

    ``mask`` (B, T), true for real descriptors, leaves out padding; ``centre`` (D,) is subtracted from
    the descriptors first (``params`` must then be relative to it too). Returns S0 (B, K), S1 (B, K, D),
    S2 (B, K, D) and the descriptor counts (B,). Differentiable (when autograd records, the chunks are
    built by out-of-place operations); at most ``chunk_rows`` descriptor rows are processed at once
    (default: a cache-sized block on the CPU, a large one on a GPU).
    """
    B, T, D = x.shape
    rows = chunk_rows or chunk_rows_for(x.device)
    a = posterior_map(params)
    if _needs_grad(x, params):
        s = _statistics_autograd(x, a, mask, rows, centre)
    else:
        with torch.no_grad():
            s = x.new_empty((B, params.n_components, 2 * D + 1))
            for i0, i1, block in _statistics_blocks(x, a, mask, rows, centre):
                s[i0:i1] = block
    if mask is None:
        count = torch.full((B,), float(T), dtype=x.dtype, device=x.device)
    else:
        count = mask.to(x.dtype).sum(1)
    return s[..., 2 * D], s[..., :D], s[..., D : 2 * D], count


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
    if not _needs_grad(s1, params) and not s0.requires_grad and not s2.requires_grad:
        return _fv_fast(s0, s1, s2, t, params, convention)
    f_w = (s0 / t - w) / sw
    s0e = s0[..., None]
    f_mu = (s1 - s0e * mu) / (t[..., None] * sw[:, None] * var.sqrt())
    f_var = (s2 - 2 * mu * s1 + s0e * (mu.square() - var)) / (t[..., None] * math.sqrt(2) * sw[:, None] * var)
    if convention == "skimage":
        f_var = -f_var
    return torch.cat([f_w, f_mu.flatten(1), f_var.flatten(1)], dim=1)


@torch.no_grad()
def _fv_fast(s0, s1, s2, t, params: GMMParams, convention: str, out=None) -> torch.Tensor:
    """:func:`fv_from_statistics` without autograd, into ``out`` if given: the per-(k, d) coefficients
    of the statistics are formed once and every block is written in place (5 passes over it, not 12)."""
    w, mu, var = params.weights, params.means, params.variances
    B, K, D = s1.shape
    out = s1.new_empty((B, (2 * D + 1) * K)) if out is None else out
    f_w, f_mu, f_var = out[:, :K], out[:, K : K + K * D].view(B, K, D), out[:, K + K * D :].view(B, K, D)
    inv_t = t.reciprocal()
    sw = w.sqrt()[:, None]
    torch.sub(s0 * inv_t, w, out=f_w).div_(sw.T)
    s0t = (s0 * inv_t)[..., None]  # (B, K, 1)
    c1 = (sw * var.sqrt()).reciprocal()  # F_mu = (S1 / T) c1 - (S0 / T) mu c1
    torch.mul(s1, c1, out=f_mu).mul_(inv_t[..., None]).addcmul_(s0t, mu * c1, value=-1)
    e1 = (math.sqrt(2) * sw * var).reciprocal()  # F_sigma2 = ((S2 - 2 mu S1) / T + (S0 / T)(mu^2 - var)) e1
    if convention == "skimage":
        e1 = -e1
    torch.mul(s2, e1, out=f_var).addcmul_(s1, -2 * mu * e1).mul_(inv_t[..., None])
    f_var.addcmul_(s0t, (mu.square() - var) * e1)
    return out


def encode_sets(
    sets: torch.Tensor | Sequence[torch.Tensor],
    params: GMMParams,
    centre: torch.Tensor | None,
    *,
    convention: str = "paper",
    power: float | None = 0.5,
    l2: bool = True,
    chunk_rows: int | None = None,
    name: str = "descriptors",
    raw=None,
    offset: int = 0,
) -> torch.Tensor:
    """Normalised Fisher vectors of prepared sets (on the device and in the dtype of ``params``, which
    are relative to ``centre``). Non-finite vectors raise a DataError naming their images, found in
    ``raw`` (the sets as the caller received them, default ``sets``) and numbered from ``offset``."""
    first = sets if isinstance(sets, torch.Tensor) else sets[0]
    rows = chunk_rows or chunk_rows_for(first.device)
    if _needs_grad(first, params):  # differentiable: through fv_statistics and fv_from_statistics
        parts = []
        for _, x, mask in padded_batches(sets, rows):
            stats = fv_statistics(x, params, mask, rows, centre)
            parts.append(normalize_fv(fv_from_statistics(*stats, params, convention), power, l2))
        fv = torch.cat(parts)
    else:
        D = params.dim
        fv = first.new_empty((len(sets), fisher_dim(params.n_components, D)))
        groups = [(slice(0, len(sets)), sets, None)] if isinstance(sets, torch.Tensor) else None
        a = posterior_map(params)
        with torch.no_grad():
            for sl, x, mask in groups or padded_batches(sets, rows):
                # each group of images: statistics, then their vectors built and normalised in place
                # while the statistics are still in cache
                for i0, i1, s in _statistics_blocks(x, a, mask, rows, centre):
                    t = s[..., 2 * D].new_full((i1 - i0, 1), float(x.shape[1]))
                    if mask is not None:
                        t = mask[i0:i1].sum(1, keepdim=True, dtype=s.dtype).clamp_min_(1)
                    out = fv[sl.start + i0 : sl.start + i1]
                    _fv_fast(s[..., 2 * D], s[..., :D], s[..., D : 2 * D], t, params, convention, out)
                    normalize_fv_inplace(out, power, l2)
    # NaN or infinity in a descriptor reaches every entry of its image's vector (normalised or not), so
    # one check of the output's row sums stands for a pass over all the descriptors
    bad = ~torch.isfinite(fv.sum(1))
    if bool(bad.any()):
        bad[bad.clone()] = ~torch.isfinite(fv[bad]).all(1)
    if bool(bad.any()):
        images = torch.nonzero(bad).flatten().tolist()
        check_finite_sets(sets if raw is None else raw, name, offset, images)
        raise DataError(
            f"the Fisher vectors of {len(images)} images (first: {[offset + i for i in images[:5]]}) "
            f"overflow {str(fv.dtype).removeprefix('torch.')} arithmetic although their {name} are finite; "
            "rescale the descriptors or compute in float64"
        )
    return fv


def fisher_vectors(
    descriptors,
    gmm,
    *,
    power: float | None = 0.5,
    l2: bool = True,
    convention: str = "paper",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Fisher vectors (n, (2D + 1) K) of n descriptor sets under a diagonal GMM.

    ``descriptors``: a dense (n, T, D) array or tensor, or a list of (T_i, D) arrays (T_i may vary).
    ``gmm``: a fitted DiagonalGMM, GMMParams or diagonal sklearn GaussianMixture. ``power`` and
    ``l2``: the normalisations (see :func:`normalize_fv`); ``convention``: ``"paper"`` or
    ``"skimage"`` (see :mod:`deepfeat.features.fisher.encoding`). Returned in ``dtype`` (default
    float32, whatever the descriptors' type: pass ``torch.float64`` to ask for double precision) and
    computed in it, except float64 for a mixture too spread out for float32 (:func:`working_dtype`), on
    ``device`` (default: the descriptors' device). ``chunk_rows``: descriptor rows processed at once.
    Differentiable with respect to the descriptors when they require gradients.
    """
    check_convention(convention)
    check_power(power)
    if chunk_rows is not None:
        check_int("chunk_rows", chunk_rows, 1)
    sets = as_descriptor_sets(descriptors, "descriptors")
    first = sets if isinstance(sets, torch.Tensor) else sets[0]
    requested = dtype or torch.float32
    device = check_device(device) if device is not None else first.device
    params = as_gmm_params(gmm)
    dtype = working_dtype(params, requested)
    params = params.to(device, dtype)
    if first.shape[-1] != params.dim:
        raise DataError(f"descriptors have dimension {first.shape[-1]}, the GMM was fitted on {params.dim}")
    if isinstance(sets, torch.Tensor):
        sets = sets.to(device=device, dtype=dtype)
    else:
        sets = [s.to(device=device, dtype=dtype) for s in sets]
    params, centre = centred_params(params)
    fv = encode_sets(sets, params, centre, convention=convention, power=power, l2=l2, chunk_rows=chunk_rows)
    return fv.to(requested)
