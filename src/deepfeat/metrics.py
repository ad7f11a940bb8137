"""Classification metrics for scoring transfer-learning probes: average precision (PASCAL VOC style),
per-class accuracy (DeCAF's "average accuracy per class") and top-k accuracy.

Average precision summarises a ranking of items by score. Walking down the ranking, every distinct
score is a threshold; at each one, precision is the fraction of items scored at or above it that are
positive, and recall is the fraction of all positives scored at or above it. Two summaries are used:

``"voc07"``
    The 11-point interpolated AP of the VOC2007 devkit. For each recall level t in 0, 0.1, ..., 1
    take the best precision reached at any threshold whose recall is at least t, and average those
    11 numbers. Recall levels are compared exactly (``10 * tp >= k * n_pos``), so a recall of
    exactly 3/10 counts for t = 0.3 despite floating-point rounding.
``"area"``
    The AP of the VOC2010 and later devkits. Precision is first replaced by its upper envelope, the
    best precision at the same or any higher recall, so it never rises as recall grows; AP is then
    the area under that stepwise curve: the sum, over the thresholds where recall grows, of the
    recall gained times the envelope precision there. Without the envelope this is scikit-learn's
    ``average_precision_score``, which it equals whenever precision at the positives already falls
    monotonically, and never exceeds.

Tied scores form one threshold: the curve only has points at distinct scores, as in scikit-learn's
``precision_recall_curve``, so AP never depends on the order of the input. (The VOC devkit sorts
instead and so breaks ties by input order.) Items marked ``difficult`` are left out entirely, as
in the devkit: they are neither positives nor negatives. A problem without any positive has no
defined AP; the functions return NaN for it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from deepfeat.errors import ConfigError
from deepfeat.validation import check_choice

APMethod = Literal["area", "voc07"]
AP_METHODS = ("area", "voc07")


# --- validation ---------------------------------------------------------------------------------------


def _check_method(method: str) -> None:
    check_choice("AP method", method, AP_METHODS)


def _finite_scores(scores: ArrayLike, ndim: int, name: str = "scores") -> np.ndarray:
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be numbers: {exc}") from None
    if s.ndim != ndim:
        shape = "a 1-D vector" if ndim == 1 else "a 2-D (items, classes) matrix"
        raise ConfigError(f"{name} must be {shape}; got shape {s.shape}")
    bad = int(np.count_nonzero(~np.isfinite(s)))
    if bad:
        raise ConfigError(f"{name} contain {bad} NaN or infinite values; every item needs a finite score")
    return s


def _binary_labels(y: ArrayLike, shape: tuple[int, ...], name: str = "y_true") -> np.ndarray:
    arr = np.asarray(y)
    if arr.shape != shape:
        raise ConfigError(f"{name} has shape {arr.shape} but the scores have shape {shape}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf":
        raise ConfigError(f"{name} must hold 0/1 labels; got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        found = np.unique(arr[bad])[:5]
        raise ConfigError(f"{name} must hold only 0 and 1 (or booleans); found {found.tolist()}")
    return arr == 1


def _mask(difficult: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    if difficult is None:
        return np.zeros(shape, dtype=bool)
    return _binary_labels(difficult, shape, name="difficult")


def _class_indices(y: ArrayLike, name: str, n_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D vector of class indices; got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise ConfigError(f"{name} must hold whole-number class indices")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise ConfigError(f"{name} must hold integer class indices; got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ConfigError(f"{name} holds negative class index {int(arr.min())}")
    if n_classes is not None and arr.size and arr.max() >= n_classes:
        raise ConfigError(
            f"{name} holds class index {int(arr.max())}, but there are only {n_classes} classes "
            f"(valid: 0..{n_classes - 1})"
        )
    return arr.astype(np.int64, copy=False)


# --- average precision --------------------------------------------------------------------------------


def _ap(y: np.ndarray, s: np.ndarray, method: str) -> float:
    """AP of validated arrays: y bool, s finite float, both 1-D, difficult items already removed."""
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")[::-1]
    s_sorted, y_sorted = s[order], y[order]
    # last item of each run of equal scores: the points of the PR curve
    ends = np.append(np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1)
    tp = np.cumsum(y_sorted)[ends]
    precision = tp / (ends + 1.0)
    # upper envelope: best precision at this or any later (higher-recall) point
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    if method == "area":
        gained = np.diff(tp, prepend=0)
        return float(np.dot(gained, envelope) / n_pos)
    # first point whose recall reaches k/10, compared exactly in integers
    first = np.searchsorted(10 * tp, np.arange(11) * n_pos, side="left")
    padded = np.append(envelope, 0.0)  # recall level never reached: precision 0
    return float(padded[first].mean())


def average_precision(
    y_true: ArrayLike,
    scores: ArrayLike,
    *,
    method: APMethod = "area",
    difficult: ArrayLike | None = None,
) -> float:
    """Average precision of one binary problem (``y_true`` 0/1, higher score = more positive).

    ``method`` is ``"area"`` (VOC2010+) or ``"voc07"`` (11-point); ``difficult`` marks items to leave
    out. Tied scores count as one threshold. Returns NaN when no positive is left.
    """
    _check_method(method)
    s = _finite_scores(scores, ndim=1)
    y = _binary_labels(y_true, s.shape)
    keep = ~_mask(difficult, s.shape)
    return _ap(y[keep], s[keep], method)


def _indicator_matrix(Y: ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(Y)
    if arr.ndim == 1:
        if arr.shape[0] != shape[0]:
            raise ConfigError(f"Y has {arr.shape[0]} items but the scores have {shape[0]} rows")
        idx = _class_indices(arr, "Y", n_classes=shape[1])
        onehot = np.zeros(shape, dtype=bool)
        onehot[np.arange(shape[0]), idx] = True
        return onehot
    return _binary_labels(arr, shape, name="Y")


def average_precision_per_class(
    Y: ArrayLike,
    S: ArrayLike,
    *,
    method: APMethod = "area",
    difficult: ArrayLike | None = None,
) -> np.ndarray:
    """AP of every class, one-vs-rest: ``Y`` an (n, C) 0/1 indicator matrix or a length-n vector of
    class indices, ``S`` an (n, C) score matrix, ``difficult`` an optional (n, C) mask.

    Returns C values, NaN for classes without a positive.
    """
    _check_method(method)
    s = _finite_scores(S, ndim=2, name="S")
    y = _indicator_matrix(Y, s.shape)
    keep = ~_mask(difficult, s.shape)
    return np.array([_ap(y[keep[:, c], c], s[keep[:, c], c], method) for c in range(s.shape[1])])


def mean_average_precision(
    Y: ArrayLike,
    S: ArrayLike,
    *,
    method: APMethod = "area",
    difficult: ArrayLike | None = None,
) -> float:
    """Mean of the per-class APs over the classes that have at least one positive."""
    ap = average_precision_per_class(Y, S, method=method, difficult=difficult)
    if np.isnan(ap).all():
        raise ConfigError("no class has a positive item (after leaving out difficult ones); mAP is undefined")
    return float(np.nanmean(ap))


# --- accuracies ---------------------------------------------------------------------------------------


def per_class_accuracy(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> np.ndarray:
    """Fraction of the items of each class predicted as that class (recall per class).

    Classes ``0 .. n_classes - 1`` (default: up to the largest label seen); NaN for a class absent
    from ``y_true``.
    """
    t = _class_indices(y_true, "y_true", n_classes)
    p = _class_indices(y_pred, "y_pred", n_classes)
    if t.shape != p.shape:
        raise ConfigError(f"y_true has {t.size} items but y_pred has {p.size}")
    if n_classes is None:
        n_classes = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    elif n_classes < 1:
        raise ConfigError(f"n_classes must be at least 1; got {n_classes}")
    count = np.bincount(t, minlength=n_classes).astype(np.float64)
    correct = np.bincount(t[t == p], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, correct / count, np.nan)


def mean_per_class_accuracy(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> float:
    """Mean over the classes present in ``y_true`` of the per-class accuracy (DeCAF's "average
    accuracy per class"; scikit-learn's balanced accuracy)."""
    acc = per_class_accuracy(y_true, y_pred, n_classes)
    if np.isnan(acc).all():
        raise ConfigError("y_true is empty; mean per-class accuracy is undefined")
    return float(np.nanmean(acc))


def top_k_accuracy(y_true: ArrayLike, scores: ArrayLike, k: int = 1) -> float:
    """Fraction of items whose true class is among the ``k`` best-scored ones (``scores`` is (n, C)).

    Ties are resolved in the item's favour: the true class is in the top k when fewer than k classes
    have a strictly greater score.
    """
    s = _finite_scores(scores, ndim=2)
    n, n_classes = s.shape
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_classes:
        raise ConfigError(
            f"k must be a whole number from 1 to the number of classes ({n_classes}); got {k!r}"
        )
    t = _class_indices(y_true, "y_true", n_classes)
    if t.size != n:
        raise ConfigError(f"y_true has {t.size} items but the scores have {n} rows")
    if n == 0:
        raise ConfigError("no items to score; top-k accuracy is undefined")
    true_score = s[np.arange(n), t]
    better = np.count_nonzero(s > true_score[:, None], axis=1)
    return float(np.mean(better < k))
