"""scikit-learn's cross-validated logistic regression, the same search on every release the project
allows (scikit-learn >= 1.3), for the benchmarks that compare deepfeat's probes against it.

Releases change ``LogisticRegressionCV``'s defaults under a benchmark that leaves them implicit:
1.11 makes log loss the default ``scoring`` (deepfeat's search, and every earlier run, choose C by
accuracy); 1.8 deprecates ``penalty`` in favour of ``l1_ratios`` and 1.10 switches the fitted
attributes' layout (``C_`` a float, ``scores_`` an array instead of a dict per class). So the search
is built with its criterion stated, and its results are read in either layout.
"""

from __future__ import annotations

import inspect

import numpy as np
from sklearn.linear_model import LogisticRegressionCV


def logistic_cv(Cs, cv, **kwargs) -> LogisticRegressionCV:
    """``LogisticRegressionCV`` with an L2 penalty choosing C from ``Cs`` on the folds ``cv`` by
    accuracy (what its defaults did up to 1.10), without the warnings of releases that ask for the
    new parameters."""
    params = inspect.signature(LogisticRegressionCV).parameters
    extra = {"scoring": "accuracy"}
    if "l1_ratios" in params and params["l1_ratios"].default == "warn":  # 1.8+: L2 is l1_ratio 0
        extra["l1_ratios"] = (0.0,)
    if "use_legacy_attributes" in params:
        extra["use_legacy_attributes"] = False
    return LogisticRegressionCV(Cs=Cs, cv=cv, **extra, **kwargs)


def chosen_C(model: LogisticRegressionCV) -> float:
    """The C the search chose (one per class, all equal, in the legacy layout; a float in the new one)."""
    return float(np.ravel(model.C_)[0])


def mean_scores(model: LogisticRegressionCV) -> np.ndarray:
    """Mean validation score per C of the grid, over the folds."""
    scores = model.scores_
    if isinstance(scores, dict):  # legacy: class -> (folds, Cs), the same array for every class
        return np.asarray(next(iter(scores.values()))).mean(0)
    return np.asarray(scores).reshape(scores.shape[0], -1, scores.shape[-1])[:, 0].mean(0)
