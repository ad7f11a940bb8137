"""Sample and class weights of a probe's training loss, as scikit-learn defines them.

A sample weight s_i multiplies sample i's loss (an integer weight is that many copies of the sample);
a class weight multiplies the loss of every sample of its class; ``"balanced"`` gives class c the
weight (total weight) / (classes x total weight of c), scikit-learn's ``compute_class_weight`` with
sample weights. The probes fold both into per-entry weights of the objective (0: an entry left out),
beside the multi-label mask of ignored entries. The C search scores a validation fold with the sample
weights only (class weights shape the training loss, not the criterion), as ``LogisticRegressionCV``
does.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from deepfeat.errors import ConfigError, DataError
from deepfeat.report.wording import listed


def check_class_weight(class_weight) -> None:
    """``None``, ``"balanced"`` or a mapping {label: positive weight}; a clear error otherwise."""
    if class_weight is None or (isinstance(class_weight, str) and class_weight == "balanced"):
        return
    if not isinstance(class_weight, Mapping):
        raise ConfigError(
            f"class_weight must be None, 'balanced' or a dict {{label: weight}}, got {class_weight!r}"
        )
    for label, value in class_weight.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(f"class_weight[{label!r}] must be a positive number, got {value!r}")
        if not np.isfinite(value) or value <= 0:
            raise ConfigError(f"class_weight[{label!r}] must be a positive finite number, got {value!r}")


def check_sample_weight(sample_weight, n_samples: int) -> np.ndarray | None:
    """float64 (n,) sample weights (None stays None); a clear error for a wrong shape, non-numeric,
    negative, NaN or infinite values, or weights that are all zero."""
    if sample_weight is None:
        return None
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"sample_weight must be numbers, one per sample ({exc})") from None
    if w.ndim == 0:
        w = np.full(n_samples, float(w))
    if w.shape != (n_samples,):
        raise DataError(f"sample_weight must have shape ({n_samples},), one weight per sample, got {w.shape}")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise DataError(
            f"sample_weight must be finite and non-negative; rows {listed(bad.tolist(), 5)} are not "
            f"(e.g. {float(w[bad[0]])})"
        )
    if not w.any():
        raise DataError("sample_weight is zero for every sample: nothing to fit")
    return w


def class_weights(class_weight, classes: np.ndarray, codes: np.ndarray, sample_weight) -> np.ndarray:
    """Per-class weights (K,) of single-label class codes (n,) for ``class_weight`` (see the module)."""
    K = len(classes)
    if class_weight is None:
        return np.ones(K)
    if isinstance(class_weight, str):  # "balanced"
        totals = np.bincount(codes, weights=sample_weight, minlength=K)
        return totals.sum() / (K * np.maximum(totals, np.finfo(np.float64).tiny))
    known = {_plain(label): k for k, label in enumerate(classes)}
    unknown = [label for label in class_weight if label not in known]
    if unknown:
        raise ConfigError(
            f"class_weight names labels {listed(unknown, 5)} that are not among the classes "
            f"{listed(list(known), 8)}; its keys must be class labels"
        )
    weights = np.ones(K)
    for label, value in class_weight.items():
        weights[known[label]] = float(value)
    return weights


def entry_weights(
    codes: np.ndarray,
    mask: np.ndarray | None,
    classes: np.ndarray,
    class_weight,
    sample_weight: np.ndarray | None,
) -> np.ndarray | None:
    """The training loss's entry weights: (n, K) for multi-label targets (the mask of counted entries
    times the sample weights), (n, 1) for class codes (sample times class weights), or None where every
    weight is 1. A clear error where a class (or a label's positives or negatives) is left without
    weight."""
    if codes.ndim == 2:
        if class_weight is not None:
            raise ConfigError(
                "class_weight applies to single-label targets; for multi-label targets weight the "
                "samples (sample_weight) or leave entries out (ignore)"
            )
        if sample_weight is None:
            return mask
        weights = sample_weight[:, None] * (1.0 if mask is None else mask)
        counted = weights > 0
        pos, neg = (counted & (codes == 1)).any(0), (counted & (codes == 0)).any(0)
        bad = np.flatnonzero(~(pos & neg))
        if bad.size:
            raise DataError(
                f"labels {listed(bad.tolist(), 8)} have no positive or no negative sample of non-zero "
                "weight; a one-vs-rest probe needs both"
            )
        return weights
    if class_weight is None and sample_weight is None:
        return None
    weights = class_weights(class_weight, classes, codes, sample_weight)[codes]
    if sample_weight is not None:
        weights = weights * sample_weight
    empty = np.flatnonzero(np.bincount(codes, weights=weights, minlength=len(classes)) <= 0)
    if empty.size:
        raise DataError(
            f"classes {listed([_plain(classes[k]) for k in empty], 8)} have zero total sample weight; "
            "give their samples weight or leave the class out"
        )
    return weights[:, None]


def _plain(label):
    """A label as written: ``0`` or ``'cat'``, not ``np.int64(0)``."""
    return label.item() if isinstance(label, np.generic) else label


def refuse_weighted_map(sample_weight) -> None:
    """A clear error for sample weights given to a multi-label score (mean average precision, which
    counts every sample once; leave samples out instead)."""
    if sample_weight is not None:
        raise ConfigError(
            "score of multi-label targets is mean average precision, which takes no sample weights; "
            "score the samples to count (X[keep], Y[keep]) instead"
        )
