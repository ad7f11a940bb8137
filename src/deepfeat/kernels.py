"""Kernels between feature sets: the factored trace kernel of gradient features and linear Grams.

For gradient features dE/dW = sum_p x_p g_p^T kept as factors (x_p the forward factor, g_p the
backward factor at position p; one position for a fully connected layer), the trace kernel is

    K_tr(A, B) = <dE/dW(A), dE/dW(B)>_F = sum_{p,q} (x_p^A . x_q^B) (g_p^A . g_q^B),

which for one position is K_fw(A, B) * K_bw(A, B) (Deep Fishing, eq. 2). It costs
P^2 (d_in + d_out) per pair instead of d_in * d_out, and no d_in x d_out matrix is ever formed.
Kernels are computed in blocks of rows, so an N x N kernel needs memory for the result plus one block.

Normalisations (``normalize``):

- ``"gradient"`` (default): the kernel of the L2-normalised explicit gradients,
  K(a, b) / sqrt(K(a, a) K(b, b)), as the paper compares gradients;
- ``"factors"``: each factor (the stacked x_p, the stacked g_p) scaled to unit L2 norm per image; for
  one position (a fully connected layer) this is exactly the L2-normalised gradient, for several
  positions (a 1x1 convolution) it is not;
- ``"none"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from deepfeat.errors import ConfigError, DataError, UnknownNameError

NORMALIZATIONS = ("factors", "gradient", "none")
_BLOCK_BYTES = 256 << 20  # working memory per block of a spatial kernel


@dataclass(frozen=True)
class FactoredLayout:
    """How a factored gradient row is laid out: (d_in + d_out, P) flattened, forward factor first."""

    d_in: int
    d_out: int
    positions: int = 1

    @property
    def row_dim(self) -> int:
        return (self.d_in + self.d_out) * self.positions

    @classmethod
    def from_provenance(cls, provenance: dict, layer_shape: tuple[int, ...] | None) -> FactoredLayout:
        """The layout of stored factored gradient features (their provenance and row shape)."""
        d_in, d_out = int(provenance["d_in"]), int(provenance["d_out"])
        positions = int(layer_shape[1]) if layer_shape is not None and len(layer_shape) > 1 else 1
        return cls(d_in, d_out, positions)

    def split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward factors (n, P, d_in) and backward factors (n, P, d_out) of rows (n, row_dim)."""
        t = torch.from_numpy(np.array(rows, dtype=np.float32))  # a copy: blocks of memmaps are read-only
        if t.dim() != 2 or t.shape[1] != self.row_dim:
            raise DataError(
                f"factored gradient rows must have (d_in + d_out) * P = ({self.d_in} + {self.d_out}) * "
                f"{self.positions} = {self.row_dim} columns, got shape {tuple(t.shape)}"
            )
        t = t.view(len(t), self.d_in + self.d_out, self.positions).transpose(1, 2)
        return t[:, :, : self.d_in], t[:, :, self.d_in :]


def _check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise UnknownNameError("kernel normalisation", normalize, NORMALIZATIONS)


def _unit(t: torch.Tensor) -> torch.Tensor:
    """Scale each image's factor (n, P, d) to unit Frobenius norm."""
    norms = t.flatten(1).norm(dim=1).clamp_min(1e-12)
    return t / norms[:, None, None]


def _prepared(rows, layout: FactoredLayout, normalize: str):
    fw, bw = layout.split(rows)
    if normalize == "factors":
        fw, bw = _unit(fw), _unit(bw)
    return fw, bw


def _pair_block(fa, ga, fb, gb) -> torch.Tensor:
    """Trace kernel between two blocks of factors, (m, P, .) and (n, P, .)."""
    m, p = fa.shape[:2]
    n = fb.shape[0]
    if p == 1:
        return (fa[:, 0] @ fb[:, 0].t()) * (ga[:, 0] @ gb[:, 0].t())
    s = fa.reshape(m * p, -1) @ fb.reshape(n * p, -1).t()
    s *= ga.reshape(m * p, -1) @ gb.reshape(n * p, -1).t()
    return s.view(m, p, n, p).sum(dim=(1, 3))


