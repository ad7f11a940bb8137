"""Shared by the Fisher-vector tests: one torch thread, descriptors from Gaussian blobs, a fitted GMM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.features.fisher import DiagonalGMM


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(n: int = 1500, d: int = 5, k: int = 4, seed: int = 0) -> np.ndarray:
    """Descriptors from k elongated Gaussian blobs, shuffled."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.normal(size=(n // k, d)) * rng.uniform(0.3, 2.0, d) + rng.normal(scale=3.0, size=d)
        for _ in range(k)
    ]
    x = np.concatenate(parts)
    return x[rng.permutation(len(x))]


@pytest.fixture(scope="module")
def gmm() -> DiagonalGMM:
    return DiagonalGMM(6, random_state=0).fit(blobs())
