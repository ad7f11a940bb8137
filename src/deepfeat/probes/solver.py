"""Solving the probes' objectives (:mod:`deepfeat.probes.objectives`) for one C or along a C path.

Three exact reparametrisations keep the problem small and well conditioned without moving the optimum:

1. centring: x -> x - m, b -> b + W m (the intercept is free, so any shift m is exact);
2. a basis of the row space of the training features, from one eigendecomposition of the smaller of
   the two Gram matrices (d x d in the features' precision when d <= n; n x n in float64 otherwise,
   its eigenvectors then divided by the square roots of their eigenvalues, or for one-output
   problems its Cholesky factor, see :meth:`deepfeat.probes.basis.Basis.of`): W = W_r B^T. The optimum
   lies in that row space (the penalty removes any component the data cannot see) and
   ||W|| = ||W_r||, so each class has min(n, d) unknowns: the primal form when n > d, in effect the
   dual one when n < d. One basis serves every fold of the C search, every C and every class (a
   fold's rows span a subspace);
3. per-unknown scaling by the square root of a diagonal curvature estimate, recomputed at the start
   of every C from the current solution (the curvature of a logistic loss falls by orders of
   magnitude as C grows and the training data become separated).

Along a C path each solve starts from the previous solution moved along the path's last step (a
secant predictor, kept only where it lowers the objective). The bulk of the work is float32; the
final fit is polished in float64 (L-BFGS for the logistic losses, whose float32 line searches stall
near the optimum; a semismooth Newton method for the squared hinge, whose piecewise-quadratic
objective makes L-BFGS crawl once the active set settles). Small squared-hinge problems use that
Newton method throughout (see ``NEWTON_WORK``); small per-output problems with few outputs, of either
loss, use Newton's method with exact Hessians in float64 (float32 in the squared hinge's C search,
``EXACT_SEARCH_FLOAT32``; see ``NEWTON_EXACT_WORK``; first Newton-CG
steps within a budget priced at exact Newton's cost, see :mod:`deepfeat.probes.budget`), and so do
squared-hinge problems with many outputs whose outputs have few margin violators each (Newton steps
through the violators' Gram matrix, see ``DUAL_WORK``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deepfeat.probes.budget import cg_budget, newton_cg_first
from deepfeat.probes.exact import DUAL_ROWS, Factors, dual_rows, newton_exact
from deepfeat.probes.lbfgs import minimize
from deepfeat.probes.newton import newton_cg, newton_multinomial
from deepfeat.probes.objectives import Problem, initial_point

#: the float64 polish's gradient tolerance, relative to the float32 phase's
POLISH = 0.1
#: the smallest scaled-gradient tolerance a float32 phase is asked for: below it the objective's
#: changes are under float32's resolution, and iterations ran on without progress (multinomial iris,
#: tol 1e-8, C = 10: 1,248 Newton-CG steps, then NaN coefficients); a smaller ``tol`` continues in
#: float64 from the float32 solution
FLOAT32_TOL = 1e-6
#: losses whose C-search fits (not the final fit) take exact Newton in the problem's precision
#: (float32) instead of float64: the squared hinge's Newton steps solve each set of margin violators'
#: system exactly, the validation scores need no more, and float64 passes over the rows and the Gram
#: matrix dominated where n < d. Interleaved C searches (2 threads, the same C and coefficients,
#: validation scores equal but for one image at one C of 10 x 300 x 192): 2 x 1,200 x 1,280 1.16x
#: (twice), 2 x 300 x 1,280 1.10-1.26x, 10 x 1,200 x 1,280 1.22x, 102 x 1,200 x 1,280 1.27x, 102 x
#: 300 x 192 1.08-1.16x, 102 x 1,200 x 192 0.94-1.14x, 2 and 10 x 300-1,200 x 192 0.97-1.25x.
#: Not the logistic loss (2 x 1,200 x 192 0.88-1.02x): its backtracking compares objective values,
#: which float32 cannot resolve near the optimum
EXACT_SEARCH_FLOAT32 = ("squared_hinge",)


@dataclass
class Solution:
    """Coefficients in basis coordinates and how the solve went."""

    W: torch.Tensor  # (K, r)
    b: torch.Tensor  # (K,)
    n_iter: int
    grad_max: float  # largest scaled gradient entry at the end
    converged: bool
    #: d(W, b) / d log C at the solution and the outputs it holds for (exact Newton's factors)
    tangent: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    exact: bool = False  # solved by exact Newton
    #: problems in exact Newton's regime: whether Newton-CG alone solved it within its budget
    #: (True), ran out and handed over to exact Newton (False), or was not tried (None)
    cg: bool | None = None


class _Packed:
    """The objective as a function of B packed problems (B, p) for :func:`lbfgs.minimize`."""

    def __init__(self, problem: Problem, C: float):
        self.problem, self.C = problem, C
        self.K, self.r = problem.n_outputs, problem.Z.shape[1]
        self.h: torch.Tensor | None = None  # curvature weights (n, K) at the last full evaluation

    def pack(self, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([W, b[:, None]], 1)
        return x.reshape(self.problem.groups, -1) if self.problem.multinomial else x

    def unpack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.reshape(-1, self.r + 1)
        return x[:, : self.r], x[:, self.r]

    def __call__(self, x: torch.Tensor, rows: torch.Tensor | None):
        W, b = self.unpack(x)
        value, gW, gb, h = self.problem.evaluate(W, b, self.C, rows)
        if rows is None:
            self.h = h
        elif self.problem.multinomial:  # rows are groups: their blocks of classes
            n, k = h.shape[0], self.problem.n_classes
            self.h.view(n, -1, k)[:, rows] = h.view(n, -1, k)
        else:
            self.h[:, rows] = h
        g = torch.cat([gW, gb[:, None]], 1)
        return value, g.reshape(x.shape)

    def scale(self) -> torch.Tensor:
        diag = self.problem.diagonal(self.h, self.C)
        return torch.sqrt(diag).reshape(self.problem.n_blocks, -1)


#: curvature pairs kept by L-BFGS
MEMORY = 10
#: squared-hinge problems up to this many multiply-adds per evaluation are solved by Newton-CG from the
#: start: their cost is per-iteration overhead, and a Newton-CG step has a fifth of an L-BFGS
#: iteration's operations (10 classes x 300 x 192: the whole C path 4x faster); larger ones take
#: fewer matrix products with L-BFGS (102 x 3,060 x 1,280: 2,800 Hessian products per fold's path
#: against some 1,000 L-BFGS evaluations)
NEWTON_WORK = 5_000_000
#: per-output problems (logistic or squared hinge: two-class, one-vs-rest, multi-label) with at most
#: NEWTON_EXACT_OUTPUTS outputs, at most NEWTON_EXACT_SIZE entries n x r (first-order iterations are
#: then mostly per-iteration overhead, hundreds of them at large C) and Hessians of at most
#: NEWTON_EXACT_WORK multiply-adds (outputs x n x r^2) are solved by Newton's method with exact
#: Hessians in float64. Measured C searches: two-class logistic 300 x 192 0.26 -> 0.08 s, 3,060 x 192
#: 0.84 -> 0.5 s; SVM 2 x 1,200 x 192 1.26 -> 0.29 s, 10 x 1,200 x 192 3.1 -> 1.8 s. With many
#: outputs one Hessian each cost more than it saved (102 x 300 x 192 SVM: 5.1 s with Newton-CG, 6.2
#: s with exact Hessians; both well behind liblinear's 1.0 s there). Squared-hinge problems of at
#: most ``DUAL_ROWS`` rows follow ``DUAL_WORK`` instead.
NEWTON_EXACT_OUTPUTS = 16
NEWTON_EXACT_SIZE = 1_000_000
NEWTON_EXACT_WORK = 1_000_000_000
#: squared-hinge problems of at most ``DUAL_ROWS`` rows (their Gram matrix kept) take exact Newton
#: steps for any number of outputs while outputs x min(n, r)^3 is at most DUAL_WORK: an output with
#: at most r margin violators solves a system of their number (:func:`newton._dual_steps`), the others
#: one of r + 1. Measured C searches (one thread, interleaved): 102 x 300 x 192 1.43 -> 1.25 s,
#: 102 x 300 x 1,280 1.77 -> 1.32 s, 10 x 300 x 1,280 0.68 -> 0.53 s, 102 x 1,200 x 192 6.6 -> 5.9 s,
#: 102 x 3,060 x 192 18.0 -> 16.0 s; above it (10 x 1,200 x 1,280: 5.1e9) Newton-CG was faster (5.3
#: against 9.1 s). Problems outside that rule are sent there at run time (:func:`_dual_newton`) where
#: the violators at the start cost at most DUAL_WORK: the large-C end of a path with few violators,
#: where L-BFGS took hundreds of iterations (C searches, 2 threads, interleaved: 10 x 1,200 x 1,280
#: 4.1 -> 3.2 s, 102 x 1,200 x 1,280 8.8 -> 5.7 s; n = 300 and 3,060 rows unchanged)
DUAL_WORK = 1_000_000_000
#: squared-hinge problems with more outputs than this (and over NEWTON_WORK per evaluation) take
#: exact Newton steps only where the run-time rule (:func:`_dual_newton`) accepts the violators' work
#: at the C's start, even inside the static rule: at small C most one-vs-rest outputs have more
#: violators than dimensions, each step then costs a Hessian per output, and the ridge-dominated
#: problem is easy for Newton-CG / L-BFGS.
#: Interleaved C searches (2 threads): 102 x 1,200 x 192 6.89 -> 3.42 s, 102 x 3,060 x 192 9.63 ->
#: 7.34 s, 102 x 300 x 192 / 1,280 unchanged; not for 10 outputs (10 x 3,060 x 192 4.03 -> 8.81 s,
#: 10 x 1,200 x 192 1.39 -> 1.53 s), two classes (0.93-1.0x) or small problems (10 x 300 x 192 with
#: its 3 folds stacked, 30 outputs: 0.44 -> 0.49 s)
DUAL_RUNTIME_OUTPUTS = 16
#: multinomial problems up to this many multiply-adds per evaluation (n x r x K) are solved by
#: Newton-CG (final fits in float64 from the start, no float32 L-BFGS phase): tens of L-BFGS
#: iterations near the optimum cost more than a few Newton steps of Hessian products. Measured C
#: searches (quiet, 2 threads): 10 x 300 x 192 0.27 -> 0.17 s (with folds batched), 10 x 300 x
#: 1,280 0.33 -> 0.15 s, 102 x 300 x 192 0.45 -> 0.31 s; above it 102 x 1,200 x 192 (23.5 million)
#: was slower (2.0 -> 2.7 s)
MULTINOMIAL_NEWTON_WORK = 10_000_000
#: along the C path of a problem with at least CG_GROWTH_ROWS rows per basis dimension and at most
#: ``NEWTON_EXACT_OUTPUTS`` outputs, Newton-CG goes first at the next C only where CG_GROWTH times the
#: Hessian products it took at this C fit in the next C's budget: they grow along the path (2 x 3,060
#: x 192 logistic: 6, 14, 21, 37, 73, then out of its budget of 80 at C = 10 and exact Newton after
#: it), and a C that runs out pays for both. Interleaved C searches (2 threads, medians of 7): 2 x
#: 3,060 x 192 logistic 1.26x, squared hinge 1.07x; 10 x 3,060 x 192 squared hinge 1.17x; 2 / 10 x
#: 1,200 x 192 1.01-1.07x. Not with fewer rows (a fold's Hessian then has low rank, conjugate
#: gradients converge in about its rank: 2 x 300 x 1,280 logistic 0.73x at 2.0) or many outputs
#: (102 x 1,200 x 192 squared hinge 0.86x)
CG_GROWTH = 3.0
CG_GROWTH_ROWS = 4
#: fits for one C above this, without a starting point, walk a short C path to it
CONTINUE_ABOVE = 1.0

#: C searches whose problem has at most this many entries x outputs (n x r x K) solve all folds as
#: one problem (the folds' rows selected by weights): their cost is largely per-iteration overhead,
#: paid once instead of once per fold (10 classes x 300 x 192, multinomial: 0.42 -> 0.26 s). Where a
#: fold's problem takes exact Newton, only when the stacked one does too; each fold's Hessian then
#: comes from its own rows (interleaved, 2 threads: two classes x 300 x 192 logistic 0.18 -> 0.14 s,
#: SVM 0.21 -> 0.14 s; x 1,200 x 192 0.35 -> 0.31 s and 0.42 -> 0.34 s; x 3,060 x 192 1.0 -> 0.97 s
#: and 1.0 -> 0.81 s; 10 classes x 300 x 192 SVM 0.51 -> 0.46 s)
FOLD_BATCH_WORK = 2_000_000
#: ... and at any size the C searches of one output (two classes) and of multinomial problems of at
#: most this many classes: one pass over the training rows per evaluation serves every fold instead of
#: one pass over each fold's two thirds (interleaved, 2 threads: two classes x 3,060 x 1,280 logistic
#: 2.70 -> 2.04 s, SVM 4.23 -> 3.22 s, x 8,000 x 1,280 logistic 5.79 -> 4.84 s, SVM 5.15 -> 5.07 s;
#: 10 classes multinomial x 1,200 x 192 1.04 -> 0.82 s, x 1,200 x 1,280 3.48 -> 2.53 s, x 3,060 x 192
#: 8.44 -> 3.57 s, x 3,060 x 1,280 6.85 -> 4.26 s, x 8,000 x 192 6.90 -> 5.84 s, x 8,000 x 1,280
#: 8.49 -> 6.45 s). Not for more outputs: 102 classes x 300 x 192 multinomial 0.54 -> 0.70 s,
#: 10 classes x 3,060 x 192 SVM 4.66 -> 6.17 s (the stacked problem takes a slower solver)
FOLD_BATCH_CLASSES = 16


def exact_newton(loss: str, n_outputs: int, n: int, r: int) -> bool:
    """Whether :func:`solve` takes Newton's method with exact Hessians for a problem of this loss,
    outputs, rows and basis dimension (see ``NEWTON_EXACT_*`` and ``DUAL_WORK``)."""
    if loss == "squared_hinge" and n <= DUAL_ROWS:
        return n * r <= NEWTON_EXACT_SIZE and n_outputs * min(n, r) ** 3 <= DUAL_WORK
    return (
        loss != "multinomial"
        and n_outputs <= NEWTON_EXACT_OUTPUTS
        and n * r <= NEWTON_EXACT_SIZE
        and n_outputs * n * r * r <= NEWTON_EXACT_WORK
        and not (loss == "squared_hinge" and n_outputs > 1 and n < r)
    )


def stacks_folds(loss: str, n_outputs: int, n: int, r: int, n_folds: int) -> bool:
    """Whether a C search of this loss ("multinomial" for softmax), outputs, rows and basis dimension
    solves its ``n_folds`` folds as one problem (see ``FOLD_BATCH_*``)."""
    few = n_outputs <= FOLD_BATCH_CLASSES and (n_outputs == 1 or loss == "multinomial")
    if n * r * n_outputs > FOLD_BATCH_WORK and not few:
        return False
    # a fold that would take exact Newton only stacks into a problem that still does
    return not exact_newton(loss, n_outputs, n, r) or exact_newton(loss, n_outputs * n_folds, n, r)


def _dual_newton(problem: Problem, C: float, W: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether a squared-hinge problem of at most :func:`exact.dual_rows` rows (for the ``dtype`` its
    Newton steps would run in), outside :func:`exact_newton`'s static rule (or inside it with many
    outputs, see ``DUAL_RUNTIME_OUTPUTS``), takes exact Newton steps from (W, b): when the steps'
    systems there cost at most ``DUAL_WORK`` (per output m^3 for its m margin violators, or n r^2 for
    the Hessian where m > r; plus n^2 r for the Gram matrix where no shared one is at hand). At small
    C nearly every row violates its margins (L-BFGS or Newton-CG, well conditioned there, stay
    cheaper); at large C few do and iterative solvers need hundreds of iterations."""
    n, r = problem.Z.shape
    if problem.loss != "squared_hinge" or n > dual_rows(dtype):
        return False
    h = problem.evaluate(W, b, C)[3]
    m = (h > 0).sum(0).double()
    work = float(torch.where(m <= r, m**3, float(n * r * r + r**3)).sum())
    if not problem._grams and problem.gram_from is None:
        work += n * n * r
    return work <= DUAL_WORK


