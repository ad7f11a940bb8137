"""Per-split encoders: transformers fitted between the store and the probes.

Some features are not probed as stored: Fisher vectors, for instance, encode the unrolled conv maps
kept in the store with a PCA and a GMM learned from training images. Such an encoder is fitted on the
training rows of each split only, then encodes that split's training and test rows, so nothing learned
on one split's training images leaks into another split or into the store. One fitted encoder serves
every probe of its (feature set, split).

An encoder is any scikit-learn transformer (``fit(X)``, ``transform(X)``); flat rows of unrolled maps
come with their (C, H, W) shape through the encoder's ``layer_shape`` parameter when it has one.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone

from deepfeat.errors import ConfigError
from deepfeat.features.featureset import FeatureKind, FeatureSet


def for_features(encoder, features: FeatureSet):
    """An unfitted copy of ``encoder`` set up for the rows of ``features`` (their map shape)."""
    if features.kind is not FeatureKind.MAPS:
        raise ConfigError(
            f"features {features.key!r} are not unrolled conv maps; the encoder {type(encoder).__name__} "
            "needs them (pool 'unroll' of a conv layer)"
        )
    enc = clone(encoder)
    params = enc.get_params(deep=False)
    if "layer_shape" in params and params["layer_shape"] is None:
        enc.set_params(layer_shape=tuple(features.layer_shape))
    return enc


def encode_split(encoder, features: FeatureSet, X_train: np.ndarray, X_test: np.ndarray):
    """Fit a copy of ``encoder`` on a split's training rows; returns (encoded train, encoded test,
    the fitted encoder)."""
    enc = for_features(encoder, features).fit(X_train)
    return np.asarray(enc.transform(X_train)), np.asarray(enc.transform(X_test)), enc


def encoder_description(encoder) -> dict | None:
    """Plain-JSON identity of an encoder (class and parameters), None without one."""
    if encoder is None:
        return None
    params = {k: v for k, v in encoder.get_params(deep=False).items() if k != "progress"}
    return {"class": type(encoder).__name__, **params}
