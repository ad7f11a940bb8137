"""Choosing the regularisation constant C by cross-validation on the training data only.

Folds are stratified for single-label data (their number reduced to the smallest class size when a
class has fewer samples than folds) and shuffled k-fold for multi-label data. The C grid is walked
from the smallest C upwards, each fold's fit starting from its fit at the previous C. With
``path_patience`` set, the walk stops once the mean validation score has stayed below the best one
for that many consecutive Cs (the validation curve of an L2-regularised linear model rises then
falls); ``None`` (the default) evaluates the whole grid. The best mean score wins; ties go to the
smaller C.

The search talks to a probe through :class:`PathProbe`, three public methods any probe can offer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from deepfeat.errors import ConfigError
from deepfeat.probes.base import SCORINGS
from deepfeat.validation import check_choice

__all__ = ["PathProbe", "make_folds", "score_predictions", "select_C"]


def make_folds(codes: np.ndarray, n_folds, random_state) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Train/validation index pairs, or None when some class is too small to be split.

    For a number of folds: stratified for class codes (fewer folds when the smallest class has fewer
    samples than ``n_folds``), shuffled k-fold for a multi-label indicator matrix. A splitter's folds
    of (codes) or given index pairs are taken as they are, checked."""
    if not isinstance(n_folds, int | np.integer):
        return _given_folds(codes, n_folds)
    if codes.ndim == 2:
        if len(codes) < n_folds:
            return None
        return list(KFold(n_folds, shuffle=True, random_state=random_state).split(codes))
    smallest = int(np.bincount(codes).min())
    if smallest < 2:
        return None
    folds = StratifiedKFold(min(n_folds, smallest), shuffle=True, random_state=random_state)
    return list(folds.split(np.zeros(len(codes)), codes))


