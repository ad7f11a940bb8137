"""The hinge loss's one-vs-rest SVMs, solved exactly by liblinear through scikit-learn (the hinge has
no gradient for the probes' smooth solvers)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from deepfeat.probes.base import one_vs_rest_targets

#: liblinear's epoch limit and stopping tolerance when LinearProbe(loss="hinge") is given none
HINGE_MAX_ITER, HINGE_TOL = 5000, 1e-4
#: the smooth losses' iteration limit per C and scaled-gradient tolerance when given none
SMOOTH_MAX_ITER, SMOOTH_TOL = 300, 1e-5


def iteration_limits(loss: str, max_iter: int | None, tol: float | None) -> tuple[int, float]:
    """LinearProbe's ``max_iter`` and ``tol``, or its solver's defaults for ``loss`` where None."""
    hinge = loss == "hinge"
    return (
        int(max_iter) if max_iter is not None else HINGE_MAX_ITER if hinge else SMOOTH_MAX_ITER,
        float(tol) if tol is not None else HINGE_TOL if hinge else SMOOTH_TOL,
    )


def fit_hinge(
    X: np.ndarray,
    codes: np.ndarray,
    n_outputs: int,
    C: float,
    weights: np.ndarray | None = None,
    *,
    max_iter: int = HINGE_MAX_ITER,
    tol: float = HINGE_TOL,
    warn: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Coefficients (K, d), intercepts (K,) and the most iterations of K one-vs-rest hinge SVMs on
    rows ``X`` with class codes (n,) or an indicator matrix (n, K) (``n_outputs`` = 1: one problem,
    the second class positive); ``weights``: the rows' weights (n, 1) or None; ``max_iter`` and ``tol``:
    liblinear's (an SVM that reaches ``max_iter`` has not converged; ``warn``: say so by a
    ConvergenceWarning). An output whose counted rows hold one class is a constant."""
    from sklearn.svm import LinearSVC

    K = n_outputs
    targets = one_vs_rest_targets(codes, K)
    row_weight = None if weights is None else weights[:, 0]
    coef = np.zeros((K, X.shape[1]), dtype=np.float32)
    intercept = np.zeros(K, dtype=np.float32)
    n_iter = 0
    for k in range(K):
        counted = targets[:, k] if row_weight is None else targets[row_weight > 0, k]
        if counted.min() == counted.max():  # one class in this fold: a constant
            intercept[k] = 1.0 if counted[0] == 1 else -1.0
            continue
        svc = LinearSVC(loss="hinge", C=C, dual=True, max_iter=max_iter, tol=tol, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the caller warns (a final fit), from the iteration count
            svc.fit(X, targets[:, k], sample_weight=row_weight)
        coef[k], intercept[k] = svc.coef_[0], svc.intercept_[0]
        n_iter = max(n_iter, int(svc.n_iter_))
    if warn and n_iter >= max_iter:
        warnings.warn(
            f"LinearProbe(loss='hinge', C={C:g}): liblinear stopped at max_iter={max_iter} before reaching "
            f"tol={tol:g}; raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=5,
        )
    return coef, intercept, n_iter
