"""Descriptor sets: conv-map descriptors, the checks and conversions every entry point shares, the
per-image random subset, padded groups of sets of varying length, and the descriptor PCA.

A conv map (C, H, W) of one image gives H*W descriptors of dimension C, one per spatial position.
Maps come as (n, C, H, W) arrays, or as flat rows (n, C*H*W) (channel-major, as the feature store
keeps unrolled maps) with ``layer_shape=(C, H, W)``. Ready-made descriptor sets come as a dense
(n, T, D) array or a list of (T_i, D) arrays of varying T_i.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher._common import CHUNK_ROWS, check_layer_shape
from deepfeat.validation import refuse_complex, refuse_sparse

__all__ = [
    "DescriptorPCA",
    "as_descriptor_sets",
    "check_finite_sets",
    "conv_descriptors",
    "padded_batches",
    "subsample_descriptors",
]


def _to_tensor(a, name: str) -> torch.Tensor:
    refuse_sparse(a, name, "descriptors are dense arrays")
    if isinstance(a, torch.Tensor):
        refuse_complex(a, name, "real descriptors only")
        return a
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric arrays ({exc})") from None
    refuse_complex(arr, name, "real descriptors only")
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


def check_finite_sets(sets, name: str, offset: int = 0, images: Sequence[int] | None = None) -> None:
    """DataError naming the images (numbered from ``offset``) that hold NaN or infinite values;
    ``images``: examine only these indices of ``sets``."""
    idx = list(range(len(sets))) if images is None else [int(i) for i in images]
    if isinstance(sets, torch.Tensor) and images is None:
        flags = _nonfinite_images(sets)
    else:
        flags = torch.tensor([bool(_nonfinite_images(sets[i][None])[0]) for i in idx], dtype=torch.bool)
    if bool(flags.any()):
        bad = [idx[i] for i in torch.nonzero(flags).flatten().tolist()]
        total = sum(int((~torch.isfinite(sets[i])).sum()) for i in bad)
        raise DataError(
            f"{name} hold {total} NaN or infinite values in {len(bad)} images (first: "
            f"{[offset + i for i in bad[:5]]}); clean or drop those images"
        )


def conv_descriptors(maps, layer_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Descriptors (n, H*W, C) of conv maps (n, C, H, W), or of flat rows (n, C*H*W) with
    ``layer_shape=(C, H, W)``: one C-dimensional descriptor per spatial position."""
    x = _to_tensor(maps, "maps")
    shape = check_layer_shape(layer_shape)
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


# --- PCA ------------------------------------------------------------------------------------------


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
