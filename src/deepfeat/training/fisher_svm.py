"""The SVM side of end-to-end Fisher-vector training: one-vs-rest linear SVMs on Fisher vectors with
VOC "difficult" entries left out, their objective, the signal they send back, and per-class AP.

Every function takes ``ignore``/``keep`` masks (n, n_classes): an ignored entry (a label marked
difficult) counts in no class's loss, objective, signal or AP, as the VOC devkit scores it.
"""

from __future__ import annotations

import numpy as np
import torch

from deepfeat.errors import DataError
from deepfeat.metrics import average_precision_per_class
from deepfeat.probes.linear import LinearProbe

GRADIENTS = ("paper", "hinge")
SVM_LOSSES = ("hinge", "squared_hinge")

__all__ = [
    "GRADIENTS",
    "SVM_LOSSES",
    "ap_summary",
    "check_difficult",
    "check_targets",
    "fit_ovr_svm",
    "svm_objective",
    "svm_signal",
]


def check_targets(Y, n: int, name: str = "Y") -> np.ndarray:
    """``Y`` as an (n, n_classes) int64 0/1 indicator matrix; DataError otherwise."""
    y = np.asarray(Y)
    if y.ndim != 2 or y.shape[0] != n or not np.isin(y, (0, 1)).all():
        raise DataError(f"{name} must be an (n_images={n}, n_classes) 0/1 indicator matrix, got {y.shape}")
    return y.astype(np.int64)


def check_difficult(difficult, shape: tuple[int, int], name: str = "difficult") -> np.ndarray | None:
    """``difficult`` as a bool mask of the targets' shape (None stays None); DataError otherwise."""
    if difficult is None:
        return None
    d = np.asarray(difficult)
    if d.shape != shape or not np.isin(d, (0, 1)).all():
        raise DataError(f"{name} must be a {shape} 0/1 (or bool) mask like the targets, got {d.shape}")
    return d.astype(bool)


def fit_ovr_svm(
    F: np.ndarray,
    Y: np.ndarray,
    *,
    loss: str,
    C: float,
    ignore: np.ndarray | None = None,
    random_state: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One binary linear SVM per column of ``Y`` (n, c) on features ``F`` (n, d), trained to its optimum;
    ``ignore`` (n, c) entries are left out of their class's loss. Returns coef (c, d), intercept (c,)."""
    if ignore is None or not ignore.any():
        probe = LinearProbe(loss=loss, C=float(C), random_state=random_state).fit(F, Y)
        return probe.coef_, probe.intercept_
    if loss != "hinge":
        probe = LinearProbe(loss=loss, C=float(C), random_state=random_state).fit(F, Y, ignore=ignore)
        return probe.coef_, probe.intercept_
    # liblinear's hinge takes no per-entry mask: each class on its own rows (the same problem)
    coef = np.zeros((Y.shape[1], F.shape[1]), dtype=np.float32)
    intercept = np.zeros(Y.shape[1], dtype=np.float32)
    for c in range(Y.shape[1]):
        rows = ~ignore[:, c]
        probe = LinearProbe(loss=loss, C=float(C), random_state=random_state).fit(F[rows], Y[rows, c : c + 1])
        coef[c], intercept[c] = probe.coef_[0], probe.intercept_[0]
    return coef, intercept


def svm_objective(
    F: np.ndarray,
    Y: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
    C: float,
    loss: str,
    ignore: np.ndarray | None = None,
) -> float:
    """1/2 ||theta||^2 + C sum_i sum_c loss(y_ic (theta_c . f_i + b_c)) of one-vs-rest SVMs, ignored
    entries left out."""
    margins = (2 * Y - 1) * (F.astype(np.float64) @ coef.T.astype(np.float64) + intercept)
    slack = np.maximum(0.0, 1.0 - margins)
    if ignore is not None:
        slack = np.where(ignore, 0.0, slack)
    data = slack.sum() if loss == "hinge" else np.square(slack).sum()
    return float(0.5 * np.square(coef.astype(np.float64)).sum() + C * data)


def svm_signal(
    fv: torch.Tensor,
    ysign: torch.Tensor,
    theta: torch.Tensor,
    bias: torch.Tensor,
    *,
    gradient: str,
    loss: str,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image, per-class weights a_ic (n, c) of the signal -sum_c a_ic theta_c sent back into f_i.

    ``gradient="paper"``: a_ic = y_ic; ``"hinge"``: the loss's (sub-)gradient, y_ic [y_ic s_ic < 1]
    (hinge) or 2 y_ic max(0, 1 - y_ic s_ic) (squared hinge) with s_ic = theta_c . f_i + b_c. Entries
    where ``keep`` is false (difficult) get a_ic = 0.
    """
    if gradient == "paper":
        a = ysign
    else:
        margins = ysign * (fv @ theta.T + bias)
        hinge = loss == "hinge"
        a = ysign * (margins < 1).to(fv.dtype) if hinge else 2 * ysign * (1 - margins).clamp_min(0)
    return a if keep is None else a * keep.to(a.dtype)


def ap_summary(Y: np.ndarray, scores: np.ndarray, difficult: np.ndarray | None = None) -> dict:
    """Per-class AP (area under the interpolated precision-recall curve) and its mean, and the mean of
    VOC07's 11-point AP; difficult entries left out."""
    ap = average_precision_per_class(Y, scores, difficult=difficult)
    ap07 = average_precision_per_class(Y, scores, method="voc07", difficult=difficult)
    return {
        "ap": [None if np.isnan(a) else round(float(a), 6) for a in ap],
        "map": float(np.nanmean(ap)),
        "map_voc07": float(np.nanmean(ap07)),
    }
