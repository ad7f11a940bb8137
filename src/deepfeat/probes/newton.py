"""Newton-CG methods, every output at once (exact Newton for small problems: :mod:`deepfeat.probes.exact`).

:func:`newton_cg` (per-output losses, any number of outputs): for the squared hinge a semismooth
Newton method (its objective is piecewise quadratic, so once the set of margin violators settles one
Newton step lands on the optimum, where L-BFGS would crawl); for the logistic loss Newton-CG. Output
k's (generalised) Hessian is (1/N) [Z 1]^T diag(h_k) [Z 1] + diag(1/(C N), 0), h_k = 2 w_k on its
violators or w_k p (1 - p); Newton directions come from conjugate gradients, preconditioned by that
Hessian's diagonal for outputs with more rows of non-zero curvature than dimensions
(unpreconditioned for the others), step lengths from regula falsi on each output's directional
derivative (exact enough in float32, unlike differences of objective values near the optimum).
Conjugate gradients stop at a residual relative to the gradient, or at one already within the
tolerance (``ABSOLUTE_STOP``), whichever comes first.

:func:`newton_multinomial` (Newton-CG for the softmax loss, any number of groups): small
multinomial problems, their C searches and final fits.
"""

from __future__ import annotations

import torch

from deepfeat.probes.objectives import Problem, flush_tiny

#: conjugate gradients stop at this residual, relative to the gradient (at most FORCING_MAX with
#: a forcing term, see :func:`_forcing`)
CG_REL = 1e-2
#: :func:`newton_cg` on problems of at most this many entries (n x (r + 1)) takes its Hessian products
#: on a copy of [Z 1], one product each way with the intercept's column included (a third of the
#: operations, which dominate there; interleaved whole fits, the same C and coefficients: two classes
#: x 300 x 1,280 and x 300 x 192 logistic 1.11-1.12x, 10 x 300 x 192 svm 1.09x, 102 x 300 x 192 svm
#: 1.07x); larger ones keep Z (the copy's cost: 2 x 8,000 x 1,280 svm 0.96x, 10 x 1,200 x 1,280 svm
#: 0.98x)
AUGMENTED_ENTRIES = 1_000_000
FORCING_MAX = 0.5
#: conjugate gradients also stop once every output's (group's) residual, scaled as the gradient's
#: tolerance test scales it, is at most this fraction of ``tol`` everywhere: the residual is the
#: quadratic model's gradient after the full step, so solving further only over-solves the last
#: Newton step (a multinomial final fit, 10 x 300 x 192 at C = 1: its last two steps took 43 and 53
#: products to reach 1.0e-6 and 9.7e-9 against tol 1e-6). Interleaved whole fits (2 threads, the same
#: C, the final tolerance still checked on the gradient itself): multinomial 10 x 300 x 192 1.15x
#: (133 -> 83 products in the final fit), 10 x 1,200 x 192 1.16x, 10 x 1,200 x 1,280 1.14x, 10 x
#: 3,060 x 192 1.09x, 102 x 1,200 x 192 1.07x; per-output Newton-CG 1.00-1.08x (two classes x 300-
#: 3,060 x 192 and x 300 x 1,280, 10 / 102 classes squared hinge). 0.5 and 0.7 took more products,
#: 1.0 the same time; 0 switches the stop off
ABSOLUTE_STOP = 0.9


