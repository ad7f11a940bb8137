"""Validation and reshaping of the inputs shared by the analysis functions (private).

Activations arrive as (n, C) vectors (already spatially reduced), as (n, C, H, W) maps, or as flat rows
(n, C*H*W) in channel-major order (the feature store's ``unroll``) together with ``layer_shape``. They
are viewed as an (n, C, S) array, S = H*W (1 for vectors), without copying where numpy allows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from deepfeat.errors import ConfigError, DataError

#: Values per block when arrays are scanned or processed piecewise (bounds temporary memory).
BLOCK_ELEMENTS = 1 << 23


def to_numpy(x: ArrayLike | torch.Tensor) -> np.ndarray:
    """A numpy view of an array-like or a (CPU or device) tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_maps(
    activations: ArrayLike | torch.Tensor,
    layer_shape: Sequence[int] | None = None,
    name: str = "activations",
) -> np.ndarray:
    """(n, C, S) view of activations given as (n, C), (n, C, H, W) or flat rows plus ``layer_shape``."""
    arr = to_numpy(activations)
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float32)
    if layer_shape is not None:
        shape = tuple(int(s) for s in layer_shape)
        if len(shape) not in (1, 3) or any(s < 1 for s in shape):
            raise ConfigError(
                f"layer_shape must be (C,) or (C, H, W) with positive sizes, got {layer_shape!r}"
            )
        size = int(np.prod(shape))
        if arr.ndim < 2 or int(np.prod(arr.shape[1:])) != size:
            raise DataError(
                f"{name} of shape {arr.shape} do not hold rows of layer_shape {shape} ({size} values per row)"
            )
        arr = arr.reshape(arr.shape[0], shape[0], size // shape[0])
    elif arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 4:
        arr = arr.reshape(arr.shape[0], arr.shape[1], arr.shape[2] * arr.shape[3])
    elif arr.ndim != 3:
        raise DataError(
            f"{name} must be (n, C) vectors, (n, C, H, W) maps or flat rows with layer_shape; got shape "
            f"{arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DataError(f"{name} are empty (shape {arr.shape}); need at least one image and one filter")
    return arr


def as_matrix(features: ArrayLike | torch.Tensor, name: str = "features") -> np.ndarray:
    """(n, d) float matrix: (n, d) as is, higher-rank arrays flattened per row (channel-major)."""
    arr = to_numpy(features)
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise DataError(f"{name} must be (n_samples, n_features) or (n, C, H, W); got shape {arr.shape}")
    arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} are empty (shape {arr.shape})")
    return arr.astype(np.float32, copy=False) if arr.dtype.kind != "f" else arr


def check_finite(maps: np.ndarray, name: str = "activations", nonnegative: bool = False) -> None:
    """Scan the (n, C, S) array in row blocks; a DataError naming the filters with NaN, inf (or, when
    ``nonnegative``, negative values)."""
    n = maps.shape[0]
    rows = max(1, BLOCK_ELEMENTS // max(1, maps.shape[1] * maps.shape[2]))
    bad = np.zeros(maps.shape[1], dtype=bool)
    negative = np.zeros(maps.shape[1], dtype=bool)
    for r0 in range(0, n, rows):
        block = maps[r0 : r0 + rows]
        bad |= ~np.isfinite(block).all(axis=(0, 2))
        if nonnegative:
            negative |= (block < 0).any(axis=(0, 2))
    if bad.any():
        which = np.flatnonzero(bad)
        raise DataError(
            f"{name} hold NaN or infinite values in {which.size} filters (first: {which[:5].tolist()}); "
            "clean or drop those images"
        )
    if negative.any():
        which = np.flatnonzero(negative)
        raise DataError(
            f"{name} hold negative values in {which.size} filters (first: {which[:5].tolist()}); score "
            "weights need non-negative responses (outputs of a ReLU or pooling after one)"
        )


@dataclass(frozen=True)
class Labels:
    """Validated labels: ``codes`` (n,) class indices 0..K-1 for single-label data (None for multi-label),
    ``indicator`` (n, K) booleans, ``classes`` the original label values (or column indices)."""

    codes: np.ndarray | None
    indicator: np.ndarray
    classes: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def multilabel(self) -> bool:
        return self.codes is None


def check_labels(
    labels: ArrayLike | torch.Tensor,
    n: int,
    name: str = "labels",
    n_classes: int | None = None,
    allow_multilabel: bool = False,
) -> Labels:
    """Integer labels (n,) (or, with ``allow_multilabel``, a 0/1 indicator matrix (n, K)) for n items.

    With ``n_classes`` the labels must be 0..n_classes-1 and every class must occur; without it, the
    distinct values found are the classes. At least 2 classes are needed.
    """
    arr = to_numpy(labels)
    if arr.ndim == 2 and allow_multilabel:
        if arr.shape[0] != n:
            raise DataError(f"{name} has {arr.shape[0]} rows but there are {n} images")
        if not np.isin(arr, (0, 1)).all():
            raise DataError(f"{name} as a matrix must be a 0/1 indicator matrix (images x classes)")
        ind = arr.astype(bool)
        empty = np.flatnonzero(~ind.any(axis=0))
        if empty.size:
            raise DataError(f"{name}: classes {empty[:10].tolist()} have no positive image; drop them")
        if ind.shape[1] < 1:
            raise DataError(f"{name} has no class column")
        return Labels(None, ind, np.arange(ind.shape[1]))
    if arr.ndim != 1:
        what = "a vector (n,) of class labels" + (
            " or an indicator matrix (n, K)" if allow_multilabel else ""
        )
        raise DataError(f"{name} must be {what}; got shape {arr.shape}")
    if arr.shape[0] != n:
        raise DataError(f"{name} has {arr.shape[0]} entries but there are {n} images")
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise DataError(f"{name} must hold whole-number class labels")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{name} must hold integer class labels; got dtype {arr.dtype}")
    if n_classes is not None:
        if n_classes < 2:
            raise ConfigError(f"n_classes must be at least 2, got {n_classes}")
        if arr.min() < 0 or arr.max() >= n_classes:
            raise DataError(
                f"{name} must lie in 0..{n_classes - 1} (n_classes={n_classes}); "
                f"found {arr.min()}..{arr.max()}"
            )
        counts = np.bincount(arr, minlength=n_classes)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise DataError(
                f"{name}: classes {empty[:10].tolist()} have no image; give images of every class "
                "or leave n_classes out"
            )
        classes, codes = np.arange(n_classes), arr.astype(np.int64)
    else:
        classes, codes = np.unique(arr, return_inverse=True)
        codes = codes.astype(np.int64)
    if len(classes) < 2:
        raise DataError(
            f"{name} hold a single class ({classes[:1].tolist()[0]!r}); the analysis compares classes "
            "and needs 2 or more"
        )
    ind = np.zeros((n, len(classes)), dtype=bool)
    ind[np.arange(n), codes] = True
    return Labels(codes, ind, classes)


def check_levels(thresholds: int | Sequence[float], name: str = "thresholds") -> np.ndarray:
    """Relative threshold levels in [0, 1], strictly increasing: ``thresholds`` evenly spaced levels from 0
    to 1, or the given levels."""
    if isinstance(thresholds, bool):
        raise ConfigError(f"{name} must be a count (>= 2) or a list of levels in [0, 1], got {thresholds!r}")
    if isinstance(thresholds, int | np.integer):
        if thresholds < 2:
            raise ConfigError(f"{name} must be at least 2 (levels from 0 to 1), got {thresholds}")
        return np.linspace(0.0, 1.0, int(thresholds))
    try:
        levels = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} must be a count or a list of levels in [0, 1], got {thresholds!r}"
        ) from None
    if levels.ndim != 1 or levels.size < 2:
        raise ConfigError(f"{name} must hold at least 2 levels in [0, 1], got {thresholds!r}")
    if not np.isfinite(levels).all() or levels.min() < 0 or levels.max() > 1:
        raise ConfigError(f"{name} levels must lie in [0, 1] (0: lowest response, 1: highest), got {levels}")
    if (np.diff(levels) <= 0).any():
        raise ConfigError(f"{name} levels must be strictly increasing, got {levels}")
    return levels


