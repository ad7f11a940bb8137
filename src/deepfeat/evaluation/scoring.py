"""How an evaluation scores a fitted probe on test rows: which method ranks its classes, the
single-label accuracies and the multi-label average precisions (see :mod:`deepfeat.metrics`)."""

from __future__ import annotations

import inspect
import numbers

import numpy as np

from deepfeat.metrics import (
    average_precision_per_class,
    mean_per_class_accuracy,
    per_class_accuracy,
    top_k_accuracy,
)


def takes_ignore(probe) -> bool:
    """Whether a probe's ``fit`` takes an ``ignore`` mask (deepfeat's probes but the hinge; not
    scikit-learn's)."""
    if getattr(probe, "loss", None) == "hinge":  # liblinear's hinge SVMs take no mask
        return False
    try:
        return "ignore" in inspect.signature(probe.fit).parameters
    except (TypeError, ValueError):
        return False


def chosen_C(probe) -> float | list | None:
    """A fitted probe's C as plain JSON: the one it chose (``C_``; scikit-learn's CV estimators give
    one per class, as a list) or the one it was given (``C``), None for estimators without a C."""
    C = getattr(probe, "C_", None)
    if C is None:
        C = getattr(probe, "C", None)
        C = C if isinstance(C, numbers.Real) and not isinstance(C, bool) else None
    if isinstance(C, np.ndarray | list | tuple):
        values = np.asarray(C, dtype=float).ravel().tolist()
        return values[0] if len(set(values)) == 1 else values
    return None if C is None else float(C)


def score_method(probe) -> str | None:
    """The method ranking a probe's classes: decision_function, else predict_proba, else None."""
    for method in ("decision_function", "predict_proba"):
        if hasattr(probe, method):
            return method
    return None


def scores_of(probe, X: np.ndarray, y: np.ndarray, n_classes: int, multilabel: bool, difficult):
    scores = getattr(probe, score_method(probe))(X)
    if isinstance(scores, list):  # scikit-learn's multi-output predict_proba: one (n, 2) array per label
        scores = np.column_stack([np.asarray(p)[:, -1] for p in scores])
    scores = np.asarray(scores)
    if scores.ndim == 1:  # a binary probe's single column (scikit-learn convention)
        scores = np.stack([-scores, scores], axis=1)
    if multilabel:
        ap = average_precision_per_class(y, scores, difficult=difficult)
        ap07 = average_precision_per_class(y, scores, method="voc07", difficult=difficult)
        metrics = {
            "map": float(np.nanmean(ap)) if np.isfinite(ap).any() else None,
            "map_voc07": float(np.nanmean(ap07)) if np.isfinite(ap07).any() else None,
        }
        return metrics, [None if np.isnan(v) else float(v) for v in ap]
    # columns of the probe are its classes_; place them on the full class list
    full = np.full((len(X), n_classes), -np.inf, dtype=np.float64)
    full[:, np.asarray(probe.classes_, dtype=np.int64)] = scores
    pred = full.argmax(axis=1)
    metrics = {
        "accuracy": float(np.mean(pred == y)),
        "mean_class_accuracy": mean_per_class_accuracy(y, pred, n_classes=n_classes),
        "top5_accuracy": top_k_accuracy(y, np.nan_to_num(full, neginf=-1e30), k=5) if n_classes > 5 else None,
    }
    pca = per_class_accuracy(y, pred, n_classes=n_classes)
    return metrics, [None if np.isnan(v) else float(v) for v in pca]