def newton_cg(
    problem: Problem,
    C: float,
    W: torch.Tensor,
    b: torch.Tensor,
    tol: float,
    max_iter: int,
    max_products: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Minimise a per-output loss (squared hinge or logistic) from (W, b) to scaled gradient ``tol``;
    returns (W, b, Hessian products, scaled gradient max) where the scaling is the square root of the
    diagonal curvature, as in L-BFGS. With ``max_products``, stops (unconverged) once that many
    Hessian products are spent, after the step along the direction reached by then."""
    Z, N = problem.Z, problem.N
    r = Z.shape[1]
    reg = 1.0 / (C * N)
    W, b = W.clone(), b.clone()

    def hess(Zs, h, P):  # P (K, r + 1); Zs: the rows of h
        u = torch.addmm(P[:, -1], Zs, P[:, :-1].t()) * h
        return torch.cat(
            [torch.addmm(P[:, :-1], u.t(), Zs, beta=reg, alpha=1.0 / N), u.sum(0)[:, None] / N], 1
        )

    def hess_augmented(Za, h, P):  # Za: the rows of h in [Z 1]
        return torch.addmm(P * ridge, torch.mm(Za, P.t()).mul_(h).t(), Za, alpha=1.0 / N)

    # small problems: [Z 1] (once per problem), and the penalty's diagonal (none on the intercept)
    Za, product = None, hess
    if Z.shape[0] * (r + 1) <= AUGMENTED_ENTRIES:
        Za, product = problem.augmented(), hess_augmented
        ridge = torch.full((r + 1,), reg, dtype=Z.dtype, device=Z.device)
        ridge[-1] = 0.0

    tiny = torch.finfo(W.dtype).tiny
    _, gW, gb, h = problem.evaluate(W, b, C)
    products, gmax = 0, float("inf")
    for _ in range(50):
        grad = torch.cat([gW, gb[:, None]], 1)
        diag = problem.diagonal(h, C)
        isd = diag.rsqrt()  # the gradient's scaling (also the residual's, for its absolute stop)
        gmax = float((grad * isd).abs().max())
        if gmax <= tol or products >= 4 * max_iter or (max_products is not None and products >= max_products):
            break
        # an output with at most r margin violators has a Hessian of the ridge plus a low-rank term:
        # plain conjugate gradients converge in about rank steps there, while the diagonal scaling
        # spreads the ridge's cluster of eigenvalues (102 classes x 300 x 192: some outputs took
        # the 200-step limit for every Newton step and never converged)
        violates = h > 0
        few = (violates.sum(0) <= r)[:, None]
        diag = torch.where(few, torch.ones_like(diag), diag)
        # the Hessian products need only the rows that violate some output's margin
        rows = sparse_rows(violates.any(1))
        if Za is not None:
            Zs, hs = (Za, h) if rows is None else (Za.index_select(0, rows), h.index_select(0, rows))
        else:
            Zs, hs = (Z, h) if rows is None else (Z[rows], h[rows])
        # preconditioned conjugate gradients for H d = -g, per output (rows)
        d = torch.zeros_like(grad)
        res = -grad
        z = res / diag
        p = z.clone()
        rz = torch.linalg.vecdot(res, z)
        stop = CG_REL**2 * torch.linalg.vecdot(grad, grad)
        for _ in range(200):
            Hp = product(Zs, hs, p)
            products += 1
            alpha = (rz / torch.linalg.vecdot(p, Hp).clamp_min(tiny))[:, None]
            d.addcmul_(alpha, p)
            res.addcmul_(alpha, Hp, value=-1.0)
            done = torch.linalg.vecdot(res, res) <= stop
            if ABSOLUTE_STOP:
                done |= (res * isd).abs().amax(1) <= ABSOLUTE_STOP * tol
            if bool(done.all()) or products == max_products:
                break  # (a truncated CG direction is still a descent direction)
            z = res / diag
            rz_new = torch.linalg.vecdot(res, z)
            p = torch.addcmul(z, (rz_new / rz.clamp_min(tiny))[:, None], p)
            rz = rz_new
        W, b, new = line_search(problem, C, W, b, grad, d, lambda x: x.sum(1), lambda v: v[:, None])
        _value, gW, gb, h = new
    return W, b, products, gmax


def line_search(problem: Problem, C: float, W, b, grad, d, block_sum, spread):
    """A step along direction d (rows of [W b]) per independent block of rows (``block_sum`` (k, m)
    -> (blocks,), ``spread`` (blocks,) -> (k, 1)): regula falsi on each block's directional
    derivative phi'(t) = g(t) . d, increasing along d for a convex objective, and exact in float32
    unlike differences of objective values. Accepts the full step where the derivative is at most a
    tenth of the initial slope's size, a shorter one where it is that small in size; returns (W, b,
    the evaluation there)."""
    slope = block_sum(grad * d)
    lo, hi = torch.zeros_like(slope), torch.ones_like(slope)
    dlo, dhi = slope.clone(), torch.zeros_like(slope)
    step = torch.ones_like(slope)
    for trial in range(8):
        t = spread(step)
        W_new, b_new = W + t * d[:, :-1], b + t[:, 0] * d[:, -1]
        new = problem.evaluate(W_new, b_new, C)
        dt = block_sum(torch.cat([new[1], new[2][:, None]], 1) * d)
        # the full step is kept while the objective still falls there; a shorter one only near the
        # minimum along d (accepting any descending point left steps of 1% of a Newton step that
        # overshot past new margin violators, and tens of Newton steps each crawling by that much)
        done = dt <= 0.1 * slope.abs() if trial == 0 else dt.abs() <= 0.1 * slope.abs()
        if bool(done.all()):
            break
        above = dt > 0
        hi, dhi = torch.where(done | ~above, hi, step), torch.where(done | ~above, dhi, dt)
        lo, dlo = torch.where(done | above, lo, step), torch.where(done | above, dlo, dt)
        nxt = lo + (hi - lo) * (-dlo / (dhi - dlo).clamp_min(1e-30))
        step = torch.where(done, step, nxt.clamp(lo + 0.01 * (hi - lo), hi - 0.01 * (hi - lo)))
    return W_new, b_new, new


def newton_multinomial(
    problem: Problem,
    C: float,
    W: torch.Tensor,
    b: torch.Tensor,
    tol: float,
    max_iter: int,
    forcing: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Newton-CG for the multinomial loss (every group of a grouped problem at once), from (W, b) to
    scaled gradient ``tol``; returns (W, b, Hessian products, scaled gradient max).

    Group g's Hessian-vector product for a direction V (its K rows of [W b]) is
    (1/N) [Z 1]^T (w_g * (P_g o U - P_g o (P_g . U))) + V / (C N) on the weights, U = Z V_W^T + V_b,
    with P_g the softmax probabilities (n, K) and w_g its row weights: one product with Z each way.
    Directions come from conjugate gradients per group, preconditioned by the diagonal curvature,
    steps from regula falsi on each group's directional derivative, as in :func:`newton_cg`;
    ``forcing``: conjugate gradients to a residual that tightens as the gradient falls (see
    :func:`_forcing`), for starts far from the optimum. Meant for small problems (and the float64
    polish), where an L-BFGS iteration costs mostly overhead and tens of them are needed near the
    optimum."""
    Z, N = problem.Z, problem.N
    n = Z.shape[0]
    G, K = problem.groups, problem.n_classes
    reg = 1.0 / (C * N)
    weight = problem.weight
    w = None if weight is None else weight.expand(n, G)[:, :, None]
    W, b = W.clone(), b.clone()

    def per_group(x):  # (G K, r + 1) -> (G,)
        return x.reshape(G, -1).sum(1)

    def group_max(x):  # (G K, r + 1) -> (G,)
        return x.reshape(G, -1).abs().amax(1)

    def spread(v):  # (G,) -> (G K, 1)
        return v.repeat_interleave(K)[:, None]

    def probabilities(W, b):
        return flush_tiny(torch.softmax(torch.addmm(b, Z, W.t()).reshape(n, G, K), 2))

    def hess(P, V):  # V (G K, r + 1)
        U = torch.addmm(V[:, -1], Z, V[:, :-1].t()).reshape(n, G, K)
        HU = P * (U - (P * U).sum(2, keepdim=True))
        if w is not None:
            HU = HU * w
        HU = HU.reshape(n, G * K)
        HW = torch.addmm(V[:, :-1], HU.t(), Z, beta=reg, alpha=1.0 / N)
        return torch.cat([HW, HU.sum(0)[:, None] / N], 1)

    tiny = torch.finfo(W.dtype).tiny
    _, gW, gb, h = problem.evaluate(W, b, C)
    P = probabilities(W, b)
    products, gmax = 0, float("inf")
    first_rr = None
    for _ in range(50):
        grad = torch.cat([gW, gb[:, None]], 1)
        diag = problem.diagonal(h, C)
        isd = diag.rsqrt()  # the gradient's scaling (also the residual's, for its absolute stop)
        scaled = group_max(grad * isd)
        gmax = float(scaled.max())
        if gmax <= tol or products >= 4 * max_iter:
            break
        # groups already at tol keep their point (conjugate gradients on a zero residual degenerate)
        moving = spread((scaled > tol).to(grad.dtype))
        d = torch.zeros_like(grad)
        res = -grad * moving
        z = res / diag
        p = z.clone()
        rz = per_group(res * z)
        rr = per_group(res * res)
        if first_rr is None:
            first_rr = rr.clamp_min(1e-300)
        stop = _forcing(rr, first_rr, forcing) ** 2 * rr
        open_ = rr > 0
        for _ in range(200):
            Hp = hess(P, p)
            products += 1
            pHp = per_group(p * Hp)
            open_ = open_ & (pHp > tiny)  # a group stays closed once done or degenerate
            alpha = spread(torch.where(open_, rz / pHp.clamp_min(tiny), 0.0))
            d += alpha * p
            res -= alpha * Hp
            z = res / diag
            rz_new = per_group(res * z)
            open_ = open_ & (per_group(res * res) > stop)
            if ABSOLUTE_STOP:
                open_ = open_ & (group_max(res * isd) > ABSOLUTE_STOP * tol)
            if not bool(open_.any()):
                break
            p = z + spread(torch.where(open_, rz_new / rz.clamp_min(tiny), 0.0)) * p
            rz = rz_new
        W, b, new = line_search(problem, C, W, b, grad, d, per_group, spread)
        _value, gW, gb, h = new
        P = probabilities(W, b)
    return W, b, products, gmax