def _minimize(problem: Problem, C: float, W, b, tol: float, max_iter: int):
    """L-BFGS from (W, b), scaled by the curvature at the start."""
    packed = _Packed(problem, C)
    x = packed.pack(W, b)
    start = packed(x, None)  # also the curvature weights at the start
    fixed = None if problem.multinomial else problem.fixed
    res = minimize(
        packed, x, packed.scale(), tol=tol, max_iter=max_iter, fixed=fixed, start=start, memory=MEMORY
    )
    W, b = packed.unpack(res.x)
    return W.clone(), b.clone(), res


def solve(
    problem: Problem,
    C: float,
    *,
    max_iter: int = 300,
    tol: float = 1e-5,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    polish: bool = False,
    tangent: bool = False,
    cg_first: bool = True,
) -> Solution:
    """Minimise the objective for one C from ``init``; with ``tangent``, the solution's derivative in
    log C where exact Newton's Hessian factors give it (:meth:`Factors.tangent`); ``cg_first``:
    whether a problem in exact Newton's regime tries Newton-CG first (see :mod:`budget`).

    Without ``init``, a large C is reached along a short path (C / 1000, C / 100, C / 10, C) from
    :func:`initial_point`: a cold start far from the optimum costs more than the path. The float32
    phase runs to scaled gradient ``tol`` (iterative solvers at most to ``FLOAT32_TOL``, then float64
    to ``tol``); with ``polish`` (the final fit) a float64 phase continues to ``POLISH * tol``. A
    float32 phase that ends with non-finite coefficients is solved again in float64 from the start."""
    options = dict(max_iter=max_iter, tol=tol, polish=polish, cg_first=cg_first)
    sol = _solve(problem, C, init=init, tangent=tangent, **options)
    dtype = problem.Z.dtype
    if dtype == torch.float64 or bool(torch.isfinite(torch.cat([sol.W.flatten(), sol.b])).all()):
        return sol
    again = solve(problem.to(torch.float64), C, **options)
    W, b, its = again.W.to(dtype), again.b.to(dtype), sol.n_iter + again.n_iter
    return Solution(W, b, its, again.grad_max, again.converged)


