"""Large dense CPU matrix products and symmetric eigendecompositions through NumPy's BLAS and
SciPy's LAPACK where those are faster than torch's on this machine (measured once per process,
:func:`numpy_faster`), with torch's thread count; torch's own everywhere else (GPUs, bfloat16, small
work). The probes' basis (covariance or Gram matrix, its eigendecomposition, the coordinates) goes
through here.

On an AMD EPYC host torch's MKL ran these 1.3-2.8x slower than NumPy's OpenBLAS (float32 and
float64, 300-8,000 x 1,280: X^T X 32 against 64 ms at 3,060 x 1,280 float32, X X^T 98 against 162
ms, float64 136 against 245 ms) and its eigendecomposition 1.1-1.7x slower than SciPy's divide and
conquer at 1,200-3,000 (1,280 float32: 139 against 196 ms)."""

from __future__ import annotations

import functools
import time

import numpy as np
import torch

#: "auto": NumPy / SciPy where :func:`numpy_faster` measured them faster; True / False force it
NUMPY: bool | str = "auto"
#: products of at least this many multiply-adds qualify
MIN_WORK = 20_000_000
#: eigendecompositions of matrices of at least this size qualify (at 300: 0.9-1.5x, mixed)
EIGH_SIZE = 512
#: NumPy is taken where it is at least this many times faster than torch
GAIN = 1.2


@functools.cache
def numpy_faster() -> bool:
    """Whether NumPy's BLAS forms X^T X (2,048 x 768 float32) at least ``GAIN`` times faster than
    torch on this machine: the fastest of 8 interleaved runs each after 2 warm-up rounds (about
    0.2 s)."""
    X = torch.randn(2048, 768, generator=torch.Generator().manual_seed(0))
    Xn = X.numpy()
    runs = {"torch": lambda: torch.mm(X.t(), X), "numpy": lambda: _threads(lambda: Xn.T @ Xn)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(10):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
    return min(times["torch"]) >= GAIN * min(times["numpy"])


def _use_numpy(t: torch.Tensor, work: float) -> bool:
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64) or work < MIN_WORK:
        return False
    if NUMPY is True or NUMPY is False:
        return NUMPY
    return numpy_faster()


@functools.cache
def _controller():
    import scipy.linalg  # noqa: F401  (its LAPACK loaded, so the controller finds it)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _threads(run):
    """``run()`` with NumPy's and SciPy's BLAS limited to torch's thread count."""
    with _controller().limit(limits=torch.get_num_threads(), user_api="blas"):
        return run()


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().resolve_conj().resolve_neg().numpy()


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for matrices a (n, k), b (k, m) of one dtype."""
    if not _use_numpy(a, a.shape[0] * a.shape[1] * b.shape[1]) or b.device != a.device or b.dtype != a.dtype:
        return torch.mm(a, b)
    A, B = _array(a), _array(b)
    return torch.from_numpy(_threads(lambda: A @ B))


def gram(X: torch.Tensor) -> torch.Tensor | None:
    """X X^T (n, n), exactly symmetric, through NumPy (its symmetric rank-k update) where that
    qualifies; else None (the caller forms it with torch)."""
    n, k = X.shape
    if not _use_numpy(X, n * n * k / 2):
        return None
    A = _array(X)
    return torch.from_numpy(_threads(lambda: A @ A.T))


def eigh(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric S (m, m), as
    ``torch.linalg.eigh``."""
    m = S.shape[0]
    if m < EIGH_SIZE or not _use_numpy(S, float(m) ** 3):
        return torch.linalg.eigh(S)
    import scipy.linalg

    A = _array(S)
    lam, V = _threads(lambda: scipy.linalg.eigh(A, driver="evd", check_finite=False))
    return torch.from_numpy(np.ascontiguousarray(lam)), torch.from_numpy(V)