def self_kernel(rows, layout: FactoredLayout, normalize: str = "none") -> np.ndarray:
    """K(a, a) for every row: the squared Frobenius norm of each image's gradient."""
    _check_normalize(normalize)
    fw, bw = _prepared(rows, layout, "factors" if normalize == "factors" else "none")
    if normalize == "gradient":
        return np.ones(len(fw), dtype=np.float32)
    s = torch.bmm(fw, fw.transpose(1, 2)) * torch.bmm(bw, bw.transpose(1, 2))
    return s.sum(dim=(1, 2)).numpy()


def factored_kernel(
    A: ArrayLike | torch.Tensor,
    B: ArrayLike | torch.Tensor | None = None,
    *,
    layout: FactoredLayout,
    normalize: str = "gradient",
    block: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Trace kernel (len(A), len(B)) between factored gradient rows (B=None: A with itself).

    ``A`` and ``B`` are float arrays (n, row_dim) as stored, memory-mapped arrays included; they are
    read one block of rows at a time.
    """
    _check_normalize(normalize)
    same = B is None
    B = A if same else B
    nA, nB = len(A), len(B)
    if block is None:
        per_pair = 4 * 2 * layout.positions**2
        block = int(max(1, min(2048, _BLOCK_BYTES // max(1, per_pair * min(nB, 2048)))))
    out = np.empty((nA, nB), dtype=np.float32)
    diag_a = diag_b = None
    if normalize == "gradient":
        diag_a = self_kernel_chunked(A, layout)
        diag_b = diag_a if same else self_kernel_chunked(B, layout)
    steps = [(i, j) for i in range(0, nA, block) for j in range(0, nB, block) if not (same and j < i)]
    with torch.no_grad():
        for i, j in tqdm(steps, desc="kernel", unit="block", disable=not progress, dynamic_ncols=True):
            fa, ga = _prepared(A[i : i + block], layout, normalize)
            fb, gb = (fa, ga) if same and i == j else _prepared(B[j : j + block], layout, normalize)
            k = _pair_block(fa, ga, fb, gb).numpy()
            out[i : i + block, j : j + block] = k
            if same and j > i:
                out[j : j + block, i : i + block] = k.T
    if normalize == "gradient":
        out /= np.sqrt(np.maximum(np.outer(diag_a, diag_b), 1e-30)).astype(np.float32)
    return out


def self_kernel_chunked(rows, layout: FactoredLayout, chunk: int = 512) -> np.ndarray:
    """:func:`self_kernel` (no normalisation) over rows read ``chunk`` at a time."""
    return np.concatenate([self_kernel(rows[i : i + chunk], layout) for i in range(0, len(rows), chunk)])


def linear_kernel(A, B=None, *, normalize: str = "none", block: int = 4096) -> np.ndarray:
    """Dot-product kernel (len(A), len(B)); ``normalize="l2"`` uses L2-normalised rows."""
    if normalize not in ("none", "l2"):
        raise UnknownNameError("linear kernel normalisation", normalize, ("none", "l2"))
    B = A if B is None else B
    out = np.empty((len(A), len(B)), dtype=np.float32)

    def rows(X, i):
        t = torch.from_numpy(np.array(X[i : i + block], dtype=np.float32))
        return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12) if normalize == "l2" else t

    with torch.no_grad():
        for i in range(0, len(A), block):
            a = rows(A, i)
            for j in range(0, len(B), block):
                out[i : i + block, j : j + block] = (a @ rows(B, j).t()).numpy()
    return out


def explicit_gradients(rows, layout: FactoredLayout) -> np.ndarray:
    """The materialised gradients sum_p x_p g_p^T, (n, d_in * d_out): for checks and small layers."""
    if layout.d_in * layout.d_out * len(rows) > 1 << 31:
        raise ConfigError(
            f"{len(rows)} explicit gradients of {layout.d_in} x {layout.d_out} would not fit in memory; "
            "use factored_kernel"
        )
    fw, bw = layout.split(rows)
    return torch.einsum("npi,npo->nio", fw, bw).flatten(1).numpy()