def _solve(problem: Problem, C: float, *, max_iter, tol, init, polish, tangent, cg_first) -> Solution:
    """:func:`solve` in the problem's precision (and a float64 polish)."""
    if init is None and C > CONTINUE_ABOVE:
        *_, last = solve_path(problem, [C / 1000, C / 100, C / 10], max_iter=max_iter, tol=tol)
        init = (last.W, last.b)
    W, b = (
        initial_point(problem) if init is None else (init[0].to(problem.Z.dtype), init[1].to(problem.Z.dtype))
    )
    n, r = problem.Z.shape
    K = problem.n_outputs
    # many squared-hinge outputs: the violators' work at this C decides (see DUAL_RUNTIME_OUTPUTS)
    many = problem.loss == "squared_hinge" and K > DUAL_RUNTIME_OUTPUTS and n * r * K > NEWTON_WORK
    static = exact_newton(problem.loss, K, n, r) and not (many and n <= DUAL_ROWS)
    dtype = problem.Z.dtype
    low = problem.loss in EXACT_SEARCH_FLOAT32 and not polish and tol >= FLOAT32_TOL
    if static or _dual_newton(problem, C, W, b, dtype if low else torch.float64):
        cg, done = None, 0
        # only inside the static rule (the run-time one picks exact Newton where violators are few);
        # outputs held fixed (one class in a fold) stay where exact Newton keeps them
        budget = 0
        if cg_first and static and (problem.fixed is None or not bool(problem.fixed.any())):
            budget = cg_budget(problem, C, W, b)
        if budget > 0:
            final = POLISH * tol if polish else None
            W, b, done, grad, cg = newton_cg_first(problem, C, W, b, tol, max_iter, budget, final)
            if cg:
                return Solution(W, b, done, grad, True, cg=True)
        px = problem if dtype == torch.float64 or low else problem.to(torch.float64)
        # the logistic loss only: its path is smooth (C search 1.12-1.17x at 2 x 300-1,200 x 192 and
        # 2 x 300 x 1,280); the squared hinge's bends where violators change (0.93-1.07x)
        factors = Factors() if tangent and problem.loss == "logistic" else None
        x = px.Z.dtype
        Wx, bx, n_iter, grad = newton_exact(
            px, C, W.to(x), b.to(x), POLISH * tol if polish else tol, max_iter, problem, factors
        )
        t = None if factors is None else factors.tangent(px, C, Wx)
        if t is not None:
            t = (t[0].to(dtype), t[1].to(dtype), t[2])
        return Solution(Wx.to(dtype), bx.to(dtype), done + n_iter, grad, grad <= tol, t, exact=True, cg=cg)
    # iterative float32 phases stop at FLOAT32_TOL; the final fit, or a smaller tol, goes on in float64
    f32 = dtype != torch.float64
    goal = POLISH * tol if polish else tol
    t32 = max(tol, FLOAT32_TOL) if f32 else tol
    if problem.loss == "squared_hinge" and n * r * problem.n_outputs <= NEWTON_WORK:
        W, b, n_iter, grad = newton_cg(problem, C, W, b, t32, max_iter)
    elif problem.multinomial and n * r * problem.n_outputs <= MULTINOMIAL_NEWTON_WORK:
        if polish and f32:
            n_iter, grad = 0, float("inf")  # straight to the float64 Newton-CG phase below
        else:
            W, b, n_iter, grad = newton_multinomial(
                problem, C, W, b, t32 if f32 else goal, max_iter, forcing=True
            )
    else:
        W, b, res = _minimize(problem, C, W, b, t32, max_iter)
        n_iter, grad = res.n_iter, float(res.grad_max.max())
    if f32 and (polish or tol < FLOAT32_TOL):
        p64 = problem.to(torch.float64)
        if problem.loss == "squared_hinge":
            W64, b64, its, grad = newton_cg(p64, C, W.double(), b.double(), goal, max_iter)
        elif problem.multinomial:
            # (a small problem's final fit comes straight here from the folds' solutions: a far start)
            far = n * r * problem.n_outputs <= MULTINOMIAL_NEWTON_WORK
            W64, b64, its, grad = newton_multinomial(
                p64, C, W.double(), b.double(), goal, max_iter, forcing=far
            )
        else:
            W64, b64, res = _minimize(p64, C, W.double(), b.double(), goal, max_iter)
            its, grad = res.n_iter, float(res.grad_max.max())
        n_iter += its
        W, b = W64.to(problem.Z.dtype), b64.to(problem.Z.dtype)
    return Solution(W, b, n_iter, grad, grad <= tol)


