"""Two-class logistic regression in NumPy: the C search and final fit of small problems on the CPU.

The objective is :class:`~deepfeat.probes.LinearProbe`'s (scikit-learn's): C x the summed, weighted
log loss + ||w||^2 / 2, the intercept unpenalised, divided by the number of samples as in
:mod:`deepfeat.probes.objectives`, so ``tol`` and ``cv_tol`` scale the gradient the same way. A
two-class fit of a few hundred to a few thousand rows and at most ``MAX_DIM`` dimensions spends its
time in thousands of small operations, not in arithmetic (benchmarks/PROBES.md, runs (bj) and
(bl)); NumPy's per-operation cost is about half of torch's, so such problems are solved here.

Method. The centred features are rotated onto the eigenvectors of their scatter matrix (an exact
reparametrisation: the intercept is not penalised and the penalty is rotation-invariant), and [Z 1]
is formed once. The folds of a C search are solved together with the whole training set: one column
of coefficients each, each column's entries weighted by membership of its rows (a product reads
[Z 1] once for every column). Each C starts from the previous C's solutions moved on by their last
change (a secant step, kept per column where it lowers the objective), then Newton's method with
preconditioned conjugate gradients (CG): while CG needs few products per Newton step, the
preconditioner is the curvature's diagonal (as in :mod:`deepfeat.probes.newton`); once it needs more
than ``HESSIAN_SWITCH`` (larger C, where the Hessian is ill-conditioned), the inverses of the
columns' exact Hessians, formed once and kept along the path until CG slows down again. Step lengths
come from the Illinois variant of regula falsi on each column's directional derivative (the loss is
convex; every step lowers the objective). The final fit starts from the whole set's solution at the
chosen C and runs in float64 to ``POLISH`` x ``tol``. Sample weights are rescaled by the geometric
midpoint of their positive range and C by the same factor (the same minimiser; weights of 1e6 or
1e-50, or from 1e-25 to 1e23, stay within float32).

NumPy and torch keep separate thread pools, whose idle workers spin for a while after each call; a
solver that alternated between them per operation would fight itself, so the work here is NumPy's
(the one torch call, a Cholesky inverse, runs on one thread), and LinearProbe runs it on one BLAS
thread when fitting in the main thread (:func:`deepfeat.probes.base.one_blas_thread`): two threads
gained at most 1.05x at these sizes, and their idle workers slowed the torch fits that followed
(a logistic and a squared-hinge fit in turn, two classes x 300 / 1,200 x 192: 74.6 / 177.5 ms a
round on two threads, 67.9 / 141.6 ms on one, 83.8 / 172.4 ms with torch's solvers for both:
benchmarks/probe_threads.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit

from deepfeat.probes.base import thread_budget

#: problems of at most this many dimensions (the Hessians are (d + 1)^2 per fold) ...
MAX_DIM = 256
#: ... and at most this many entries n x (d + 1) take this solver, on one BLAS thread (LinearProbe).
#: Whole fits against the torch solvers, two classes x 192 (benchmarks/probe_threads.py, PROBES.md
#: run (bl)), alone / in rounds of a logistic fit then a squared-hinge one (torch): 300 rows 2.23x /
#: 1.23x, 1,200 rows 1.66x / 1.22x, but 2,000 rows 1.25x / 0.91x and 3,060 rows 0.87x / 0.94x (one
#: BLAS thread is slower there, and on two their idle workers spin beside torch's); 8,000 rows on
#: two BLAS threads 1.67x / 1.21x (not taken: a second rule for one measured shape)
MAX_ENTRIES = 250_000
#: Newton steps that take more CG products than this (on average, at one C) switch the
#: preconditioner to the folds' exact Hessians, or refresh those (PROBES.md run (bl))
HESSIAN_SWITCH = 6
#: the search's folds stop at this fraction of ``cv_tol``: Newton-CG stops just under its tolerance
#: where exact Newton (the torch solvers' choice for these problems) lands far below it. With 0.3 the
#: folds' largest relative objective gaps to their exact optima were 1.7e-5 / 5.4e-5 at two classes
#: x 300 / 1,200 x 192 (torch solvers 6.8e-4 / 1.1e-3, LogisticRegressionCV 2.6e-2 / 3.7e-2); with
#: 1.0, 9.8e-5 / 2.6e-4 for 8-12% less time (benchmarks/probe_precision.py, PROBES.md run (bl))
SEARCH_TOL_FACTOR = 0.3
#: the final fit's float64 phase stops at this fraction of ``tol`` (as the torch path's polish)
POLISH = 0.1
#: curvature weights are floored at this fraction of the logistic loss's largest (1/4) in the
#: diagonal preconditioner and the gradient's scaling (as :data:`deepfeat.probes.objectives.FLOOR`)
FLOOR = 1e-2
#: conjugate gradients stop at this residual relative to the gradient, or once the residual's scaled
#: entries are all under ``ABSOLUTE_STOP`` x the tolerance (as :mod:`deepfeat.probes.newton`)
CG_REL = 1e-2
ABSOLUTE_STOP = 0.9
#: Newton steps at one C at most (besides the product budget of 4 x ``max_iter``)
MAX_NEWTON = 50
#: C x N is taken as at least this (the penalty's weight 1 / (C N) stays within float32; coefficients
#: are under about 1e-20 either way: C = 1e-4 with sample weights of 1e-50 on every row)
MIN_CN = 1e-20
#: directional-derivative evaluations of one line search at most
LINE_SEARCH_STEPS = 30
#: the whole set's column of a search stops at this multiple of the folds' tolerance: it only starts
#: the final fit, and held to the folds' it set the pace at large C (two classes x 1,200 x 192: a
#: second set of Hessians built at C = 100; PROBES.md run (bl))
WHOLE_LOOSER = 10.0
#: each C of the search starts from the previous C's solutions plus this multiple of their change
#: from the C before (where that lowers a column's objective; 0 switches it off). Two classes x 300
#: / 1,200 x 192: Newton steps 28 -> 18 and 29 -> 22, CG products 125 -> 72 and 164 -> 114 (0.5 and
#: 2 took more; PROBES.md run (bl))
PREDICT = 1.0
#: eigenvalues of the scatter matrix under this fraction of the largest are dropped (null directions
#: of the float32 features; the loss does not see them and the penalty keeps their weights at zero)
REL_RANK = 1e-6


def applies(loss: str, n_classes: int, multilabel: bool, dropout: float, device_type: str, shape) -> bool:
    """Whether a fit is solved here: logistic, two classes, single-label, no dropout, on the CPU, at
    most ``MAX_DIM`` dimensions and ``MAX_ENTRIES`` entries."""
    n, d = shape
    return (
        loss == "logistic"
        and n_classes == 2
        and not multilabel
        and dropout == 0
        and device_type == "cpu"
        and d <= MAX_DIM
        and n >= 2
        and n * (d + 1) <= MAX_ENTRIES
    )


@dataclass
class BinaryFit:
    """One fit: coefficients (r + 1,) on [Z 1] of a :class:`BinaryLogistic`; ``n_iter`` Newton steps."""

    C: float
    w: np.ndarray
    n_iter: int = 0
    grad_max: float = 0.0
    converged: bool = True


class BinaryLogistic:
    """A prepared two-class logistic problem: [Z 1] of the centred, rotated features, float32."""

    def __init__(self, X: np.ndarray, codes: np.ndarray, weights: np.ndarray | None):
        """``X`` (n, d) float32, ``codes`` (n,) in {0, 1}, ``weights`` (n, 1) entry weights or None."""
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        self.mean = X.mean(0, dtype=np.float64)
        Xc = X - self.mean.astype(np.float32)
        values, vectors = np.linalg.eigh(Xc.T @ Xc)
        keep = values > REL_RANK * max(float(values[-1]), np.finfo(np.float32).tiny)
        self.V = np.ascontiguousarray(vectors[:, keep][:, ::-1])
        r = self.V.shape[1]
        self.Za = np.empty((n, r + 1), dtype=np.float32)
        np.matmul(Xc, self.V, out=self.Za[:, :r])
        self.Za[:, r] = 1.0
        self.Z2a = self.Za * self.Za
        self.t = np.asarray(codes, dtype=np.float32)
        # weights rescaled by the geometric midpoint of their positive range, C by the same factor (the
        # same minimiser): weights of 1e6 or 1e-50, or from 1e-25 to 1e23, stay in float32's range
        self.weight, self.c_scale = None, 1.0
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64).reshape(n)
            if (w > 0).any():
                self.c_scale = float(np.sqrt(w[w > 0].min()) * np.sqrt(w.max()))
            self.weight = (w / self.c_scale).astype(np.float32)
        self.N = float(n)
        self._za64: np.ndarray | None = None
        self._whole: dict = {}  # C -> (the whole set's coefficients (1, r + 1), its inverse Hessian)

    # -- the C path -------------------------------------------------------------------------------
    def folds_path(
        self, trains: Sequence[np.ndarray], Cs: Sequence[float], tol: float, max_iter: int, whole: bool = True
    ) -> Iterator[list[BinaryFit]]:
        """For each C of the increasing ``Cs``: one fit per training row set of ``trains``, all solved
        together, each C from the previous one's solutions, to ``SEARCH_TOL_FACTOR`` x ``tol``. With
        ``whole``, every row is one more set, solved alongside (a product reads [Z 1] once for all
        columns) and kept for :meth:`final_fit`, which then starts at its own solution."""
        M = self._membership([*trains, np.arange(len(self.t))] if whole else trains)
        W, free = self._start(M)
        state = _Preconditioner()
        self._whole = {}
        previous = logits = None
        for C in Cs:
            c = C * self.c_scale  # the C of the rescaled weights
            start = W
            if PREDICT and previous is not None:
                guess = W + PREDICT * (W - previous)
                start, logits = _predicted(self.Za, self.t, M, self.N, W, logits, guess, c)
            previous = W
            goal = np.full(M.shape[1], SEARCH_TOL_FACTOR * tol)
            if whole:  # only the final fit's start: a looser stop, so it does not set the pace
                goal[-1] *= WHOLE_LOOSER
            W, logits, steps, products, grad = _newton(
                self.Za, self.Z2a, self.t, M, self.N, start, free, c, goal, max_iter, state, logits
            )
            if whole:
                inverse = None if state.inverse is None or not state.hessian else state.inverse[-1:]
                self._whole[C] = (W[-1:].copy(), inverse)
            state.after(products, steps)
            yield [BinaryFit(C, W[f].copy(), steps, grad[f], grad[f] <= tol) for f in range(len(trains))]

    def decision(self, fit: BinaryFit, rows: np.ndarray) -> np.ndarray:
        """Decision values (rows,) of a fit on rows of the prepared data."""
        return self.Za[rows] @ fit.w

    def final_fit(self, C: float, inits: Sequence[BinaryFit] | None, tol: float, max_iter: int) -> BinaryFit:
        """The fit on every row at ``C``: from the whole set's solution of the last search at C, else
        the mean of ``inits`` (fits at C), else the intercept-only point along C / 1000, C / 100, C / 10
        for C > 1; float64, to ``POLISH`` x ``tol``."""
        n = len(self.t)
        M = self._membership([np.arange(n)])
        W, free = self._start(M)
        steps, inverse = 0, None
        if C in self._whole:
            W, inverse = self._whole[C]
        elif inits:
            W = np.mean([f.w for f in inits], axis=0, dtype=np.float64)[None].astype(np.float32)
        elif C * self.c_scale > 1:  # a cold start at a large (rescaled) C: along a short path
            path = [C / 1000, C / 100, C / 10]
            for fits in self.folds_path([np.arange(n)], path, tol, max_iter, whole=False):
                W, steps = fits[0].w[None], steps + fits[0].n_iter
        if self._za64 is None:
            self._za64 = self.Za.astype(np.float64)
        Za, state = self._za64, _Preconditioner(hessian=inverse is not None)
        state.inverse = inverse
        W, _, more, _, grad = _newton(
            Za, Za * Za, self.t.astype(np.float64), M.astype(np.float64), self.N, W.astype(np.float64),
            free, C * self.c_scale, POLISH * tol, max_iter, state,
        )  # fmt: skip
        return BinaryFit(C, W[0].astype(np.float32), steps + more, float(grad[0]), bool(grad[0] <= tol))

    def coefficients(self, fit: BinaryFit) -> tuple[np.ndarray, np.ndarray]:
        """(coef (1, d), intercept (1,)) of a fit, in the features' own coordinates, float32."""
        w = fit.w.astype(np.float64)
        coef = self.V.astype(np.float64) @ w[:-1]
        intercept = w[-1] - self.mean @ coef
        return coef[None].astype(np.float32), np.array([intercept], dtype=np.float32)

    # -- helpers ----------------------------------------------------------------------------------
    def _membership(self, trains: Sequence[np.ndarray]) -> np.ndarray:
        """(n, F) float32: each row set's rows, times the entry weights."""
        M = np.zeros((len(self.t), len(trains)), dtype=np.float32)
        for f, rows in enumerate(trains):
            M[np.asarray(rows), f] = 1.0
        if self.weight is not None:
            M *= self.weight[:, None]
        return M

    def _start(self, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Zero weights with each column's intercept-only optimum (log odds of its counted entries),
        and which columns are free: a column whose counted entries hold one class only stays there
        (its optimum is at infinity), as the torch path holds it."""
        total = M.sum(0, dtype=np.float64)
        positive = (M * self.t[:, None]).sum(0, dtype=np.float64)
        free = (positive > 0) & (positive < total)
        p = np.clip(positive / np.maximum(total, 1e-12), 1e-4, 1 - 1e-4)
        W = np.zeros((M.shape[1], self.Za.shape[1]), dtype=np.float32)
        W[:, -1] = np.log(p / (1 - p))
        return W, free


class _Preconditioner:
    """Which preconditioner the Newton steps use, and the kept inverse Hessians."""

    def __init__(self, hessian: bool = False):
        self.hessian = hessian
        self.inverse: np.ndarray | None = None

    def after(self, products: int, steps: int) -> None:
        """After one C: many products per step switch to (or refresh) the exact Hessians."""
        if products > HESSIAN_SWITCH * max(1, steps):
            if self.hessian:
                self.inverse = None
            self.hessian = True


def _newton(Za, Z2a, t, M, N, W, free, C, tol, max_iter, state: _Preconditioner, logits=None):
    """Newton-CG on every column of W (F, r + 1) at one C to ``tol`` (a number, or one per column);
    returns (W, the logits [Z 1] W^T, Newton steps, CG products, scaled gradient max per column).
    Columns not ``free`` stay where they are; ``logits``: W's where the caller has them."""
    dtype = Za.dtype
    F, r1 = W.shape
    ridge = np.full(r1, 1.0 / max(C * N, MIN_CN), dtype=dtype)
    ridge[-1] = 0.0
    floor = (FLOOR * 0.25) * M
    keep = free.astype(dtype)[:, None]
    tiny = np.finfo(dtype).tiny
    logits = Za @ W.T if logits is None else logits
    steps = products = 0
    gmax = np.zeros(F)
    for step in range(MAX_NEWTON + 1):
        s = expit(logits)
        G = (s - t[:, None]) * M
        h = s * (1 - s) * M
        grad = ((G.T @ Za) / N + W * ridge) * keep
        diag = (np.maximum(h, floor).T @ Z2a) / N + ridge
        isd = 1.0 / np.sqrt(diag)
        gmax = np.abs(grad * isd).max(1)
        if (gmax <= tol).all() or step == MAX_NEWTON or products >= 4 * max_iter:
            break
        if state.hessian and state.inverse is None:
            state.inverse = _inverse_hessians(Za, h, N, ridge)
            state.hessian = state.inverse is not None
        inverse = state.inverse if state.hessian else None

        d = np.zeros_like(grad)
        res = -grad
        z = _precondition(res, diag, inverse) * keep
        p = z
        rz = (res * z).sum(1)
        stop = CG_REL**2 * (grad * grad).sum(1)
        for _ in range(200):
            Hp = (((Za @ p.T) * h).T @ Za) / N + p * ridge
            products += 1
            alpha = rz / np.maximum((p * Hp).sum(1), tiny)
            d += alpha[:, None] * p
            res -= alpha[:, None] * Hp
            if ((res * res).sum(1) <= stop).all() or (np.abs(res * isd).max(1) <= ABSOLUTE_STOP * tol).all():
                break
            z = _precondition(res, diag, inverse) * keep
            rz_new = (res * z).sum(1)
            p = z + (rz_new / np.maximum(rz, tiny))[:, None] * p
            rz = rz_new
        step_len, Zd = _step_lengths(logits, Za, t, M, N, W, d, ridge, (grad * d).sum(1))
        W = W + step_len[:, None] * d
        logits = logits + step_len * Zd
        steps += 1
    return W, logits, steps, products, gmax


def _objective(logits, t, M, N, W, C) -> np.ndarray:
    """Each column's objective value (F,) at W, whose logits [Z 1] W^T are given."""
    loss = ((np.logaddexp(0, logits) - t[:, None] * logits) * M).sum(0, dtype=np.float64) / N
    return loss + 0.5 / (C * N) * (W[:, :-1].astype(np.float64) ** 2).sum(1)


def _predicted(Za, t, M, N, W, logits, guess, C) -> tuple[np.ndarray, np.ndarray]:
    """Per column, ``guess`` where its objective at C is below W's, else W; and their logits (those
    of W given)."""
    guessed = Za @ guess.T
    better = _objective(guessed, t, M, N, guess, C) < _objective(logits, t, M, N, W, C)
    return np.where(better[:, None], guess, W), np.where(better, guessed, logits)


def _precondition(v: np.ndarray, diag: np.ndarray, inverse: np.ndarray | None) -> np.ndarray:
    """The preconditioner applied to residuals v (F, r + 1): the inverse Hessians, else the diagonal."""
    if inverse is None:
        return v / diag
    out = np.matmul(inverse, v.astype(np.float64, copy=False)[:, :, None])[:, :, 0]
    return out.astype(v.dtype, copy=False)


def _inverse_hessians(Za, h, N, ridge) -> np.ndarray | None:
    """(F, r + 1, r + 1) inverses of each column's Hessian [Z 1]^T diag(h_f) [Z 1] / N + ridge, float64
    (ill-conditioned at large C: a float32 inverse preconditions poorly); None where one is not
    numerically positive definite (the diagonal serves then). The Hessians are symmetric rank-n
    updates (half a general product's work); the inverses come from torch's Cholesky factor on one
    thread (NumPy's LU-based inverse takes twice as long, and SciPy's LAPACK runs in another BLAS
    whose threads fight NumPy's: PROBES.md run (bl))."""
    root = np.sqrt(h)
    H = np.empty((h.shape[1], Za.shape[1], Za.shape[1]), dtype=np.float64)
    for f in range(h.shape[1]):
        rows = np.flatnonzero(root[:, f])  # a fold's rows (and not those whose curvature underflowed)
        B = (Za * root[:, f : f + 1]) if len(rows) > 0.9 * len(Za) else Za[rows] * root[rows, f : f + 1]
        H[f] = B.T @ B
    H /= N
    idx = np.arange(H.shape[1])
    H[:, idx, idx] += ridge
    with thread_budget(0), torch.inference_mode():  # one torch thread beside NumPy's
        L, info = torch.linalg.cholesky_ex(torch.from_numpy(H))
        if bool(info.any()):
            return None
        inverse = torch.cholesky_inverse(L).numpy()
    return inverse if np.isfinite(inverse).all() else None


def _step_lengths(logits, Za, t, M, N, W, d, ridge, slope0):
    """Per column, 1 where the objective still falls at the full Newton step, else a root of the
    directional derivative in (0, 1) by the Illinois variant of regula falsi (at most
    ``LINE_SEARCH_STEPS`` evaluations; a column left unsettled takes the bracket's descending end,
    where the objective has fallen); and Z d."""
    Zd = Za @ d.T
    wd, dd = (W * ridge * d).sum(1), (d * ridge * d).sum(1)

    def slope(step):
        s = expit(logits + step * Zd)
        return ((s - t[:, None]) * M * Zd).sum(0) / N + wd + step * dd

    hi = np.ones(len(W), dtype=logits.dtype)
    s_hi = slope(hi)
    open_ = s_hi > 0
    if not open_.any():
        return hi, Zd
    step = hi.copy()
    lo, s_lo = np.zeros_like(hi), slope0.astype(logits.dtype)
    side = np.zeros(len(W), dtype=np.int8)  # the bracket end moved last: -1 lo, +1 hi
    for _ in range(LINE_SEARCH_STEPS):
        trial = lo - s_lo * (hi - lo) / np.where(open_, s_hi - s_lo, 1)
        s_trial = slope(np.where(open_, trial, step))
        settled = open_ & (np.abs(s_trial) <= 1e-3 * np.abs(slope0))
        step = np.where(settled, trial, step)
        open_ &= ~settled
        if not open_.any():
            return step, Zd
        down, up = open_ & (s_trial < 0), open_ & ~(s_trial < 0)
        # Illinois: an end kept twice in a row has its slope halved, so the bracket closes from both sides
        s_hi = np.where(down & (side == -1), 0.5 * s_hi, s_hi)
        s_lo = np.where(up & (side == 1), 0.5 * s_lo, s_lo)
        lo, s_lo = np.where(down, trial, lo), np.where(down, s_trial, s_lo)
        hi, s_hi = np.where(up, trial, hi), np.where(up, s_trial, s_hi)
        side = np.where(down, -1, np.where(up, 1, side)).astype(np.int8)
    return np.where(open_, lo, step), Zd
