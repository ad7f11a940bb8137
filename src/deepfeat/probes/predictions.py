"""Predictions of fitted probes: labels and the score from decision values (every probe), and a linear
probe's decision values and probabilities."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from deepfeat.probes.base import check_feature_names, check_features, tensor_of
from deepfeat.probes.weights import refuse_weighted_map
from deepfeat.validation import check_n_features


def _logistic(probe: LinearPredictions) -> bool:
    """Whether ``predict_proba`` exists: an AttributeError naming the loss otherwise."""
    if probe.loss != "logistic":
        raise AttributeError(f"predict_proba needs loss='logistic', this probe uses {probe.loss!r}")
    return True


class LabelPredictions:
    """Labels and the score of a fitted probe from its ``decision_function`` (n, K) or, for two
    classes, (n,), its ``classes_`` and ``multilabel_`` (mixed into the estimators)."""

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Class labels (multi-class) or a 0/1 indicator matrix (multi-label)."""
        scores = self.decision_function(X)
        if self.multilabel_:
            return (scores > 0).astype(np.int64)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(np.int64)]
        return self.classes_[scores.argmax(axis=1)]

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Accuracy (multi-class) or mean average precision (multi-label, without sample weights)."""
        if getattr(self, "multilabel_", False):
            refuse_weighted_map(sample_weight)
            from deepfeat.metrics import mean_average_precision

            return mean_average_precision(np.asarray(y), self.decision_function(X))
        return super().score(X, y, sample_weight)


class LinearPredictions(LabelPredictions):
    """What a fitted :class:`~deepfeat.probes.LinearProbe` predicts from ``coef_`` (K, d),
    ``intercept_`` (K,), ``classes_`` and ``multilabel_`` (mixed into the estimator, which also
    supplies ``loss``, ``dropout``, ``multi_class`` and ``_normalized``)."""

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Scores (n, K): one column per class (multi-class) or label (multi-label); (n,) for two
        classes (the score of ``classes_[1]``)."""
        check_is_fitted(self, ("coef_", "intercept_"))
        check_feature_names(self, X, reset=False)
        X = self._normalized(check_features(X))
        check_n_features(X.shape[1], self.n_features_in_, self)
        if self.dropout > 0:
            X = X * np.float32(1.0 - self.dropout)
        scores = torch.addmm(
            torch.from_numpy(self.intercept_), tensor_of(X), torch.from_numpy(self.coef_).t()
        ).numpy()
        return scores[:, 0] if scores.shape[1] == 1 and not self.multilabel_ else scores

    @available_if(_logistic)
    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities (logistic loss only: for other losses the method is absent, as on
        LinearSVC, so scikit-learn's ensembles and calibration use ``decision_function``)."""
        scores = torch.from_numpy(np.ascontiguousarray(self.decision_function(X), dtype=np.float64))
        if scores.dim() == 1:
            p = scores.sigmoid()
            return torch.stack([1 - p, p], 1).numpy()
        if self.multilabel_ or self.multi_class == "ovr":
            p = scores.sigmoid()
            return (p if self.multilabel_ else p / p.sum(1, keepdim=True)).numpy()
        return scores.softmax(dim=1).numpy()
