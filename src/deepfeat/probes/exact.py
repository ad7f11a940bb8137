"""Newton's method with exact Hessians for small per-output problems (logistic or squared hinge):
each output's Hessian formed and factored, for problems where first-order iterations are mostly
overhead; squared-hinge outputs with few margin violators step through their Gram matrix instead
(:func:`_dual_steps`). Each output's last factor also gives the C path's tangent (:class:`Factors`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from deepfeat.probes.base import dense_threads
from deepfeat.probes.newton import sparse_rows
from deepfeat.probes.objectives import Problem, flush_tiny

#: squared-hinge problems of at most this many rows keep their Gram matrix (n x n, float64) for
#: Newton steps through the margin violators (see :func:`_dual_steps`)
DUAL_ROWS = 3000
#: ... and in float32 (the squared hinge's C search, see ``solver.EXACT_SEARCH_FLOAT32``) up to this
#: many: the same bytes (72 MB), and its product costs 0.66x the float64 one's. Interleaved, 2
#: threads, medians of 7: two classes x 3,060 x 1,280 (its 3 folds stacked) C search 909-939 ->
#: 646-680 ms, whole fit 1.22-1.25x (L-BFGS took 99 iterations at C = 1, exact Newton 3). Final fits
#: stay in float64 under DUAL_ROWS: dual steps there took 55 -> 424 ms, the float64 Gram matrix of
#: 3,060 rows included
DUAL_ROWS_FLOAT32 = 4242


def dual_rows(dtype: torch.dtype) -> int:
    """The most rows for which squared-hinge problems whose Newton steps run in ``dtype`` keep their
    Gram matrix for dual steps."""
    return DUAL_ROWS_FLOAT32 if dtype == torch.float32 else DUAL_ROWS


#: exact Newton stops when an iteration lowers no output's objective by more than this, relative
#: (float64 round-off: a scaled-gradient tolerance below reach would otherwise spend max_iter)
ROUNDOFF = 1e-14
#: the first ridge, relative to the largest diagonal entry, on systems that round-off left indefinite
JITTER = {torch.float64: 1e-10, torch.float32: 1e-6}


@dataclass
class Factors:
    """Each output's last Cholesky factor of its exact Hessian in :func:`newton_exact` (outputs
    whose steps all went through :func:`_dual_steps` have none), for the C path's tangent."""

    #: (outputs, their factors (k, r + 1, r + 1)) of Newton steps, by reference (a copy per step
    #: cost 0.6 ms of a 5 ms step at 3 x 194^2); a step's part is dropped once a later step has
    #: factored all of its outputs again, so at most one part per open-output count is held
    parts: list = field(default_factory=list)

    def store(self, outputs: list[int], L: torch.Tensor) -> None:
        covered = set(outputs)
        self.parts = [part for part in self.parts if not set(part[0]) <= covered]
        self.parts.append((outputs, L))

    def tangent(
        self, problem: Problem, C: float, W: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """d(W, b) / d log C at the optimum (W, b) for C, for the outputs with a factor: (dW, db, have).

        Optimality, (1/N) grad L(W, b) + (W, 0) / (C N) = 0, differentiated in log C gives
        H t = (W, 0) / (C N) with H the Hessian; the factor is the one of the last Newton step, a
        step before the optimum (a predictor's accuracy is all it needs)."""
        if not self.parts:
            return None
        last: dict[int, tuple[torch.Tensor, int]] = {}  # output -> (factors, index in them)
        for outputs, L in self.parts:
            last.update((k, (L, i)) for i, k in enumerate(outputs))
        have = sorted(last)
        L = torch.stack([last[k][0][last[k][1]] for k in have])
        rhs = torch.cat([W, W.new_zeros(len(W), 1)], 1) / (C * problem.N)
        if problem.fixed is not None:
            rhs = rhs * (~problem.fixed).to(rhs.dtype)[:, None]
        t = torch.zeros_like(rhs)
        t[have] = _cholesky_solve(rhs[have, :, None], L).squeeze(2)
        mask = torch.zeros(len(W), dtype=torch.bool, device=W.device)
        mask[have] = True
        return t[:, :-1], t[:, -1], mask


def newton_exact(
    problem: Problem,
    C: float,
    W: torch.Tensor,
    b: torch.Tensor,
    tol: float,
    max_iter: int,
    gram_of: Problem | None = None,
    factors: Factors | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Newton's method with each output's exact (generalised) Hessian for the per-output losses
    (logistic or squared hinge: two-class, one-vs-rest or multi-label; K independent outputs), from
    (W, b) to scaled gradient ``tol``.

    Output k's Hessian is (1/N) [Z 1]^T diag(h_k) [Z 1] + diag(1/(C N), 0) (h: p(1-p), or 2 on the
    margin violators, whose rows alone are multiplied); directions come from its Cholesky factor
    (for a squared-hinge output with at most r violators, from an m x m system on their Gram matrix:
    :func:`_dual_steps`; only outputs still above ``tol`` are factored),
    steps from backtracking on each output's objective (Armijo). Meant for small problems in float64
    (float32 where solutions need no more: the squared hinge's C search), where L-BFGS and conjugate
    gradients cost mostly per-iteration overhead: a few Newton steps replace tens to hundreds of their
    iterations at large C. Returns (W, b, iterations, scaled gradient max);
    each output's last Hessian factor goes to ``factors`` where one is given.
    """
    Z, N = problem.Z, problem.N
    n, r = Z.shape
    Za = None  # [Z 1] in float32 for the Hessians, where one is needed
    ridge = torch.full((r + 1,), 1.0 / (C * N), dtype=Z.dtype, device=Z.device)
    ridge[-1] = 0.0
    free = None if problem.fixed is None else (~problem.fixed).to(Z.dtype)
    hinge = problem.loss == "squared_hinge"
    dual_ok = hinge and n <= dual_rows(Z.dtype)
    # rows of zero curvature weight: the squared hinge's non-violators, or rows outside an output's fold
    sparse = hinge or (problem.weight is not None and problem.weight.shape[1] > 1)
    gram_of = problem if gram_of is None else gram_of
    gram = None  # the rows' Gram matrix in Z's precision, where a dual step needs it
    roundoff = max(ROUNDOFF, 8 * torch.finfo(Z.dtype).eps)
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
                gram = gram_of.gram(Z.dtype) if gram is None else gram
                d[dual] = _dual_steps(Z, gram, T, a, W[dual], b[dual], C)
            open_ = [k for k, m in zip(open_, counts) if m > r]
        if open_:
            if Za is None:  # Hessians in float32: they set the directions only
                Za = problem.augmented(torch.float32)
            hN = flush_tiny((h / N).float())
            with dense_threads(n * (r + 1) ** 2):  # per product
                H = torch.stack([_weighted_gram(Za, hN[:, k], sparse) for k in open_])
            H = H.to(Z.dtype)
            H.diagonal(dim1=1, dim2=2).add_(ridge)
            # (a jitter where curvature vanished along some direction: separated data)
            with dense_threads((r + 1) ** 3 // 3, factor=True):  # per factor
                L = _factor(H)
            d[open_] = -_cholesky_solve(grad[open_, :, None], L).squeeze(2)
            if factors is not None:
                factors.store(open_, L)
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
        if bool((previous - value <= roundoff * previous.abs()).all()):
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
    with dense_threads(m**3 // 3, factor=True):  # per factor
        L = _factor(M)  # (a jitter where round-off leaves a near-singular system indefinite)
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


def _factor(M: torch.Tensor) -> torch.Tensor:
    """Cholesky factors of a batch of symmetric matrices M (k, m, m), positive definite up to
    round-off: where one does not factor, its diagonal gains JITTER (by precision) of its largest
    entry, ten times more until it does (the last try at 1e-2, where torch's error is raised)."""
    L, info = torch.linalg.cholesky_ex(M)
    jitter = JITTER[M.dtype] if M.dtype in JITTER else JITTER[torch.float32]
    while bool((info > 0).any()):
        scale = M.diagonal(dim1=1, dim2=2).amax(1).clamp_min(torch.finfo(M.dtype).tiny)
        failed = (info > 0).to(M.dtype)[:, None]
        M = M.clone()
        M.diagonal(dim1=1, dim2=2).add_(jitter * scale[:, None] * failed)
        if jitter >= 1e-2:
            return torch.linalg.cholesky(M)
        L, info = torch.linalg.cholesky_ex(M)
        jitter *= 10
    return L


def _cholesky_solve(B: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """L L^T X = B for batches of lower-triangular L: two triangular solves (half the time of
    ``torch.cholesky_solve`` on batches of small matrices on the CPU)."""
    return torch.linalg.solve_triangular(L.mH, torch.linalg.solve_triangular(L, B, upper=False), upper=True)


def _weighted_gram(Za: torch.Tensor, w: torch.Tensor, sparse: bool) -> torch.Tensor:
    """Za^T diag(w) Za; with ``sparse`` (weights mostly 0: the squared hinge's non-violators) from
    the rows of non-zero weight only."""
    rows = sparse_rows(w != 0) if sparse else None
    if rows is not None:  # index_select: 10-20% under Za[rows] at 300-3,000 x 194
        Za, w = Za.index_select(0, rows), w.index_select(0, rows)
    return torch.mm((Za * w[:, None]).t(), Za)
