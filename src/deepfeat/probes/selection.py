"""Choosing the regularisation constant C by cross-validation on the training data only.

Folds are stratified for single-label data (their number reduced to the smallest class size when a
class has fewer samples than folds) and shuffled k-fold for multi-label data; with dropout, folds
split the original samples, never their dropout copies. The C grid is walked from the smallest C
upwards, every fold warm-starting from its solution at the previous C. With ``path_patience`` set,
the walk stops once the mean validation score has stayed below the best one for that many
consecutive Cs (the validation curve of an L2-regularised linear model rises then falls); ``None``
evaluates the whole grid. The best mean score wins; ties go to the smaller C.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold

from deepfeat.errors import ConfigError
from deepfeat.probes.solver import Basis, solve

SCORINGS = ("accuracy", "mean_class_accuracy", "map")


def check_C(C, Cs) -> None:
    """Validate a probe's ``C`` (a positive number or ``"cv"``) and, for ``"cv"``, its grid ``Cs``."""
    if isinstance(C, str):
        if C != "cv":
            raise ConfigError(f"C must be a positive number or 'cv', got {C!r}")
        if len(Cs) == 0 or any(float(c) <= 0 for c in Cs):
            raise ConfigError(f"Cs must be a non-empty list of positive numbers, got {Cs!r}")
    elif not float(C) > 0:
        raise ConfigError(f"C must be positive, got {C}")


def prepare_targets(y, ignore=None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, bool]:
    """Class codes (n,) or a 0/1 indicator matrix (n, K), the mask of counted entries (multi-label with
    ``ignore`` only, else None), the classes and whether the targets are multi-label; clear errors for
    a single class, a label without positives or negatives (ignored entries excluded), bad shapes."""
    from deepfeat.errors import DataError

    y = np.asarray(y)
    if y.ndim == 2:
        if not np.isin(y, (0, 1)).all():
            raise DataError("multi-label targets must be a 0/1 indicator matrix")
        positives = y.sum(axis=0)
        bad = np.flatnonzero((positives == 0) | (positives == len(y)))
        if bad.size:
            raise DataError(
                f"labels {bad.tolist()} are positive for none or all of the training samples; "
                "a one-vs-rest probe needs both"
            )
        mask = None if ignore is None else ~np.asarray(ignore, dtype=bool)
        if mask is not None:
            if mask.shape != y.shape:
                raise DataError(f"ignore must have the shape of the targets {y.shape}, got {mask.shape}")
            counted_pos, counted_neg = (y * mask).sum(0), ((1 - y) * mask).sum(0)
            bad = np.flatnonzero((counted_pos == 0) | (counted_neg == 0))
            if bad.size:
                raise DataError(
                    f"labels {bad.tolist()} have no positive or no negative training sample left once "
                    "the ignored (difficult) entries are excluded; a one-vs-rest probe needs both"
                )
        return y.astype(np.int64), mask, np.arange(y.shape[1]), True
    if y.ndim != 1:
        raise DataError(f"y must be a vector of labels or an indicator matrix, got shape {y.shape}")
    if ignore is not None:
        raise ConfigError("ignore applies only to multi-label (indicator matrix) targets")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(
            f"the training data holds a single class ({classes[0]!r}); a classifier needs 2 or more"
        )
    return codes.astype(np.int64), None, classes, False


def score_predictions(scoring: str, codes: np.ndarray, scores: np.ndarray, mask=None) -> float:
    """Score decision values ``scores`` (n, K) against class codes (n,) or an indicator matrix."""
    from deepfeat.metrics import mean_average_precision, mean_per_class_accuracy

    if scoring == "map":
        Y = codes if codes.ndim == 2 else np.eye(scores.shape[1], dtype=np.int64)[codes]
        difficult = None if mask is None else ~mask
        try:
            return mean_average_precision(Y, scores, difficult=difficult)
        except ConfigError:
            return float("nan")
    pred = scores.argmax(axis=1)
    if scoring == "mean_class_accuracy":
        return mean_per_class_accuracy(codes, pred, n_classes=scores.shape[1])
    return float(np.mean(pred == codes))


