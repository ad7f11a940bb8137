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

from deepfeat.probes.base import SCORINGS, make_folds, score_predictions
from deepfeat.validation import check_choice

__all__ = ["PathProbe", "make_folds", "select_C"]


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