def check_fractions(fractions: Sequence[float], name: str = "fractions") -> np.ndarray:
    """Fractions of filters in (0, 1]."""
    try:
        arr = np.asarray(fractions, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be numbers in (0, 1], got {fractions!r}") from None
    if arr.size == 0 or not np.isfinite(arr).all() or (arr <= 0).any() or (arr > 1).any():
        raise ConfigError(f"{name} must be a non-empty list of numbers in (0, 1], got {fractions!r}")
    return arr


def filter_chunks(
    n_filters: int, values_per_filter: int, chunk_size: int | None, outputs_per_filter: int = 1
) -> list[tuple[int, int]]:
    """(start, stop) ranges of filters processed together, sized so that neither the responses
    (``values_per_filter`` each) nor the per-filter outputs (e.g. thresholds x classes) of a chunk exceed
    about ``BLOCK_ELEMENTS`` values; ``chunk_size`` (filters) caps it further."""
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1
    ):
        raise ConfigError(f"chunk_size must be a positive number of filters or None, got {chunk_size!r}")
    size = max(1, BLOCK_ELEMENTS // max(1, values_per_filter, outputs_per_filter))
    if chunk_size is not None:
        size = min(size, int(chunk_size))
    return [(f0, min(n_filters, f0 + size)) for f0 in range(0, n_filters, size)]