def make_folds(codes: np.ndarray, n_folds: int, random_state) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Train/validation index pairs, or None when some class is too small to be split."""
    if codes.ndim == 2:
        if len(codes) < n_folds:
            return None
        return list(KFold(n_folds, shuffle=True, random_state=random_state).split(codes))
    smallest = int(np.bincount(codes).min())
    if smallest < 2:
        return None
    folds = StratifiedKFold(min(n_folds, smallest), shuffle=True, random_state=random_state)
    return list(folds.split(np.zeros(len(codes)), codes))


def select_C(probe, X: np.ndarray, codes: np.ndarray, mask, basis: Basis | None):
    """Best C of ``probe.Cs`` for a LinearProbe on prepared features.

    Returns (C, search record, warm start for the final fit or None).
    """
    scoring = probe.scoring or ("map" if codes.ndim == 2 else "accuracy")
    if scoring not in SCORINGS:
        raise ConfigError(f"unknown scoring {scoring!r}; valid: {', '.join(SCORINGS)}")
    Cs = sorted(float(c) for c in probe.Cs)
    folds = make_folds(codes, probe.cv, probe.random_state)
    if folds is None:
        record = {"Cs": Cs, "scoring": scoring, "note": "a class has fewer than 2 samples: C not searched"}
        return float(probe.fallback_C), record, None
    fold_data = []
    for train, val in folds:
        Xtr, ctr, mtr = probe._augment(X[train], codes[train], None if mask is None else mask[train])
        problem = None if probe.loss == "hinge" else probe._problem(Xtr, ctr, mtr, basis)
        Xval = probe._transform_features(X[val], train=False)
        fold_data.append((Xtr, ctr, mtr, problem, Xval, codes[val], None if mask is None else mask[val]))
    scores = np.full((len(folds), len(Cs)), np.nan)
    solutions: list[list] = [[None] * len(Cs) for _ in folds]
    best, since_best, evaluated = -np.inf, 0, 0
    for j, C in enumerate(Cs):
        for f, (Xtr, ctr, mtr, problem, Xval, cval, mval) in enumerate(fold_data):
            if probe.loss == "hinge":
                coef, intercept, _ = probe._fit_hinge(Xtr, ctr, mtr, C)
            else:
                init = solutions[f][j - 1] if j > 0 else None
                sol = solve(problem, C, max_iter=probe.max_iter, tol=probe.tol, init=init)
                Wr, b = sol.Wr, sol.b
                solutions[f][j] = (Wr, b)
                coef, intercept = basis.to_coef(Wr, b)
            scores[f, j] = score_predictions(scoring, cval, Xval @ coef.T + intercept, mval)
        evaluated = j + 1
        mean_j = float(np.nanmean(scores[:, j])) if not np.isnan(scores[:, j]).all() else -np.inf
        if mean_j > best + 1e-12:
            best, since_best = mean_j, 0
        else:
            since_best += 1
            if probe.path_patience is not None and since_best >= probe.path_patience:
                break
    done = scores[:, :evaluated]
    mean = np.nanmean(done, axis=0) if np.isfinite(done).any() else np.zeros(evaluated)
    top = np.nanmax(mean)
    best_j = int(np.flatnonzero(mean >= top - 1e-12)[0])
    init = None
    if probe.loss != "hinge":
        init = (
            torch.stack([solutions[f][best_j][0] for f in range(len(folds))]).mean(0),
            torch.stack([solutions[f][best_j][1] for f in range(len(folds))]).mean(0),
        )
    record = {
        "Cs": Cs,
        "evaluated": Cs[:evaluated],
        "scoring": scoring,
        "n_folds": len(folds),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in np.nanstd(done, axis=0)],
        "best_C": Cs[best_j],
    }
    return Cs[best_j], record, init