def solve_path(
    problem: Problem,
    Cs: list[float],
    *,
    max_iter: int = 300,
    tol: float = 1e-5,
):
    """Solutions for the increasing ``Cs``, one at a time (a generator), each warm-started from the
    previous one moved along the path (its tangent, else the path's last step) where that lowers the
    new objective."""
    prev = current = None
    cg_first = True
    for j, C in enumerate(Cs):
        start = initial_point(problem) if current is None else _predict(problem, C, Cs[j - 1], current, prev)
        sol = solve(problem, C, max_iter=max_iter, tol=tol, init=start, tangent=True, cg_first=cg_first)
        cg_first = cg_first and sol.cg is not False
        if cg_first and sol.cg and j + 1 < len(Cs) and _cg_grows(problem):
            cg_first = CG_GROWTH * sol.n_iter <= cg_budget(problem, Cs[j + 1], sol.W, sol.b)
        prev, current = current, sol
        yield sol


def _cg_grows(problem: Problem) -> bool:
    """Whether the C path's Newton-CG budget looks ahead (see ``CG_GROWTH``)."""
    n, r = problem.Z.shape
    return bool(CG_GROWTH) and n >= CG_GROWTH_ROWS * r and problem.n_outputs <= NEWTON_EXACT_OUTPUTS