def _given_folds(codes: np.ndarray, cv) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds of a splitter (split on the targets) or of (train, validation) index pairs, checked."""
    n = len(codes)
    pairs = list(cv.split(np.zeros((n, 1)), codes) if hasattr(cv, "split") else cv)
    folds = []
    for f, pair in enumerate(pairs):
        try:
            parts = [np.asarray(part) for part in pair]
        except TypeError:
            parts = []
        if len(parts) != 2:
            raise ConfigError(f"cv fold {f} must be a (train, validation) pair of index arrays")
        for name, part in zip(("train", "validation"), parts):
            if (
                part.ndim != 1
                or part.size == 0
                or part.dtype.kind not in "iu"
                or not 0 <= part.min() <= part.max() < n
            ):
                raise ConfigError(
                    f"cv fold {f}: its {name} part must be a non-empty vector of indices 0..{n - 1}"
                )
        folds.append((parts[0], parts[1]))
    if not folds:
        raise ConfigError("cv gave no folds")
    return folds


def score_predictions(
    scoring: str, codes: np.ndarray, scores: np.ndarray, mask=None, sample_weight=None
) -> float:
    """Score decision values ``scores`` (n, K) (or (n,) for two classes) against class codes (n,) or an
    indicator matrix (n, K); ``mask``: the counted entries of a multi-label indicator (or entry
    weights, counted where positive); ``sample_weight``: weights of the samples in the accuracies
    (mAP counts the samples of positive weight)."""
    from deepfeat.metrics import mean_average_precision, mean_per_class_accuracy

    scores = np.asarray(scores)
    if scores.ndim == 1:  # two classes: the score of the second one
        scores = np.column_stack([-scores, scores])
    if scoring == "map":
        Y = codes if codes.ndim == 2 else np.eye(scores.shape[1], dtype=np.int64)[codes]
        counted = None if mask is None else np.asarray(mask) > 0
        if sample_weight is not None:
            counted = (sample_weight > 0)[:, None] & (True if counted is None else counted)
        difficult = None if counted is None else ~np.broadcast_to(counted, Y.shape)
        try:
            return mean_average_precision(Y, scores, difficult=difficult)
        except ConfigError:
            return float("nan")
    pred = scores.argmax(axis=1)
    if sample_weight is not None:
        if not np.any(sample_weight > 0):  # a fold of zero-weight samples scores nothing
            return float("nan")
        correct = (pred == codes) * sample_weight
        if scoring == "mean_class_accuracy":
            K = scores.shape[1]
            totals = np.bincount(codes, weights=sample_weight, minlength=K)
            hits = np.bincount(codes, weights=correct, minlength=K)
            return float(np.mean(hits[totals > 0] / totals[totals > 0]))
        return float(correct.sum() / sample_weight.sum())
    if scoring == "mean_class_accuracy":
        return mean_per_class_accuracy(codes, pred, n_classes=scores.shape[1])
    return float(np.mean(pred == codes))


@runtime_checkable
class PathProbe(Protocol):
    """What :func:`select_C` asks of a probe (besides its ``Cs``, ``cv``, ``scoring``,
    ``fallback_C``, ``random_state`` and optional ``path_patience`` parameters).

    - ``prepare_path(X, codes, mask)``: label-free work on the whole training data shared by every
      fold (e.g. one factorisation of the features, or a kernel matrix);
    - ``fit_path(prepared, rows, codes, mask, Cs)``: fits on the training rows ``rows`` for each of
      the increasing ``Cs`` in turn (a generator), each may start from the previous one;
    - ``decision_on(prepared, model, rows)``: decision values (n_rows, K) or (n_rows,) of a fitted
      model of ``fit_path`` for the rows ``rows`` of the prepared data.

    Optional: ``fit_folds_path(prepared, folds, codes, mask, Cs)``, every fold's fit for each C at
    once (a generator of one list per C), or None where the probe prefers ``fit_path`` per fold.
    """

    def prepare_path(self, X: np.ndarray, codes: np.ndarray, mask: np.ndarray | None) -> Any: ...

    def fit_path(
        self, prepared: Any, rows: np.ndarray, codes: np.ndarray, mask: np.ndarray | None, Cs: list[float]
    ) -> Iterator[Any]: ...

    def decision_on(self, prepared: Any, model: Any, rows: np.ndarray) -> np.ndarray: ...


def _fold_models(probe, prepared, folds, codes, mask, Cs) -> Iterator[list]:
    """Every fold's fit for each C in turn (one list per C): from the probe's ``fit_folds_path``
    (all folds at once) where it offers one for this problem, else one ``fit_path`` per fold."""
    batched = getattr(probe, "fit_folds_path", None)
    steps = None if batched is None else batched(prepared, folds, codes, mask, Cs)
    if steps is not None:
        yield from steps
        return
    paths = [
        probe.fit_path(prepared, train, codes[train], None if mask is None else mask[train], Cs)
        for train, _ in folds
    ]
    try:
        for _ in Cs:
            yield [next(path) for path in paths]
    finally:
        for path in paths:
            path.close()


def select_C(
    probe: PathProbe,
    prepared: Any,
    codes: np.ndarray,
    mask: np.ndarray | None,
    sample_weight: np.ndarray | None = None,
):
    """Best C of ``probe.Cs`` by cross-validation on prepared training data.

    ``codes``: class codes (n,) or an indicator matrix (n, K); ``mask``: the training loss's entry
    weights ((n, K) or (n, 1); 0 or False: an entry left out) or None; ``sample_weight``: the samples'
    weights in the validation scores (n,) or None.
    Returns (C, search record, the folds' models at the chosen C, or None when C was not searched).
    """
    scoring = probe.scoring or ("map" if codes.ndim == 2 else "accuracy")
    check_choice("scoring", scoring, SCORINGS)
    Cs = sorted(float(c) for c in probe.Cs)
    folds = make_folds(codes, probe.cv, probe.random_state)
    if folds is None:
        record = {"Cs": Cs, "scoring": scoring, "note": "a class has fewer than 2 samples: C not searched"}
        return float(probe.fallback_C), record, None
    patience = getattr(probe, "path_patience", None)
    steps = _fold_models(probe, prepared, folds, codes, mask, Cs)
    scores = np.full((len(folds), len(Cs)), np.nan)
    models: list[list] = [[] for _ in folds]
    best, since_best, evaluated = -np.inf, 0, 0
    for j in range(len(Cs)):
        for f, (model, (_, val)) in enumerate(zip(next(steps), folds)):
            models[f].append(model)
            decision = probe.decision_on(prepared, model, val)
            scores[f, j] = score_predictions(
                scoring,
                codes[val],
                decision,
                None if mask is None else mask[val],
                None if sample_weight is None else sample_weight[val],
            )
        evaluated = j + 1
        mean_j = float(np.nanmean(scores[:, j])) if not np.isnan(scores[:, j]).all() else -np.inf
        if mean_j > best + 1e-12:
            best, since_best = mean_j, 0
        else:
            since_best += 1
            if patience is not None and since_best >= patience:
                break
    steps.close()
    done = scores[:, :evaluated]
    mean = np.nanmean(done, axis=0) if np.isfinite(done).any() else np.zeros(evaluated)
    best_j = int(np.flatnonzero(mean >= np.nanmax(mean) - 1e-12)[0])
    record = {
        "Cs": Cs,
        "evaluated": Cs[:evaluated],
        "scoring": scoring,
        "n_folds": len(folds),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in np.nanstd(done, axis=0)],
        "folds": [[float(v) for v in row] for row in done],
        "best_C": Cs[best_j],
    }
    return Cs[best_j], record, [m[best_j] for m in models]
