"""Newton-CG before exact Newton: how many Hessian products small problems may spend on Newton-CG
steps (:func:`newton_cg_first`) before :func:`deepfeat.probes.exact.newton_exact` takes over from
where they stopped, priced at what exact Newton would cost there (:func:`cg_budget`)."""

from __future__ import annotations

import torch

from deepfeat.probes.exact import DUAL_ROWS
from deepfeat.probes.newton import newton_cg
from deepfeat.probes.objectives import Problem, initial_point

#: problems inside exact Newton's static rule first take Newton-CG steps (:func:`newton.newton_cg`:
#: float32, Hessian products instead of factored Hessians) within a budget of Hessian products priced
#: at what exact Newton would cost there: CG_EXACT_STEPS steps of K (n r^2 + r^3 / 3) multiply-adds
#: plus CG_EXACT_STEP_OPS of fixed cost, each product 2 K n r plus CG_PRODUCT_OPS (the fixed costs,
#: in multiply-adds, of torch's per-operation overhead and small factorisations, fitted on 2 threads:
#: a Newton-CG product of 2 x 300-3,060 x 192 costs 0.2-0.6 ms, an exact step 5-12 ms). Out of
#: budget, exact Newton continues from where Newton-CG stopped, and a C path keeps to exact Newton
#: from there (its Cs get harder: the curvature vanishes on separated rows as C grows). Interleaved C
#: searches (2 threads, the same C and coefficients): logistic 2 x 300 x 192 1.23x, 2 x 300 x 1,280
#: 2.4x (a fold's Hessian has low rank where n < d: conjugate gradients converge in about its rank),
#: 2 x 600 x 1,280 5.0x, 2 x 1,200 x 192 1.43x, 2 x 3,060 x 192 0.99x, one-vs-rest 10 x 300 x 192
#: 3.1x, 10 x 300 x 1,280 6.7x; squared hinge 2 x 300-3,060 x 192 1.13-1.25x, 10 x 300-3,060 x 192
#: 1.4-2.2x.
CG_EXACT_STEPS = 3
CG_EXACT_STEP_OPS = 150e6
CG_PRODUCT_OPS = 15e6
#: ... squared-hinge problems with fewer than CG_HINGE_ROWS rows per basis dimension or more than
#: CG_HINGE_OUTPUTS outputs, whose exact steps go through each output's violators' m x m system (see
#: ``DUAL_WORK``), are priced by those systems at the start instead: per output CG_SMALL_FACTOR_COST
#: m^3 / 3 + m^2 (m <= r; small batched factorisations run at a fifteenth of a matrix product's
#: rate), plus CG_MANY_STEP_OPS per step; and only with at least CG_MANY_OUTPUTS outputs (two-class
#: ones with n < d lost 4-6% so, 23-40% at the flat price: their few large systems factor
#: efficiently). At small C most rows violate most margins and Newton-CG's products, one matrix
#: product for all outputs, beat a factorisation per output (102 x 300 x 192, C = 1e-4: 19 against
#: 113 ms per fold); at larger C exact Newton takes over. Interleaved C searches: 102 x 300 x 192
#: 1.5-2.1x, 102 x 300 x 1,280 1.4x, 10 x 300 x 1,280 1.65x; 2 x 300 / 1,200 x 1,280 unchanged.
CG_HINGE_ROWS = 1.5
CG_HINGE_OUTPUTS = 32
CG_MANY_OUTPUTS = 8
CG_SMALL_FACTOR_COST = 15.0
CG_MANY_STEP_OPS = 50e6


def cg_budget(
    problem: Problem, C: float = 1.0, W: torch.Tensor | None = None, b: torch.Tensor | None = None
) -> int:
    """Hessian products Newton-CG may spend on a problem of exact Newton's static rule, from (W, b)
    at C (default: :func:`initial_point`), before exact Newton takes over (see ``CG_EXACT_STEPS``
    and ``CG_MANY_OUTPUTS``; 0: none, exact Newton from the start)."""
    n, r = problem.Z.shape
    K = problem.n_outputs
    product = 2 * K * n * r + CG_PRODUCT_OPS
    if problem.loss == "squared_hinge" and (n < CG_HINGE_ROWS * r or K > CG_HINGE_OUTPUTS):
        if K < CG_MANY_OUTPUTS:
            return 0
        if W is None:
            W, b = initial_point(problem)
        m = (problem.evaluate(W, b, C)[3] > 0).sum(0).double()  # each output's margin violators
        dual = (m <= r) if n <= DUAL_ROWS else torch.zeros_like(m, dtype=torch.bool)
        factor = CG_SMALL_FACTOR_COST
        per = torch.where(dual, factor * m**3 / 3 + m * m, m * r * r + factor * r**3 / 3)
        return int(CG_EXACT_STEPS * (float(per.sum()) + CG_MANY_STEP_OPS) / product)
    return int(CG_EXACT_STEPS * (K * (n * r * r + r**3 / 3) + CG_EXACT_STEP_OPS) / product)


def newton_cg_first(
    problem: Problem,
    C: float,
    W: torch.Tensor,
    b: torch.Tensor,
    tol: float,
    max_iter: int,
    budget: int,
    polish_tol: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int, float, bool]:
    """Newton-CG within ``budget`` Hessian products to scaled gradient ``tol``, then (``polish_tol``,
    the final fit) in float64 to ``polish_tol``: (W, b, products, scaled gradient max, converged), in
    the problem's precision."""
    float64 = problem.Z.dtype == torch.float64
    first = polish_tol if polish_tol is not None and float64 else tol
    W, b, used, grad = newton_cg(problem, C, W, b, first, max_iter, max_products=budget)
    if grad <= first and polish_tol is not None and not float64:
        p64 = problem.to(torch.float64)
        W64, b64, more, grad = newton_cg(
            p64, C, W.double(), b.double(), polish_tol, max_iter, max_products=budget - used
        )
        used += more
        W, b = W64.to(problem.Z.dtype), b64.to(problem.Z.dtype)
    return W, b, used, grad, grad <= (tol if polish_tol is None else polish_tol)
