"""Newton methods for the per-output losses, every output at once.

:func:`newton_squared_hinge` (semismooth Newton-CG, any number of outputs): the squared hinge's
objective is piecewise quadratic, so once the set of margin violators settles one Newton step lands
on the optimum, where L-BFGS would crawl. Output k's generalised Hessian is
(1/N) [Z 1]^T diag(h_k) [Z 1] + diag(1/(C N), 0), h_k = 2 w_k on its violators; Newton directions come
from conjugate gradients, preconditioned by that Hessian's diagonal for outputs with more violators than
dimensions (unpreconditioned for the others), step lengths from regula falsi on
each output's directional derivative (exact enough in float32, unlike differences of objective
values near the optimum).

:func:`newton_exact` (small problems with few outputs, logistic or squared hinge): each output's
Hessian formed and factored, for problems where first-order iterations are mostly overhead.

:func:`newton_multinomial` (Newton-CG for the softmax loss, any number of groups): small
multinomial problems, their C searches and final fits.
"""

from __future__ import annotations

import torch

from deepfeat.probes.objectives import Problem

#: conjugate gradients stop at this residual, relative to the gradient
CG_REL = 1e-2
#: squared-hinge problems of at most this many rows keep their Gram matrix (n x n, float64) for
#: Newton steps through the margin violators (see :func:`_dual_steps`)
DUAL_ROWS = 3000
#: exact Newton stops when an iteration lowers no output's objective by more than this, relative
#: (float64 round-off: a scaled-gradient tolerance below reach would otherwise spend max_iter)
ROUNDOFF = 1e-14


