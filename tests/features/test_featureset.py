from __future__ import annotations

import numpy as np
import pytest

from deepfeat.errors import ConfigError
from deepfeat.features.featureset import FeatureKind, FeatureSet, concat_features, pool_positions


def test_pool_positions_layout():
    def fs(shape, seed):
        X = np.random.default_rng(seed).normal(size=(3, int(np.prod(shape)))).astype(np.float32)
        ids, t = ["a", "b", "c"], np.array([0, 1, 0])
        return FeatureSet("l", X, ids, t, ["x", "y"], np.arange(3), {"s": seed}, layer_shape=shape)

    a, b = fs((4, 2, 2), 0), fs((4, 3, 3), 1)
    pooled = pool_positions([a, b])
    assert pooled.layer_shape == (4, 13, 1)
    maps = pooled.features.reshape(3, 4, 13)
    np.testing.assert_array_equal(maps[:, :, :4], a.features.reshape(3, 4, 4))
    np.testing.assert_array_equal(maps[:, :, 4:], b.features.reshape(3, 4, 9))


def test_kinds_are_typed_and_factored_layouts_come_from_the_set():
    X = np.zeros((2, (3 + 2) * 4), dtype=np.float32)
    ids, t = ["a", "b"], np.array([0, 1])
    fs = FeatureSet(
        "g", X, ids, t, ["x", "y"], np.arange(2), {"d_in": 3, "d_out": 2}, layer_shape=(5, 4), kind="factored"
    )
    assert fs.kind is FeatureKind.FACTORED
    layout = fs.factored_layout
    assert (layout.d_in, layout.d_out, layout.positions) == (3, 2, 4)
    vec = FeatureSet("v", X, ids, t, ["x", "y"], np.arange(2), {})
    with pytest.raises(ConfigError, match="not factored gradients"):
        _ = vec.factored_layout
    with pytest.raises(ConfigError, match="cannot be concatenated"):
        concat_features([vec, fs])
    with pytest.raises(ValueError):
        FeatureSet("v", X, ids, t, ["x", "y"], np.arange(2), {}, kind="image")
