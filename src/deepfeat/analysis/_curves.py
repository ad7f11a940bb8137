"""The vectorised kernel behind entropy and precision curves (private).

For a block of filters, every response is assigned the number of the filter's thresholds it reaches
(one batched ``searchsorted``), and one ``bincount`` over (filter, bin, class) gives the class mass in
every bin. A reversed cumulative sum over the bins then gives, for every threshold, the mass of each
class among the responses at or above it. Cost: O(responses * log(thresholds)) with no per-threshold
pass over the data, and memory O(filters * thresholds * classes) beyond the block itself.
"""

from __future__ import annotations

import numpy as np
import torch

SPATIAL = ("positions", "max", "mean")
SPACINGS = ("linear", "quantile")


def responses(maps: np.ndarray, f0: int, f1: int, spatial: str) -> torch.Tensor:
    """float64 (f1 - f0, M) responses of filters f0..f1-1: every position of every image (``positions``,
    M = n*S, image-major) or one value per image (``max``/``mean`` over positions, M = n)."""
    block = maps[:, f0:f1, :]
    if spatial == "max":
        out = block.max(axis=2).T
    elif spatial == "mean":
        out = block.astype(np.float64).mean(axis=2).T
    else:
        out = block.transpose(1, 0, 2).reshape(f1 - f0, -1)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float64))


def expand_labels(values_per_image: int, codes: np.ndarray | None, indicator: np.ndarray):
    """Per-response class codes (M,) for single-label data, or the indicator rows (M, K) for
    multi-label data, matching :func:`responses`' image-major order."""
    if codes is not None:
        return torch.from_numpy(np.repeat(codes, values_per_image)), None
    return None, torch.from_numpy(np.repeat(indicator.astype(np.float64), values_per_image, axis=0))


def thresholds(values: torch.Tensor, levels: torch.Tensor, spacing: str) -> torch.Tensor:
    """(F, T) thresholds of every filter at relative ``levels`` in [0, 1].

    ``linear``: lo + level * (hi - lo), lo and hi the filter's lowest and highest response.
    ``quantile``: the response at position floor(level * (M - 1)) of the filter's ascending responses.
    Level 0 keeps every response and level 1 keeps the highest ones, so no threshold keeps nothing.
    """
    if spacing == "linear":
        lo = values.amin(dim=1, keepdim=True)
        hi = values.amax(dim=1, keepdim=True)
        # (clamped: lo + 1 * (hi - lo) can round above hi, a threshold that keeps nothing)
        return torch.minimum(lo + levels[None, :] * (hi - lo), hi)
    m = values.shape[1]
    index = torch.floor(levels * (m - 1)).long()
    return values.sort(dim=1).values[:, index]


def mass_above(
    values: torch.Tensor,
    thr: torch.Tensor,
    n_classes: int,
    codes: torch.Tensor | None,
    indicator: torch.Tensor | None,
    weighted: bool = False,
) -> torch.Tensor:
    """(F, T, K) mass of each class among each filter's responses >= each threshold.

    Mass is the count of responses, or with ``weighted`` the sum of the responses themselves. Labels come
    as per-response class ``codes`` (single-label) or ``indicator`` rows (multi-label: a response counts
    for every class its image has).
    """
    f, t = thr.shape
    # bin b = number of thresholds <= value; the value is >= threshold j exactly when b >= j + 1.
    # int32 indices, updated in place (chunks keep f * (t + 1) * n_classes far below 2**31)
    bins = torch.searchsorted(thr.contiguous(), values, right=True, out_int32=True)
    bins.add_((torch.arange(f, dtype=torch.int32) * (t + 1)).unsqueeze(1))
    if codes is not None:
        bins.mul_(n_classes).add_(codes.to(torch.int32).unsqueeze(0))
        weights = values.reshape(-1) if weighted else None
        mass = torch.bincount(bins.view(-1), weights=weights, minlength=f * (t + 1) * n_classes)
        mass = mass.to(torch.float64).view(f, t + 1, n_classes)
    else:
        flat = bins.view(-1)
        per_class = []
        for c in range(n_classes):
            w = indicator[:, c].unsqueeze(0).expand(f, -1)
            if weighted:
                w = w * values
            per_class.append(torch.bincount(flat, weights=w.reshape(-1), minlength=f * (t + 1)))
        mass = torch.stack(per_class, dim=-1).to(torch.float64).view(f, t + 1, n_classes)
    return mass[:, 1:].flip(1).cumsum(1).flip(1)


def count_above(values: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    """(F, T) number of each filter's responses >= each threshold."""
    f, t = thr.shape
    bins = torch.searchsorted(thr.contiguous(), values, right=True, out_int32=True)
    bins.add_((torch.arange(f, dtype=torch.int32) * (t + 1)).unsqueeze(1))
    counts = torch.bincount(bins.view(-1), minlength=f * (t + 1)).view(f, t + 1)
    return counts[:, 1:].flip(1).cumsum(1).flip(1)