def newton_squared_hinge(
    problem: Problem, C: float, W: torch.Tensor, b: torch.Tensor, tol: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Minimise from (W, b) to scaled gradient ``tol``; returns (W, b, Hessian products, scaled
    gradient max) where the scaling is the square root of the diagonal curvature, as in L-BFGS."""
    Z, N = problem.Z, problem.N
    r = Z.shape[1]
    reg = 1.0 / (C * N)
    W, b = W.clone(), b.clone()

    def hess(Zs, h, P):  # P (K, r + 1); Zs: the rows of h
        u = torch.addmm(P[:, -1], Zs, P[:, :-1].t()) * h
        return torch.cat(
            [torch.addmm(P[:, :-1], u.t(), Zs, beta=reg, alpha=1.0 / N), u.sum(0)[:, None] / N], 1
        )

    tiny = torch.finfo(W.dtype).tiny
    _, gW, gb, h = problem.evaluate(W, b, C)
    products, gmax = 0, float("inf")
    for _ in range(50):
        grad = torch.cat([gW, gb[:, None]], 1)
        diag = problem.diagonal(h, C)
        gmax = float((grad / diag.sqrt()).abs().max())
        if gmax <= tol or products >= 4 * max_iter:
            break
        # an output with at most r margin violators has a Hessian of the ridge plus a low-rank term:
        # plain conjugate gradients converge in about rank steps there, while the diagonal scaling
        # spreads the ridge's cluster of eigenvalues (102 classes x 300 x 192: some outputs took
        # the 200-step limit for every Newton step and never converged)
        violates = h > 0
        few = (violates.sum(0) <= r)[:, None]
        diag = torch.where(few, torch.ones_like(diag), diag)
        # the Hessian products need only the rows that violate some output's margin
        rows = _sparse_rows(violates.any(1))
        Zs, hs = (Z, h) if rows is None else (Z[rows], h[rows])
        # preconditioned conjugate gradients for H d = -g, per output (rows)
        d = torch.zeros_like(grad)
        res = -grad
        z = res / diag
        p = z.clone()
        rz = (res * z).sum(1)
        stop = CG_REL**2 * (grad * grad).sum(1)
        for _ in range(200):
            Hp = hess(Zs, hs, p)
            products += 1
            alpha = rz / (p * Hp).sum(1).clamp_min(tiny)
            d += alpha[:, None] * p
            res -= alpha[:, None] * Hp
            if bool(((res * res).sum(1) <= stop).all()):
                break
            z = res / diag
            rz_new = (res * z).sum(1)
            p = z + (rz_new / rz.clamp_min(tiny))[:, None] * p
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
    problem: Problem, C: float, W: torch.Tensor, b: torch.Tensor, tol: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Newton-CG for the multinomial loss (every group of a grouped problem at once), from (W, b) to
    scaled gradient ``tol``; returns (W, b, Hessian products, scaled gradient max).

    Group g's Hessian-vector product for a direction V (its K rows of [W b]) is
    (1/N) [Z 1]^T (w_g * (P_g o U - P_g o (P_g . U))) + V / (C N) on the weights, U = Z V_W^T + V_b,
    with P_g the softmax probabilities (n, K) and w_g its row weights: one product with Z each way.
    Directions come from conjugate gradients per group, preconditioned by the diagonal curvature,
    steps from regula falsi on each group's directional derivative, as in
    :func:`newton_squared_hinge`. Meant for small problems (and the float64 polish), where an L-BFGS
    iteration costs mostly overhead and tens of them are needed near the optimum."""
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
        return torch.softmax(torch.addmm(b, Z, W.t()).reshape(n, G, K), 2)

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
    for _ in range(50):
        grad = torch.cat([gW, gb[:, None]], 1)
        diag = problem.diagonal(h, C)
        scaled = group_max(grad / diag.sqrt())
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
        stop = CG_REL**2 * rr
        open_ = rr > 0
        for _ in range(200):
            Hp = hess(P, p)
            products += 1
            pHp = per_group(p * Hp)
            open_ = open_ & (pHp > tiny)  # a group stays closed once done or degenerate
            alpha = torch.where(open_, rz / pHp.clamp_min(tiny), 0.0)
            d += spread(alpha) * p
            res -= spread(alpha) * Hp
            open_ = open_ & (per_group(res * res) > stop)
            if not bool(open_.any()):
                break
            z = res / diag
            rz_new = per_group(res * z)
            p = z + spread(torch.where(open_, rz_new / rz.clamp_min(tiny), 0.0)) * p
            rz = rz_new
        W, b, new = line_search(problem, C, W, b, grad, d, per_group, spread)
        _value, gW, gb, h = new
        P = probabilities(W, b)
    return W, b, products, gmax


def newton_exact(
    problem: Problem,
    C: float,
    W: torch.Tensor,
    b: torch.Tensor,
    tol: float,
    max_iter: int,
    gram_of: Problem | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Newton's method with each output's exact (generalised) Hessian for the per-output losses
    (logistic or squared hinge: two-class, one-vs-rest or multi-label; K independent outputs), from
    (W, b) to scaled gradient ``tol``.

    Output k's Hessian is (1/N) [Z 1]^T diag(h_k) [Z 1] + diag(1/(C N), 0) (h: p(1-p), or 2 on the
    margin violators, whose rows alone are multiplied); directions come from its Cholesky factor
    (for a squared-hinge output with at most r violators, from an m x m system on their Gram matrix:
    :func:`_dual_steps`; only outputs still above ``tol`` are factored),
    steps from backtracking on each output's objective (Armijo). Meant for small problems in float64,
    where L-BFGS and conjugate gradients cost mostly per-iteration overhead: a few Newton steps
    replace tens to hundreds of their iterations at large C. Returns (W, b, iterations, scaled gradient max).
    """
    Z, N = problem.Z, problem.N
    n, r = Z.shape
    Za = None  # [Z 1] in float32 for the Hessians, where one is needed
    ridge = torch.full((r + 1,), 1.0 / (C * N), dtype=Z.dtype, device=Z.device)
    ridge[-1] = 0.0
    free = None if problem.fixed is None else (~problem.fixed).to(Z.dtype)
    hinge = problem.loss == "squared_hinge"
    dual_ok = hinge and n <= DUAL_ROWS
    # rows of zero curvature weight: the squared hinge's non-violators, or rows outside an output's fold
    sparse = hinge or (problem.weight is not None and problem.weight.shape[1] > 1)
    gram_of = problem if gram_of is None else gram_of
    W, b = W.clone(), b.clone()
    logits = torch.addmm(b, Z, W.t())
    value, gW, gb, h = problem.evaluate(W, b, C, logits=logits)
    iterations, gmax = 0, float("inf")
    while True:
        grad = torch.cat([gW, gb[:, None]], 1)
        if free is not None:
            grad = grad * free[:, None]
        scaled = (grad / problem.diagonal(h, C).sqrt()).abs().amax(1)
        gmax = float(scaled.max())
        if gmax <= tol or iterations >= max_iter:
            break
        iterations += 1
        # only the outputs still above tol: each Hessian costs a factorisation, which dominates
        # (10 classes x 300 x 192 SVM: most outputs settle an iteration or two before the last one)
        open_ = torch.nonzero(scaled > tol).squeeze(1).tolist()
        d = torch.zeros_like(grad)
        if dual_ok:  # outputs with at most r margin violators: the dual step
            counts = (h[:, open_] > 0).sum(0).tolist()
            # in batches of similar size (each is padded to its largest): powers of two
            batches: dict[int, list[int]] = {}
            for k, m in zip(open_, counts):
                if m <= r:
                    batches.setdefault(max(m - 1, 0).bit_length(), []).append(k)
            for dual in batches.values():
                T, a = problem.T[:, dual], h[:, dual] / 2
                d[dual] = _dual_steps(Z, gram_of.gram(), T, a, W[dual], b[dual], C)
            open_ = [k for k, m in zip(open_, counts) if m > r]
        if open_:
            if Za is None:  # Hessians in float32: they set the directions only
                Za = torch.cat([Z, Z.new_ones(n, 1)], 1).float()
            hN = (h / N).float()
            H = torch.stack([_weighted_gram(Za, hN[:, k], sparse) for k in open_])
            H = H.to(Z.dtype) + torch.diag(ridge)
            L, info = torch.linalg.cholesky_ex(H)
            if bool((info > 0).any()):  # curvature vanished along some direction (separated data)
                scale = H.diagonal(dim1=1, dim2=2).amax(1).clamp_min(1e-300)
                eye = torch.eye(r + 1, dtype=Z.dtype, device=Z.device)
                L = torch.linalg.cholesky(H + 1e-10 * scale[:, None, None] * eye)
            d[open_] = -_cholesky_solve(grad[open_, :, None], L).squeeze(2)
        slope = (grad * d).sum(1)
        step = torch.ones_like(slope)
        pending = slope < 0
        # the trial points' logits along the direction, without a pass over Z per trial
        moved = torch.addmm(d[:, -1], Z, d[:, :-1].t())
        taken = torch.zeros_like(step)
        for _ in range(30):
            Wt = W + step[:, None] * d[:, :-1]
            vt = problem.value_at(logits + step * moved, Wt, C)
            ok = pending & (vt <= value + 1e-4 * step * slope)
            taken = torch.where(ok, step, taken)
            pending &= ~ok
            if not bool(pending.any()):
                break
            step = torch.where(pending, 0.5 * step, step)
        moves = taken > 0
        if not bool(moves.any()):
            break  # no output could move: as far as round-off allows
        # (where: an output that did not move keeps its values even along a non-finite direction)
        W = torch.where(moves[:, None], W + taken[:, None] * d[:, :-1], W)
        b = torch.where(moves, b + taken * d[:, -1], b)
        logits = torch.where(moves, logits + taken * moved, logits)
        previous = value
        value, gW, gb, h = problem.evaluate(W, b, C, logits=logits)
        if bool((previous - value <= ROUNDOFF * previous.abs()).all()):
            break  # the moves no longer lower any objective beyond round-off (a tol below reach)
    return W, b, iterations, gmax


def _dual_steps(
    Z: torch.Tensor,
    gram: torch.Tensor,
    T: torch.Tensor,
    a: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    C: float,
) -> torch.Tensor:
    """Newton directions (k, r + 1) of k squared-hinge outputs from (W, b) (k, r), (k,), through their
    margin violators (weights a (n, k) > 0, targets T (n, k) = +-1), at most m <= r per output: m x m
    instead of (r + 1)^2 unknowns.

    On a fixed set of violators the objective is quadratic, its minimiser (w*, b*) a weighted ridge
    regression of t on those rows with a free intercept. With s = a^(1/2), K their Gram matrix and
    M = diag(s) K diag(s) + I / (2 C): w* = Z^T (s beta), beta = M^-1 (s t) - b* M^-1 s, and b* makes
    s . beta = 0 (the intercept's optimality), so one factor of M and two solves give both. The
    direction is (w*, b*) - (w, b), the exact Newton step. Outputs with fewer violators are padded
    with rows of weight 0 (s = 0: beta = 0 there), which leaves their solution as it is."""
    active = a > 0
    m = max(int(active.sum(0).max()), 1)
    R = torch.argsort(active.to(torch.int8), dim=0, descending=True, stable=True)[:m].t()  # (k, m)
    s, tA = a.t().gather(1, R).sqrt(), T.t().gather(1, R)
    # outputs with the same weights share one system (at small C every row of a fold violates every
    # output's margin): factor each distinct one once
    shared, which = torch.unique(a.t(), dim=0, return_inverse=True)
    if len(shared) == len(which):
        first = torch.arange(len(which), device=a.device)
    else:
        first = torch.full((len(shared),), len(which), dtype=torch.long, device=a.device)
        first.scatter_reduce_(0, which, torch.arange(len(which), device=a.device), "amin")
    Rf, sf = R[first], s[first]
    M = torch.take(gram, Rf[:, :, None] * len(gram) + Rf[:, None, :])  # Gram of the violators
    M.mul_(sf[:, :, None]).mul_(sf[:, None, :])
    M.diagonal(dim1=1, dim2=2).add_(0.5 / C)
    L, info = torch.linalg.cholesky_ex(M)
    if bool((info > 0).any()):  # round-off in a near-singular system: a touch more ridge
        M.diagonal(dim1=1, dim2=2).add_(1e-10 * M.diagonal(dim1=1, dim2=2).amax(1, keepdim=True))
        L = torch.linalg.cholesky(M)
    if len(shared) < len(which):
        L = L[which]
    sol = _cholesky_solve(torch.stack([s * tA, s], 2), L)  # (k, m, 2)
    denominator = (s * sol[:, :, 1]).sum(1)
    # no violators at all: only the penalty pulls, towards w = 0 at any intercept
    none = denominator <= 0
    b_new = torch.where(none, b, (s * sol[:, :, 0]).sum(1) / denominator.clamp_min(torch.finfo(a.dtype).tiny))
    beta = sol[:, :, 0] - b_new[:, None] * sol[:, :, 1]
    # w* = Z^T (s beta) with s beta scattered to every row: one pass over Z for all outputs
    w_new = torch.mm(Z.new_zeros(len(R), len(Z)).scatter_(1, R, s * beta), Z)
    return torch.cat([w_new - W, (b_new - b)[:, None]], 1)


def _cholesky_solve(B: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """L L^T X = B for batches of lower-triangular L: two triangular solves (half the time of
    ``torch.cholesky_solve`` on batches of small matrices on the CPU)."""
    return torch.linalg.solve_triangular(L.mH, torch.linalg.solve_triangular(L, B, upper=False), upper=True)


def _sparse_rows(active: torch.Tensor) -> torch.Tensor | None:
    """Indices of the true entries of ``active`` (n,) when they are under 80% of the rows (gathering
    them then costs less than the products it saves), else None."""
    rows = torch.nonzero(active).squeeze(1)
    return rows if len(rows) < 0.8 * len(active) else None


def _weighted_gram(Za: torch.Tensor, w: torch.Tensor, sparse: bool) -> torch.Tensor:
    """Za^T diag(w) Za; with ``sparse`` (weights mostly 0: the squared hinge's non-violators) from
    the rows of non-zero weight only."""
    rows = _sparse_rows(w != 0) if sparse else None
    if rows is not None:
        Za, w = Za[rows], w[rows]
    return torch.mm((Za * w[:, None]).t(), Za)
