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
#: the float64 polish's gradient tolerance, relative to the float32 phase's
POLISH = 0.1


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


def _lbfgs(problem, Zs, scale, V, b, C, max_iter, tol, tolerance_change):
    """Run torch L-BFGS in place on (V, b) in scaled coordinates; returns iterations taken."""
    n = Zs.shape[0]
    V.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [V, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        history_size=20,
        tolerance_grad=tol,
        tolerance_change=tolerance_change,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        value = _data_loss(problem, F.linear(Zs, V, b)) / n + 0.5 * (V / scale).pow(2).sum() / (C * n)
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(closure)
    return int(opt.state[V].get("n_iter", 0))


def _grad_max(problem, Zs, scale, V, b, C) -> float:
    """max |gradient| of the objective in scaled coordinates at (V, b)."""
    n = Zs.shape[0]
    V = V.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        value = _data_loss(problem, F.linear(Zs, V, b)) / n + 0.5 * (V / scale).pow(2).sum() / (C * n)
        gV, gb = torch.autograd.grad(value, (V, b))
    return float(max(gV.abs().max(), gb.abs().max()))


def _newton_squared_hinge(problem, Zs, scale, V, b, C, max_iter, tol) -> int:
    """Semismooth Newton-CG on the one-vs-rest squared hinge, all classes at once, in place on (V, b).

    Generalised Hessian of class k: (2/n) [Z 1]^T D_k [Z 1] + diag(1/(C n scale^2), 0), D_k the
    active (margin-violating, counted) samples; Newton directions by conjugate gradients, step by
    backtracking on the objective. Returns the number of Hessian-vector products.
    """
    n = Zs.shape[0]
    T = problem.T  # (n, K) in {-1, +1}
    weight = torch.ones_like(T) if problem.weight is None else problem.weight
    reg = 1.0 / (C * n * scale.pow(2))  # (r,)

    def parts(V, b):
        margin = (1 - T * (Zs @ V.t() + b)).clamp_min(0) * weight  # (n, K)
        value = margin.pow(2).sum(0) / n + 0.5 * (V.pow(2) * reg).sum(1)  # (K,)
        coeff = -2.0 / n * T * margin
        return value, margin > 0, torch.cat([coeff.t() @ Zs + V * reg, coeff.sum(0)[:, None]], 1)

    def hess(active, P):  # P (K, r+1)
        u = (Zs @ P[:, :-1].t() + P[:, -1]) * active  # (n, K)
        return torch.cat([2.0 / n * u.t() @ Zs + P[:, :-1] * reg, 2.0 / n * u.sum(0)[:, None]], 1)

    products = 0
    value, active, grad = parts(V, b)
    for _ in range(50):
        if grad.abs().max() <= tol or products >= 10 * max_iter:
            break
        # conjugate gradients for H d = -g, per class (rows), to a relative residual of 1e-2
        d = torch.zeros_like(grad)
        res = -grad
        p = res.clone()
        rr = (res * res).sum(1)
        stop = 1e-4 * rr
        for _ in range(200):
            Hp = hess(active, p)
            products += 1
            alpha = rr / (p * Hp).sum(1).clamp_min(1e-300)
            d += alpha[:, None] * p
            res -= alpha[:, None] * Hp
            rr_new = (res * res).sum(1)
            if bool((rr_new <= stop).all()):
                break
            p = res + (rr_new / rr.clamp_min(1e-300))[:, None] * p
            rr = rr_new
        step = torch.ones(len(V), dtype=V.dtype)
        slope = (grad * d).sum(1)
        for _ in range(30):
            V_new, b_new = V + step[:, None] * d[:, :-1], b + step * d[:, -1]
            new_value, new_active, new_grad = parts(V_new, b_new)
            bad = new_value > value + 1e-4 * step * slope
            if not bool(bad.any()):
                break
            step = torch.where(bad, step / 2, step)
        V.copy_(V_new)
        b.copy_(b_new)
        value, active, grad = new_value, new_active, new_grad
    return products


def _as(problem: Problem, dtype: torch.dtype) -> Problem:
    T = problem.T if problem.multinomial else problem.T.to(dtype)
    weight = None if problem.weight is None else problem.weight.to(dtype)
    return Problem(problem.Z.to(dtype), problem.lam.to(dtype), T, weight, problem.loss, problem.n_outputs)


@dataclass
class Solution:
    """Coefficients in basis coordinates and how the solve went."""

    Wr: torch.Tensor  # (K, r) float32
    b: torch.Tensor  # (K,) float32
    n_iter: int
    grad_max: float  # max |gradient| in the curvature-scaled coordinates at the end (nan unpolished)
    converged: bool


def solve(
    problem: Problem,
    C: float,
    *,
    max_iter: int = 300,
    tol: float = 1e-5,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    polish: bool = False,
) -> Solution:
    """Minimise the objective for one C.

    The bulk of the work runs in float32 L-BFGS to gradient ``tol``. With ``polish`` (the final fit;
    cross-validation leaves it off), a float64 phase continues from there to gradient ``POLISH * tol``:
    L-BFGS for the logistic losses (float32 round-off stalls line searches near the optimum, at large C
    especially) and a semismooth Newton method for the squared hinge, whose piecewise-quadratic
    objective makes L-BFGS crawl once the active set settles.
    """
    n, r = problem.Z.shape
    K = problem.n_outputs
    scale = torch.sqrt(CURVATURE[problem.loss] * problem.lam + 1.0 / (C * n))  # (r,)
    Zs = problem.Z / scale
    if init is None:
        V = torch.zeros(K, r)
        b = torch.zeros(K)
    else:
        V, b = (init[0] * scale).clone(), init[1].clone()
    n_iter = _lbfgs(problem, Zs, scale, V, b, C, max_iter, tol, 1e-10)
    if polish:
        p64 = _as(problem, torch.float64)
        Zs64, scale64 = p64.Z / scale.double(), scale.double()
        V64, b64 = V.detach().double(), b.detach().double()
        grad = _grad_max(p64, Zs64, scale64, V64, b64, C)
        if grad > POLISH * tol:
            if problem.loss == "squared_hinge":
                n_iter += _newton_squared_hinge(p64, Zs64, scale64, V64, b64, C, max_iter, POLISH * tol)
            else:
                n_iter += _lbfgs(p64, Zs64, scale64, V64, b64, C, max_iter, POLISH * tol, 1e-16)
            grad = _grad_max(p64, Zs64, scale64, V64, b64, C)
        V, b = V64.detach().float(), b64.detach().float()
        return Solution(V / scale, b, n_iter, grad, grad <= tol)
    return Solution(V.detach() / scale, b.detach(), n_iter, float("nan"), n_iter < max_iter)
