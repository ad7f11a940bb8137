"""Full-batch L-BFGS for L2-regularised linear classifiers, in a well-conditioned basis.

The problem solved is scikit-learn's, divided by C n:

    (1/n) sum_i loss(W x_i + b, y_i) + ||W||^2 / (2 C n)            (b not penalised)

Three exact reparametrisations make L-BFGS converge in few iterations without changing the optimum:

1. centring: x -> x - m, b -> b + W m (the intercept is free, so any shift m is exact);
2. a basis of the row space of the training features, from the eigendecomposition of the smaller of
   the two Gram matrices (d x d when d <= n, n x n otherwise): W = W_r B^T. The optimum lies in that
   row space (the penalty removes any component the data cannot see), and ||W|| = ||W_r|| since B
   has orthonormal columns, so the problem has min(n, d) unknowns per class instead of d;
3. a per-direction scaling by sqrt(c lambda_j + 1 / (C n)), the square root of the approximate
   curvature along eigen-direction j (lambda_j its second moment, c a loss constant), which turns the
   Hessian into roughly the identity for every C.

Gradients come from autograd; ``torch.nn.functional.linear`` keeps both matrix products in the fast
memory layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: approximate data-term curvature per unit of feature second moment, per loss
CURVATURE = {"logistic": 0.25, "squared_hinge": 1.0}


@dataclass
class Basis:
    """Centring vector and orthonormal basis (d, r) of the training features' row space."""

    mean: torch.Tensor  # (d,)
    B: torch.Tensor  # (d, r), orthonormal columns
    lam: torch.Tensor  # (r,) second moments of the centred features along the columns of B

    @classmethod
    def of(cls, X: np.ndarray | torch.Tensor, rel_tol: float = 1e-7) -> Basis:
        """Basis of the centred rows of X (directions with negligible variance dropped)."""
        Xt = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))
        n, d = Xt.shape
        mean = Xt.mean(0)
        Xc = Xt - mean
        if d <= n:
            gram = torch.mm(Xc.t().contiguous(), Xc).double() / n
            lam, B = torch.linalg.eigh(gram)
            keep = lam > rel_tol * lam.max().clamp_min(1e-30)
            B, lam = B[:, keep].float(), lam[keep].float()
        else:
            gram = torch.mm(Xc, Xc.t().contiguous()).double() / n
            mu, A = torch.linalg.eigh(gram)
            keep = mu > rel_tol * mu.max().clamp_min(1e-30)
            mu, A = mu[keep], A[:, keep]
            B = (Xc.t().double() @ A / torch.sqrt(n * mu)).float()
            lam = mu.float()
        return cls(mean=mean, B=B.contiguous(), lam=lam)

    def project(self, X: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Centred features expressed in the basis, (n, r)."""
        Xt = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))
        return (Xt - self.mean) @ self.B

    def to_coef(self, Wr: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients (K, d) and intercepts (K,) on the original, uncentred features."""
        W = Wr @ self.B.t()
        return W.numpy().astype(np.float32), (b - W @ self.mean).numpy().astype(np.float32)


@dataclass
class Problem:
    """One training problem in basis coordinates."""

    Z: torch.Tensor  # (n, r) projected features
    lam: torch.Tensor  # (r,)
    T: torch.Tensor  # (n,) class indices for the multinomial loss, else (n, K) targets
    weight: torch.Tensor | None  # (n, K) 0/1 entries counted in the loss (None: all)
    loss: str
    n_outputs: int

    @property
    def multinomial(self) -> bool:
        return self.T.dim() == 1


def make_problem(
    Z: torch.Tensor, lam: torch.Tensor, codes: np.ndarray, mask, n_outputs: int, loss: str, multinomial: bool
) -> Problem:
    """Targets in the form each loss needs: indices (softmax), {0,1} (logistic ovr), {-1,+1} (hinge)."""
    weight = None if mask is None else torch.from_numpy(np.asarray(mask, dtype=np.float32))
    if multinomial:
        T = torch.from_numpy(np.asarray(codes, dtype=np.int64))
    else:
        onehot = codes if codes.ndim == 2 else np.eye(n_outputs, dtype=np.int64)[codes]
        T = torch.from_numpy(onehot.astype(np.float32))
        if loss == "squared_hinge":
            T = 2 * T - 1
    return Problem(Z=Z, lam=lam, T=T, weight=weight, loss=loss, n_outputs=n_outputs)


def _data_loss(problem: Problem, logits: torch.Tensor) -> torch.Tensor:
    if problem.multinomial:
        return F.cross_entropy(logits, problem.T, reduction="sum")
    if problem.loss == "logistic":
        per = F.binary_cross_entropy_with_logits(logits, problem.T, reduction="none")
    else:
        per = torch.clamp(1 - problem.T * logits, min=0).pow(2)
    return (per * problem.weight).sum() if problem.weight is not None else per.sum()


def objective(problem: Problem, Wr: torch.Tensor, b: torch.Tensor, C: float) -> torch.Tensor:
    """The normalised objective at coefficients Wr (K, r) in basis coordinates."""
    n = problem.Z.shape[0]
    return _data_loss(problem, F.linear(problem.Z, Wr, b)) / n + 0.5 * Wr.pow(2).sum() / (C * n)


def solve(
    problem: Problem,
    C: float,
    *,
    max_iter: int = 300,
    tol: float = 1e-5,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise the objective for one C; returns (Wr (K, r), b (K,), iterations)."""
    n, r = problem.Z.shape
    K = problem.n_outputs
    scale = torch.sqrt(CURVATURE[problem.loss] * problem.lam + 1.0 / (C * n))  # (r,)
    Zs = problem.Z / scale
    if init is None:
        V = torch.zeros(K, r)
        b = torch.zeros(K)
    else:
        V, b = (init[0] * scale).clone(), init[1].clone()
    V.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [V, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tol,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        value = _data_loss(problem, F.linear(Zs, V, b)) / n + 0.5 * (V / scale).pow(2).sum() / (C * n)
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(closure)
    n_iter = int(opt.state[V].get("n_iter", 0))
    return (V.detach() / scale), b.detach(), n_iter