def _forcing(gg: torch.Tensor, first: torch.Tensor, forcing: bool) -> torch.Tensor:
    """Conjugate gradients' relative residual per output or group: CG_REL, or with ``forcing``
    (||g|| / ||g_0||)^(1/2) clamped to [CG_REL, FORCING_MAX] (g_0: the gradient at the start), an
    inexact Newton method's forcing term: loose directions while far from the optimum, where a
    precise one is wasted. Used by the multinomial searches and final fits of :mod:`solver`
    (interleaved C searches, the same C and coefficients: 10 x 300 x 192 1.11-1.15x, 10 x 1,200 x
    192 1.35-1.61x, 102 x 300 x 192 1.28x); not where a float64 polish starts from an L-BFGS
    solution, already near the optimum (more Newton steps: 102 x 1,200 x 192 0.88x), nor by the
    per-output solves (2 x 300 x 1,280 logistic 1.14x, 2 x 3,060 x 192 1.22x, but 2 x 1,200 x 192
    0.91-0.95x; squared hinge 0.93-1.16x)."""
    if not forcing:
        return torch.full_like(gg, CG_REL)
    return (gg / first).pow(0.25).clamp(CG_REL, FORCING_MAX)


def sparse_rows(active: torch.Tensor) -> torch.Tensor | None:
    """Indices of the true entries of ``active`` (n,) when they are under 80% of the rows (gathering
    them then costs less than the products it saves), else None."""
    rows = torch.nonzero(active).squeeze(1)
    return rows if len(rows) < 0.8 * len(active) else None
