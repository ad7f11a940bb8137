"""SVM on a precomputed kernel: the probe for factored gradient features (and, for comparison, for
plain features through the linear kernel).

One-vs-rest hinge-loss SVMs (libsvm through scikit-learn's ``SVC(kernel="precomputed")``), one per
class (multi-class) or per label (multi-label, with "difficult" entries left out of their label's
problem). The kernel between training images is computed once; C is chosen by cross-validation on
sub-blocks of it, on the training data only. Prediction computes the kernel between the test images
and the training images and applies the dual coefficients.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

from deepfeat.errors import ConfigError, DataError, UnknownNameError
from deepfeat.kernels import NORMALIZATIONS, FactoredLayout, factored_kernel, linear_kernel
from deepfeat.probes.linear import DEFAULT_CS, check_features
from deepfeat.probes.selection import SCORINGS, check_C, make_folds, prepare_targets, score_predictions

KERNELS = ("linear", "factored")


class KernelProbe(ClassifierMixin, BaseEstimator):
    """One-vs-rest SVMs on a precomputed kernel of the features, C by cross-validation.

    Parameters
    ----------
    kernel: ``"linear"`` (dot products of the rows) or ``"factored"`` (the trace kernel of factored
        gradient rows, which needs ``layout``).
    layout: :class:`~deepfeat.kernels.FactoredLayout` of the rows (factored kernel only).
    normalize: ``"factors"`` (default; the L2-normalised rows for the linear kernel), ``"gradient"``
        or ``"none"``; see :mod:`deepfeat.kernels`.
    C: a positive number or ``"cv"`` to choose it from ``Cs`` by ``cv``-fold cross-validation.
    scoring: CV score: ``accuracy``, ``mean_class_accuracy`` or ``map`` (default: accuracy for
        single-label data, mAP for multi-label data).
    fallback_C: C used when a class is too small for cross-validation.
    """

    #: kinds of features this probe reads (see deepfeat.features.featureset.FeatureKind)
    feature_kinds = ("vector", "factored")

    def __init__(
        self,
        kernel: str = "linear",
        layout: FactoredLayout | None = None,
        normalize: str = "factors",
        C: float | str = "cv",
        Cs: Sequence[float] = DEFAULT_CS,
        cv: int = 3,
        scoring: str | None = None,
        fallback_C: float = 1.0,
        tol: float = 1e-3,
        random_state: int | None = 0,
    ):
        self.kernel = kernel
        self.layout = layout
        self.normalize = normalize
        self.C = C
        self.Cs = Cs
        self.cv = cv
        self.scoring = scoring
        self.fallback_C = fallback_C
        self.tol = tol
        self.random_state = random_state

    # -- parameters and kernels ----------------------------------------------------------------
    def _validate_params(self) -> None:
        if self.kernel not in KERNELS:
            raise UnknownNameError("kernel", self.kernel, KERNELS)
        if self.normalize not in NORMALIZATIONS:
            raise UnknownNameError("kernel normalisation", self.normalize, NORMALIZATIONS)
        if self.kernel == "factored" and not isinstance(self.layout, FactoredLayout):
            raise ConfigError("kernel='factored' needs layout=FactoredLayout(d_in, d_out, positions)")
        check_C(self.C, self.Cs)
        if self.cv < 2:
            raise ConfigError(f"cv must be at least 2 folds, got {self.cv}")
        if self.scoring is not None and self.scoring not in SCORINGS:
            raise UnknownNameError("scoring", self.scoring, SCORINGS)

    def compute_kernel(self, A, B=None) -> np.ndarray:
        """The probe's kernel between rows A and B (B=None: A with itself)."""
        if self.kernel == "factored":
            return factored_kernel(A, B, layout=self.layout, normalize=self.normalize)
        return linear_kernel(A, B, normalize="none" if self.normalize == "none" else "l2")

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, X, y, ignore=None) -> KernelProbe:
        """Fit on rows ``X`` (n, d) and labels ``y`` (n,) or an indicator matrix (n, K).

        ``ignore`` (multi-label only): (n, K) mask of entries left out of their label's problem.
        """
        self._validate_params()
        X = check_features(X)
        y = np.asarray(y)
        if len(y) != len(X):
            raise DataError(f"X has {len(X)} samples but y has {len(y)}")
        codes, mask = self._targets(y, ignore)
        K = self.compute_kernel(X).astype(np.float64)
        if isinstance(self.C, str):
            self.C_, self.cv_results_ = self._select_C(K, codes, mask)
        else:
            self.C_, self.cv_results_ = float(self.C), None
        self.dual_coef_, self.intercept_ = self._fit_kernel(K, codes, mask, self.C_)
        self.X_fit_ = X
        self.n_features_in_ = X.shape[1]
        return self

    def _targets(self, y: np.ndarray, ignore):
        codes, mask, self.classes_, self.multilabel_ = prepare_targets(y, ignore)
        return codes, mask

    def _fit_kernel(self, K: np.ndarray, codes: np.ndarray, mask, C: float):
        """Dual coefficients (n_outputs, n) and intercepts for one C on kernel K."""
        n = len(K)
        n_out = len(self.classes_)
        targets = codes if codes.ndim == 2 else np.eye(n_out, dtype=np.int64)[codes]
        dual = np.zeros((n_out, n), dtype=np.float64)
        intercept = np.zeros(n_out, dtype=np.float64)
        for k in range(n_out):
            rows = np.arange(n) if mask is None else np.flatnonzero(mask[:, k])
            t = targets[rows, k]
            if t.min() == t.max():  # one class in this fold: a constant decision
                intercept[k] = 1.0 if t[0] == 1 else -1.0
                continue
            svc = SVC(kernel="precomputed", C=C, tol=self.tol)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                svc.fit(K[np.ix_(rows, rows)], t)
            dual[k, rows[svc.support_]] = svc.dual_coef_[0]
            intercept[k] = svc.intercept_[0]
        return dual, intercept

    def _select_C(self, K: np.ndarray, codes: np.ndarray, mask):
        scoring = self.scoring or ("map" if codes.ndim == 2 else "accuracy")
        Cs = sorted(float(c) for c in self.Cs)
        folds = make_folds(codes, self.cv, self.random_state)
        if folds is None:
            return float(self.fallback_C), {
                "Cs": Cs,
                "scoring": scoring,
                "note": "a class has fewer than 2 samples: C not searched",
            }
        scores = np.full((len(folds), len(Cs)), np.nan)
        for j, C in enumerate(Cs):
            for f, (train, val) in enumerate(folds):
                m = None if mask is None else mask[train]
                dual, b = self._fit_kernel(K[np.ix_(train, train)], codes[train], m, C)
                decision = K[np.ix_(val, train)] @ dual.T + b
                scores[f, j] = score_predictions(
                    scoring, codes[val], decision, None if mask is None else mask[val]
                )
        mean = np.nanmean(scores, axis=0)
        best = int(np.flatnonzero(mean >= np.nanmax(mean) - 1e-12)[0])
        return Cs[best], {"Cs": Cs, "scoring": scoring, "mean": mean.tolist(), "folds": scores.tolist()}

    # -- prediction ----------------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        """Scores (n, K): one column per class (multi-class) or label (multi-label)."""
        check_is_fitted(self, ("dual_coef_", "X_fit_"))
        X = check_features(X)
        if X.shape[1] != self.n_features_in_:
            raise DataError(f"X has {X.shape[1]} features, the probe was fitted on {self.n_features_in_}")
        K = self.compute_kernel(X, self.X_fit_).astype(np.float64)
        return K @ self.dual_coef_.T + self.intercept_

    def predict(self, X) -> np.ndarray:
        """Class labels (multi-class) or a 0/1 indicator matrix (multi-label)."""
        scores = self.decision_function(X)
        if self.multilabel_:
            return (scores > 0).astype(np.int64)
        return self.classes_[scores.argmax(axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy (multi-class) or mean average precision (multi-label)."""
        if getattr(self, "multilabel_", False):
            from deepfeat.metrics import mean_average_precision

            return mean_average_precision(np.asarray(y), self.decision_function(X))
        return super().score(X, y, sample_weight)
