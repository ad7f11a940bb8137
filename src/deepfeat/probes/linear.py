"""Linear probes on fixed features: L2-regularised logistic regression and linear SVMs.

Objective (scikit-learn's parametrisation, so C grids mean the same thing):

    C * sum_i loss(W x_i + b, y_i) + 1/2 ||W||^2          (the intercept b is not penalised)

with ``loss`` the multinomial cross-entropy (``logistic``, ``multi_class="multinomial"``), the binary
cross-entropy per class (``logistic``, one-vs-rest), the squared hinge per class (``squared_hinge``,
one-vs-rest, as LinearSVC) or the hinge (``hinge``; solved exactly by liblinear through
scikit-learn, since the hinge is not differentiable). Multi-label targets (an indicator matrix) are
always one-vs-rest, as VOC classification is scored; entries marked ``ignore`` (VOC "difficult")
do not enter the loss of their class.

The smooth losses are minimised in torch by full-batch L-BFGS in a centred, row-space,
curvature-scaled basis (exact reparametrisations, see :mod:`deepfeat.probes.solver`), warm-started
along the C path during cross-validation. ``C="cv"`` picks C from ``Cs`` by stratified k-fold
cross-validation on the training data only (see :mod:`deepfeat.probes.selection`).

Dropout on features (DeCAF): at training, every sample is repeated ``dropout_copies`` times with a
fresh random mask zeroing each feature with probability ``dropout``; at test time, features are
multiplied by the keep probability ``1 - dropout``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from deepfeat.errors import ConfigError, DataError
from deepfeat.probes.selection import check_C, prepare_targets
from deepfeat.probes.solver import Basis, Problem, make_problem, solve

LOSSES = ("logistic", "squared_hinge", "hinge")
MULTI_CLASS = ("multinomial", "ovr")
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 7))


def check_features(X, name: str = "X") -> np.ndarray:
    """float32 (n, d) features; a clear error for NaN / infinite values or a wrong shape."""
    try:
        arr = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a numeric (n_samples, n_features) array ({exc})") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} must be a non-empty (n_samples, n_features) array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(
            f"{name} has {int(bad.sum())} NaN or infinite values in {rows.size} rows "
            f"(first rows: {rows[:5].tolist()}); clean or drop those samples"
        )
    return arr


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Linear classifier on fixed features, multi-class or multi-label, C by cross-validation.

    Parameters
    ----------
    loss: ``"logistic"``, ``"squared_hinge"`` (linear SVM, LinearSVC's default) or ``"hinge"``.
    C: inverse regularisation strength, or ``"cv"`` to choose it from ``Cs`` by cross-validation.
    Cs: the grid searched when ``C="cv"``.
    cv: number of stratified folds for the search (reduced when a class has fewer samples; with fewer
        than 2 samples in some class, ``fallback_C`` is used).
    scoring: criterion of the search: ``"accuracy"``, ``"mean_class_accuracy"`` or ``"map"``
        (default: accuracy for single-label, mAP for multi-label targets).
    multi_class: ``"multinomial"`` (softmax) or ``"ovr"`` for the logistic loss; SVMs are one-vs-rest.
    normalize: L2-normalise every feature vector first.
    dropout, dropout_copies: DeCAF's dropout on features (see the module docstring).
    max_iter, tol: L-BFGS iteration limit and gradient tolerance.
    path_patience: stop walking up the C grid after this many Cs without a better validation score
        (None: evaluate every C).
    fallback_C: C used when cross-validation is impossible.
    random_state: seed of the folds and the dropout masks.
    """

    def __init__(
        self,
        loss: str = "logistic",
        C: float | str = "cv",
        Cs: Sequence[float] = DEFAULT_CS,
        cv: int = 3,
        scoring: str | None = None,
        multi_class: str = "multinomial",
        normalize: bool = False,
        dropout: float = 0.0,
        dropout_copies: int = 4,
        max_iter: int = 300,
        tol: float = 1e-5,
        path_patience: int | None = 2,
        fallback_C: float = 1.0,
        random_state: int | None = 0,
    ):
        self.loss = loss
        self.C = C
        self.Cs = Cs
        self.cv = cv
        self.scoring = scoring
        self.multi_class = multi_class
        self.normalize = normalize
        self.dropout = dropout
        self.dropout_copies = dropout_copies
        self.max_iter = max_iter
        self.tol = tol
        self.path_patience = path_patience
        self.fallback_C = fallback_C
        self.random_state = random_state

    # -- validation --------------------------------------------------------------------------
    def _validate_params(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.multi_class not in MULTI_CLASS:
            raise ConfigError(f"unknown multi_class {self.multi_class!r}; valid: {', '.join(MULTI_CLASS)}")
        check_C(self.C, self.Cs)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dropout > 0 and self.dropout_copies < 1:
            raise ConfigError(f"dropout_copies must be at least 1, got {self.dropout_copies}")
        if self.path_patience is not None and self.path_patience < 1:
            raise ConfigError(f"path_patience must be at least 1 or None, got {self.path_patience}")
        if self.cv < 2:
            raise ConfigError(f"cv must be at least 2 folds, got {self.cv}")

    def _prepare_targets(self, y, ignore) -> tuple[np.ndarray, np.ndarray | None]:
        codes, mask, self.classes_, self.multilabel_ = prepare_targets(y, ignore)
        return codes, mask

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X, y, ignore=None) -> LinearProbe:
        """Fit on features ``X`` (n, d) and labels ``y`` (n,) or an indicator matrix (n, K).

        ``ignore`` (multi-label only): (n, K) mask of entries left out of their class's loss.
        """
        from deepfeat.probes.selection import select_C

        self._validate_params()
        X = check_features(X)
        if len(np.asarray(y)) != len(X):
            raise DataError(f"X has {len(X)} samples but y has {len(np.asarray(y))}")
        codes, mask = self._prepare_targets(y, ignore)
        X = self._transform_features(X, train=True)
        Xd, codes_d, mask_d = self._augment(X, codes, mask)
        basis = None if self.loss == "hinge" else Basis.of(Xd)
        init = None
        if isinstance(self.C, str):
            self.C_, self.cv_results_, init = select_C(self, X, codes, mask, basis)
        else:
            self.C_, self.cv_results_ = float(self.C), None
        coef, intercept, n_iter = self._fit_one(Xd, codes_d, mask_d, self.C_, basis, init)
        self.coef_, self.intercept_, self.n_iter_ = coef, intercept, n_iter
        self.n_features_in_ = X.shape[1]
        return self

    def _transform_features(self, X: np.ndarray, train: bool = False) -> np.ndarray:
        if self.normalize:
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            X = X / np.maximum(norms, 1e-12)
        if not train and self.dropout > 0:
            X = X * (1.0 - self.dropout)
        return X

    def _augment(self, X, codes, mask):
        """Training copies with dropout masks (identity without dropout)."""
        if self.dropout <= 0:
            return X, codes, mask
        rng = np.random.default_rng(self.random_state)
        copies = [
            X * (rng.random(X.shape, dtype=np.float32) >= self.dropout) for _ in range(self.dropout_copies)
        ]
        reps = self.dropout_copies
        return (
            np.concatenate(copies),
            np.concatenate([codes] * reps),
            None if mask is None else np.concatenate([mask] * reps),
        )

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def _multinomial(self) -> bool:
        return self.loss == "logistic" and self.multi_class == "multinomial" and not self.multilabel_

    def _problem(self, X: np.ndarray, codes: np.ndarray, mask, basis: Basis) -> Problem:
        return make_problem(
            basis.project(X), basis.lam, codes, mask, self._n_outputs(), self.loss, self._multinomial()
        )

    def _fit_one(self, X: np.ndarray, codes: np.ndarray, mask, C: float, basis: Basis | None, init=None):
        """Fit for one C on prepared (augmented) data; returns (coef (K, d), intercept (K,), iterations)."""
        if self.loss == "hinge":
            return self._fit_hinge(X, codes, mask, C)
        problem = self._problem(X, codes, mask, basis)
        sol = solve(problem, C, max_iter=self.max_iter, tol=self.tol, init=init, polish=True)
        if not sol.converged:
            warnings.warn(
                f"LinearProbe(loss={self.loss!r}, C={C:g}) stopped after {sol.n_iter} L-BFGS iterations "
                f"with gradient {sol.grad_max:.2g} > tol={self.tol:g}; raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=3,
            )
        return (*basis.to_coef(sol.Wr, sol.b), sol.n_iter)

    def _fit_hinge(self, X, codes, mask, C):
        """One-vs-rest hinge-loss SVMs by liblinear (exact; the hinge has no gradient for L-BFGS)."""
        from sklearn.svm import LinearSVC

        if mask is not None:
            raise ConfigError("loss='hinge' does not support ignore masks; use 'squared_hinge'")
        K = self._n_outputs()
        targets = codes if self.multilabel_ else np.eye(K, dtype=np.int64)[codes]
        coef = np.zeros((K, X.shape[1]), dtype=np.float32)
        intercept = np.zeros(K, dtype=np.float32)
        n_iter = 0
        for k in range(K):
            svc = LinearSVC(loss="hinge", C=C, dual=True, max_iter=5000, tol=1e-4, random_state=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # liblinear's convergence warnings at large C
                svc.fit(X, targets[:, k])
            coef[k], intercept[k] = svc.coef_[0], svc.intercept_[0]
            n_iter = max(n_iter, int(svc.n_iter_))
        return coef, intercept, n_iter

    # -- prediction --------------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        """Scores (n, K): one column per class (multi-class) or label (multi-label)."""
        check_is_fitted(self, ("coef_", "intercept_"))
        X = self._transform_features(check_features(X), train=False)
        if X.shape[1] != self.n_features_in_:
            raise DataError(f"X has {X.shape[1]} features, the probe was fitted on {self.n_features_in_}")
        return X @ self.coef_.T + self.intercept_

    def predict(self, X) -> np.ndarray:
        """Class labels (multi-class) or a 0/1 indicator matrix (multi-label)."""
        scores = self.decision_function(X)
        if self.multilabel_:
            return (scores > 0).astype(np.int64)
        return self.classes_[scores.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (logistic loss only)."""
        if self.loss != "logistic":
            raise ConfigError(f"predict_proba needs loss='logistic', this probe uses {self.loss!r}")
        scores = torch.from_numpy(np.ascontiguousarray(self.decision_function(X)))
        if self.multilabel_ or self.multi_class == "ovr":
            p = scores.sigmoid()
            return (p if self.multilabel_ else p / p.sum(1, keepdim=True)).numpy()
        return scores.softmax(dim=1).numpy()

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy (multi-class) or mean average precision (multi-label)."""
        if getattr(self, "multilabel_", False):
            from deepfeat.metrics import mean_average_precision

            return mean_average_precision(np.asarray(y), self.decision_function(X))
        return super().score(X, y, sample_weight)


PROBES = ("svm", "svm-hinge", "logreg", "logreg-ovr", "ksvm")


def probe_for(name: str, **params):
    """A probe by name: ``"svm"`` (squared hinge), ``"svm-hinge"``, ``"logreg"`` (multinomial),
    ``"logreg-ovr"`` or ``"ksvm"`` (SVMs on a precomputed kernel: the probe of factored gradients).

    Parameters a probe does not take are dropped (``normalize`` and ``dropout`` are the linear probes'
    options; ``kernel_normalize`` is the kernel probe's ``normalize``)."""
    presets = {
        "svm": {"loss": "squared_hinge"},
        "svm-hinge": {"loss": "hinge"},
        "logreg": {"loss": "logistic", "multi_class": "multinomial"},
        "logreg-ovr": {"loss": "logistic", "multi_class": "ovr"},
    }
    if name == "ksvm":
        from deepfeat.probes.kernel import KernelProbe

        if params.get("dropout"):
            raise ConfigError("the kernel probe 'ksvm' does not support dropout")
        shared = ("random_state", "C", "Cs", "cv", "scoring", "kernel_normalize")
        kwargs = {k: v for k, v in params.items() if k in shared}
        if "kernel_normalize" in kwargs:
            kwargs["normalize"] = kwargs.pop("kernel_normalize")
        return KernelProbe(**kwargs)
    params.pop("kernel_normalize", None)
    if name not in presets:
        raise ConfigError(f"unknown probe {name!r}; valid: {', '.join(PROBES)}")
    return LinearProbe(**presets[name], **params)
