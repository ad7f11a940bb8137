"""Descriptor sets: conv-map descriptors, the per-image subset, the descriptor PCA against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.errors import DataError
from deepfeat.features.fisher import DescriptorPCA, conv_descriptors, subsample_descriptors
from tests.features.fisher.conftest import blobs


def test_conv_descriptors_one_per_position():
    maps = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    d = conv_descriptors(maps)
    assert d.shape == (2, 20, 3)
    torch.testing.assert_close(d[1, 2 * 5 + 3], maps[1, :, 2, 3])
    torch.testing.assert_close(conv_descriptors(maps.reshape(2, -1).numpy(), (3, 4, 5)), d)
    with pytest.raises(DataError, match=r"layer_shape \(3, 5, 4\)|do not hold"):
        conv_descriptors(maps.reshape(2, -1)[:, :-1], (3, 4, 5))


def test_subsample_depends_on_the_image_not_its_batch():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    s1 = subsample_descriptors(torch.as_tensor(np.stack([a, b])), 20, random_state=0)
    s2 = subsample_descriptors(torch.as_tensor(np.stack([b, a, a])), 20, random_state=0)
    assert s1.shape == (2, 20, 3)
    torch.testing.assert_close(s1[0], s2[1])
    torch.testing.assert_close(s1[1], s2[0])
    # a subset of the rows, in their original order
    rows = [int(np.flatnonzero((a == r).all(1))[0]) for r in s1[0].numpy()]
    assert rows == sorted(rows) and len(set(rows)) == 20
    other = subsample_descriptors(torch.as_tensor(a[None]), 20, random_state=1)
    assert not torch.equal(other[0], s1[0])
    short = [torch.as_tensor(a[:5]), torch.as_tensor(b)]
    out = subsample_descriptors(short, 20, random_state=0)
    assert [len(s) for s in out] == [5, 20]


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    x = blobs(600, 8, 3, seed=7)
    ours = DescriptorPCA(4).fit(torch.as_tensor(x))
    ref = PCA(4).fit(x)
    np.testing.assert_allclose(ours.explained_variance_.numpy(), ref.explained_variance_, rtol=1e-9)
    z, zr = ours.transform(torch.as_tensor(x)).numpy(), ref.transform(x)
    np.testing.assert_allclose(np.abs(z), np.abs(zr), atol=1e-9)  # axes agree up to sign
    white = DescriptorPCA(4, whiten=True).fit(torch.as_tensor(x)).transform(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(white.var(0, ddof=1), 1.0, rtol=1e-6)
