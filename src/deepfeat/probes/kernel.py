"""SVM on a precomputed kernel: the probe for factored gradient features (and, for comparison, for
plain features through the linear kernel).

One-vs-rest hinge-loss SVMs (libsvm through scikit-learn's ``SVC(kernel="precomputed")``), one per
class (multi-class), one for two classes (binary: ``decision_function`` returns one score per sample,
that of ``classes_[1]``) or one per label (multi-label, with "difficult" entries left out of their
label's problem). ``sample_weight`` and ``class_weight`` weight each sample's hinge loss (its C in
libsvm) as in :mod:`deepfeat.probes.weights`. The kernel between training images is computed once;
C is chosen by cross-validation on sub-blocks of it, on the training data only (through the C-path
protocol of :mod:`deepfeat.probes.selection`). Prediction computes the kernel between the test images and the
training images and applies the dual coefficients.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

from deepfeat.errors import ConfigError
from deepfeat.kernels import NORMALIZATIONS, FactoredLayout, factored_kernel
from deepfeat.probes.base import (
    DEFAULT_CS,
    check_C,
    check_cv,
    check_feature_names,
    check_features,
    check_products,
    check_scoring,
    one_vs_rest_targets,
    prepare_targets,
    resolve_device,
    tensor_of,
    unit_rows,
)
from deepfeat.probes.predictions import LabelPredictions
from deepfeat.probes.selection import select_C
from deepfeat.probes.weights import (
    check_class_weight,
    check_sample_weight,
    entry_weights,
)
from deepfeat.validation import check_choice, check_float, check_n_features

KERNELS = ("linear", "factored")


class KernelProbe(LabelPredictions, ClassifierMixin, BaseEstimator):
    """One-vs-rest SVMs on a precomputed kernel of the features, C by cross-validation.

    Parameters
    ----------
    kernel: ``"linear"`` (dot products of the rows) or ``"factored"`` (the trace kernel of factored
        gradient rows, which needs ``layout``).
    layout: :class:`~deepfeat.kernels.FactoredLayout` of the rows (factored kernel only).
    normalize: ``"gradient"`` (default: the L2-normalised gradient dE/dW, i.e. the factored kernel
        divided by its diagonal's square roots), ``"factors"`` (each factor L2-normalised) or
        ``"none"``; see :mod:`deepfeat.kernels`. For the linear kernel both of the first two mean
        L2-normalised rows.
    C: a positive number or ``"cv"`` to choose it from ``Cs`` by ``cv``-fold cross-validation (``cv``
        as in :class:`~deepfeat.probes.LinearProbe`).
    scoring: CV score: ``accuracy``, ``mean_class_accuracy`` or ``map`` (default: accuracy for
        single-label data, mAP for multi-label data).
    fallback_C: C used when a class is too small for cross-validation.
    class_weight: None, ``"balanced"`` or {label: weight}: multiplies each sample's loss by its class's
        weight in every one-vs-rest problem (single-label targets; see :mod:`deepfeat.probes.weights`).
    device: where the linear kernel is computed (``"cpu"``, ``"cuda"`` or a :class:`torch.device`);
        the factored kernel and libsvm run on the CPU.
    """

    #: kinds of features this probe reads (see deepfeat.features.featureset.FeatureKind)
    feature_kinds = ("vector", "factored")

    def __init__(
        self,
        kernel: str = "linear",
        layout: FactoredLayout | None = None,
        normalize: str = "gradient",
        C: float | str = "cv",
        Cs: Sequence[float] = DEFAULT_CS,
        cv: int | object = 3,
        scoring: str | None = None,
        fallback_C: float = 1.0,
        class_weight: str | dict | None = None,
        tol: float = 1e-3,
        device: str | torch.device = "cpu",
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
        self.class_weight = class_weight
        self.tol = tol
        self.device = device
        self.random_state = random_state

    # -- parameters and kernels ----------------------------------------------------------------
    def _validate_params(self) -> None:
        check_choice("kernel", self.kernel, KERNELS)
        check_choice("kernel normalisation", self.normalize, NORMALIZATIONS)
        if self.kernel == "factored" and not isinstance(self.layout, FactoredLayout):
            raise ConfigError("kernel='factored' needs layout=FactoredLayout(d_in, d_out, positions)")
        check_C(self.C, self.Cs)
        check_C(self.fallback_C, ())
        check_class_weight(self.class_weight)
        check_float("tol", self.tol, 0.0, low_open=True)
        check_cv(self.cv)
        check_scoring(self.scoring)
        resolve_device(self.device)

    def compute_kernel(self, A: ArrayLike, B: ArrayLike | None = None) -> np.ndarray:
        """The probe's kernel between rows A and B (B=None: A with itself), float64."""
        if self.kernel == "factored":
            return factored_kernel(A, B, layout=self.layout, normalize=self.normalize).astype(np.float64)
        device = resolve_device(self.device)

        def rows(X) -> torch.Tensor:
            X = np.asarray(X, dtype=np.float32)
            return tensor_of(X if self.normalize == "none" else unit_rows(X), device)

        a = rows(A)
        b = a if B is None else rows(B)
        return torch.mm(a, b.t()).double().cpu().numpy()

    # -- fitting -------------------------------------------------------------------------------
    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        ignore: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> KernelProbe:
        """Fit on rows ``X`` (n, d) and labels ``y`` (n,) or an indicator matrix (n, K).

        ``ignore`` (multi-label only): (n, K) mask of entries left out of their label's problem;
        ``sample_weight``: (n,) non-negative weights of the samples' losses (and of the C search's
        validation scores).
        """
        self._validate_params()
        check_feature_names(self, X, reset=True)
        X = check_features(X)
        codes, mask, self.classes_, self.multilabel_ = prepare_targets(y, ignore, n_samples=len(X))
        sample_weight = check_sample_weight(sample_weight, len(X))
        weights = entry_weights(codes, mask, self.classes_, self.class_weight, sample_weight)
        K = self.prepare_path(X, codes, weights)
        if isinstance(self.C, str):
            self.C_, self.cv_results_, _ = select_C(self, K, codes, weights, sample_weight)
        else:
            self.C_, self.cv_results_ = float(self.C), None
        self.dual_coef_, self.intercept_ = self._fit_kernel(K, codes, weights, self.C_)
        self.X_fit_ = X
        self.n_features_in_ = X.shape[1]
        return self

    def _n_outputs(self) -> int:
        K = len(self.classes_)
        return K if self.multilabel_ or K > 2 else 1

    def _fit_kernel(self, K: np.ndarray, codes: np.ndarray, weights, C: float):
        """Dual coefficients (n_outputs, n) and intercepts for one C on kernel K; ``weights``: entry
        weights (n, n_outputs) or (n, 1) (0: left out), or None."""
        n = len(K)
        n_out = self._n_outputs()
        targets = one_vs_rest_targets(codes, n_out)
        dual = np.zeros((n_out, n), dtype=np.float64)
        intercept = np.zeros(n_out, dtype=np.float64)
        for k in range(n_out):
            w = None if weights is None else weights[:, min(k, weights.shape[1] - 1)]
            rows = np.arange(n) if w is None else np.flatnonzero(w > 0)
            t = targets[rows, k]
            if t.min() == t.max():  # one class in this fold: a constant decision
                intercept[k] = 1.0 if t[0] == 1 else -1.0
                continue
            svc = SVC(kernel="precomputed", C=C, tol=self.tol)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                svc.fit(K[np.ix_(rows, rows)], t, sample_weight=None if w is None else w[rows])
            dual[k, rows[svc.support_]] = svc.dual_coef_[0]
            intercept[k] = svc.intercept_[0]
        return dual, intercept

    # -- the C-path protocol (deepfeat.probes.selection.PathProbe) ------------------------------
    def prepare_path(self, X: np.ndarray, codes: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """The kernel between all training rows, computed once for every fold."""
        if self.kernel == "linear" and self.normalize == "none":
            check_products(np.asarray(X, dtype=np.float32))
        return self.compute_kernel(X)

    def fit_path(
        self,
        prepared: np.ndarray,
        rows: np.ndarray,
        codes: np.ndarray,
        mask: np.ndarray | None,
        Cs: Sequence[float],
    ) -> Iterator[tuple]:
        """(rows, dual coefficients, intercepts) on the training rows ``rows`` for each C of ``Cs``."""
        K = prepared[np.ix_(rows, rows)]
        for C in Cs:
            yield (rows, *self._fit_kernel(K, codes, mask, C))

    def decision_on(self, prepared: np.ndarray, model: tuple, rows: np.ndarray) -> np.ndarray:
        """Decision values of the training rows ``rows`` under a fit of :meth:`fit_path`."""
        train, dual, intercept = model
        return self._apply(prepared[np.ix_(rows, train)], dual, intercept)

    def _apply(self, K: np.ndarray, dual: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        scores = (torch.from_numpy(K) @ torch.from_numpy(dual).t() + torch.from_numpy(intercept)).numpy()
        return scores[:, 0] if scores.shape[1] == 1 and not self.multilabel_ else scores

    # -- prediction ----------------------------------------------------------------------------
    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Scores (n, K): one column per class (multi-class) or label (multi-label); (n,) for two
        classes (the score of ``classes_[1]``)."""
        check_is_fitted(self, ("dual_coef_", "X_fit_"))
        check_feature_names(self, X, reset=False)
        X = check_features(X)
        check_n_features(X.shape[1], self.n_features_in_, self)
        return self._apply(self.compute_kernel(X, self.X_fit_), self.dual_coef_, self.intercept_)