def _predict(problem: Problem, C: float, C_current: float, current: Solution, prev: Solution | None):
    """The better of the current solution and its extrapolation to C (new objective): along its
    tangent in log C where exact Newton gave one (2 x 300 x 192 logistic C search: 17 -> 13 Newton
    steps over the grid), else along the path's last step (secant). Not for exact Newton on the
    squared hinge: the secant's start lowered the objective but took a poorer set of margin violators
    (2 x 300-1,200 x 192: 25 -> 18-21 and 32 -> 27-28 Newton steps over the search without it,
    102 x 300 x 192: 57-60 -> 41-46)."""
    if (current.tangent is None and prev is None) or (current.exact and problem.loss == "squared_hinge"):
        return current.W, current.b
    W1, b1 = current.W, current.b
    if prev is not None:
        W1, b1 = current.W + (current.W - prev.W), current.b + (current.b - prev.b)
    if current.tangent is not None:
        dW, db, have = current.tangent
        step = math.log(C / C_current)
        W1 = torch.where(have[:, None], current.W + step * dW, W1)
        b1 = torch.where(have, current.b + step * db, b1)
    # objective values only: from the logits, no gradient product
    f0 = problem.value_at(problem.scores(problem.Z, current.W, current.b), current.W, C)
    f1 = problem.value_at(problem.scores(problem.Z, W1, b1), W1, C)
    better = (f1 < f0).to(W1.dtype)
    if problem.multinomial:  # one value per group: its classes follow it
        better = better.repeat_interleave(problem.n_classes)
    return (
        better[:, None] * W1 + (1 - better[:, None]) * current.W,
        better * b1 + (1 - better) * current.b,
    )


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)
