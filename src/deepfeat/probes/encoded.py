"""A probe behind a learned encoder: the encoder (e.g. Fisher vectors of conv descriptors) is fitted on
the training rows of each split only, then the probe on the encoded training rows.

Stored features stay the encoder's input (unrolled conv maps), so nothing learned from one split's
training images leaks into another split's features or into the store.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted


class EncodedProbe(ClassifierMixin, BaseEstimator):
    """``probe`` trained on ``encoder.fit_transform(X)``; scores through ``encoder.transform``.

    Exposes the probe's ``C_``, ``cv_results_``, ``classes_`` and ``multilabel_`` after fitting.
    """

    def __init__(self, encoder=None, probe=None):
        self.encoder = encoder
        self.probe = probe

    def _validate_params(self) -> None:
        """Validate the probe's parameters early (the encoder checks its own when it is fitted)."""
        from deepfeat.errors import ConfigError

        if self.encoder is None or self.probe is None:
            raise ConfigError("EncodedProbe needs an encoder and a probe")
        if hasattr(self.probe, "_validate_params"):
            self.probe._validate_params()

    def fit(self, X, y, ignore=None) -> EncodedProbe:
        """Fit the encoder on ``X`` (training rows only), then the probe on the encoded rows."""
        from deepfeat.errors import ConfigError

        if self.encoder is None or self.probe is None:
            raise ConfigError("EncodedProbe needs an encoder and a probe")
        self.encoder_ = clone(self.encoder).fit(X)
        Z = self.encoder_.transform(X)
        self.probe_ = clone(self.probe)
        if ignore is not None:
            self.probe_.fit(Z, y, ignore=ignore)
        else:
            self.probe_.fit(Z, y)
        self.classes_ = self.probe_.classes_
        self.multilabel_ = getattr(self.probe_, "multilabel_", np.asarray(y).ndim == 2)
        self.C_ = getattr(self.probe_, "C_", None)
        self.cv_results_ = getattr(self.probe_, "cv_results_", None)
        return self

    def decision_function(self, X) -> np.ndarray:
        """The probe's scores of the encoded rows."""
        check_is_fitted(self, ("encoder_", "probe_"))
        return self.probe_.decision_function(self.encoder_.transform(X))

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, ("encoder_", "probe_"))
        return self.probe_.predict(self.encoder_.transform(X))

    def score(self, X, y, sample_weight=None) -> float:
        check_is_fitted(self, ("encoder_", "probe_"))
        return self.probe_.score(self.encoder_.transform(X), y)
