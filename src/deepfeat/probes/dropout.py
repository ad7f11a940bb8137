"""DeCAF's dropout on features for the linear probes: every training sample repeated with fresh
random masks, each copy's loss weighted by 1/copies, so that the data term is the mean over the masks
and C means what it means without dropout (at test time the features are scaled by the keep
probability)."""

from __future__ import annotations

import numpy as np
import torch


def dropout_copies(X: torch.Tensor, codes: np.ndarray, weights, rate: float, copies: int, seed: int | None):
    """``copies`` masked copies of the rows X (each feature zeroed with probability ``rate``, masks
    drawn from a generator seeded by ``seed``, 0 for None), their class codes and entry weights, and
    the row weight 1/copies; the rows as they are (row weight 1) for ``rate`` 0."""
    if rate <= 0:
        return X, codes, weights, 1.0
    gen = torch.Generator(device="cpu").manual_seed(0 if seed is None else seed)
    keep = torch.rand((copies, *X.shape), generator=gen) >= rate
    masked = (X.unsqueeze(0) * keep.to(X.device)).reshape(-1, X.shape[1])
    return (
        masked,
        np.concatenate([codes] * copies),
        None if weights is None else np.concatenate([weights] * copies),
        1.0 / copies,
    )
