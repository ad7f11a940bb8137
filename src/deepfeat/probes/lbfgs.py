"""Limited-memory BFGS for a batch of independent smooth convex problems, written for few, large tensor
operations.

``B`` problems of ``p`` unknowns each are minimised together: one call of the objective evaluates
all of them (for the probes, one matrix product gives every class's scores), while steps, curvature
pairs and stopping are per problem. The inverse-Hessian product uses the compact representation of
Byrd, Nocedal and Schnabel (1994) with a ring buffer of the last ``memory`` pairs, so an iteration
costs two passes over the stored pairs and a few ``memory x memory`` triangular solves, instead of the
two-loop recursion's ``4 memory`` small vector operations: on shared cores every small parallel
operation pays a thread hand-over, and the two-loop recursion made those hand-overs dominate.

Iterates live in scaled coordinates ``v = x * scale`` (``scale`` per unknown, e.g. the square root of
a diagonal curvature estimate), which makes the unit step a good first trial. Steps are accepted on
the directional derivative (robust to float32 round-off in objective values) together with a
sufficient decrease that tolerates that round-off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: sufficient decrease (Armijo) and curvature (derivative) constants of the line search
ARMIJO, WOLFE = 1e-4, 0.9
#: relative round-off allowed in objective values when checking decrease
F_NOISE = 1e-6


@dataclass
class Result:
    """Where the minimisation ended, per problem."""

    x: torch.Tensor  # (B, p)
    f: torch.Tensor  # (B,) float64 objective values
    g: torch.Tensor  # (B, p) gradient at x (original coordinates)
    grad_max: torch.Tensor  # (B,) max |gradient| in scaled coordinates
    converged: torch.Tensor  # (B,) bool: grad_max <= tol
    n_iter: int  # iterations of the slowest problem
    n_eval: int  # objective evaluations (of any subset of the problems)


Objective = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


def _two_by_two(R: torch.Tensor, D: torch.Tensor, YY: torch.Tensor, gamma, a, c):
    """Coefficients (u, w) of H g = gamma g + S^T u + gamma Y^T w, compact form (all float64)."""
    q = torch.linalg.solve_triangular(R, a.unsqueeze(-1), upper=True).squeeze(-1)  # R^-1 a
    inner = torch.diag_embed(D) @ q.unsqueeze(-1) + gamma[:, None, None] * (YY @ q.unsqueeze(-1))
    rhs = inner.squeeze(-1) - gamma[:, None] * c
    u = torch.linalg.solve_triangular(R.transpose(1, 2), rhs.unsqueeze(-1), upper=False).squeeze(-1)
    return u, -q


class _Memory:
    """Ring buffer of curvature pairs for B problems; invalid or empty slots act as absent."""

    def __init__(self, B: int, p: int, m: int, like: torch.Tensor):
        self.m = m
        self.buf = like.new_zeros(B, 2 * m, p)  # rows 0..m-1: s, rows m..2m-1: y
        self.SY = torch.zeros(B, m, m, dtype=torch.float64, device=like.device)  # s_i . y_j
        self.YY = torch.zeros(B, m, m, dtype=torch.float64, device=like.device)
        self.valid = torch.zeros(B, m, dtype=torch.bool, device=like.device)
        self.gamma = torch.ones(B, dtype=torch.float64, device=like.device)
        self.order: list[int] = []  # slots, oldest first

    def products(self, vectors: torch.Tensor) -> torch.Tensor:
        """(B, 2m, k) dot products of every stored s and y with each of k vectors (B, k, p)."""
        return torch.bmm(self.buf, vectors.transpose(1, 2)).double()

    def direction(self, gv: torch.Tensor, ac: torch.Tensor) -> torch.Tensor:
        """-H gv, given ac = (S gv, Y gv) stacked (B, 2m)."""
        if not self.order:
            return -gv
        idx = torch.tensor(self.order, device=gv.device)
        m = len(self.order)
        SY = self.SY[:, idx][:, :, idx]
        YY = self.YY[:, idx][:, :, idx]
        valid = self.valid[:, idx]
        eye = torch.eye(m, dtype=torch.float64, device=gv.device).expand_as(SY)
        R = torch.where(valid[:, :, None] & valid[:, None, :], torch.triu(SY), 0.0)
        R = torch.where(valid[:, :, None], R, eye)  # absent pair: identity row, zero vectors
        D = torch.where(valid, torch.diagonal(SY, dim1=1, dim2=2), 1.0)
        YY = torch.where(valid[:, :, None] & valid[:, None, :], YY, 0.0)
        a = torch.where(valid, ac[:, : self.m][:, idx], 0.0)
        c = torch.where(valid, ac[:, self.m :][:, idx], 0.0)
        u, w = _two_by_two(R, D, YY, self.gamma, a, c)
        coeff = torch.zeros(gv.shape[0], 2 * self.m, dtype=torch.float64, device=gv.device)
        coeff[:, idx] = u
        coeff[:, self.m + idx] = self.gamma[:, None] * w
        Hg = torch.bmm(coeff.to(gv.dtype).unsqueeze(1), self.buf).squeeze(1)
        return -(self.gamma.to(gv.dtype)[:, None] * gv + Hg)

    def push(self, s: torch.Tensor, y: torch.Tensor, prods_s: torch.Tensor, prods_y: torch.Tensor):
        """Store the pair (s, y) (B, p) where it has positive curvature; ``prods_*``: (B, 2m) products
        of the stored vectors with s and with y, taken before this push."""
        sy = (s * y).sum(1).double()
        yy = (y * y).sum(1).double()
        ok = sy > 1e-10 * yy.clamp_min(1e-300)
        slot = len(self.order) if len(self.order) < self.m else self.order[0]
        if len(self.order) == self.m:
            self.order.pop(0)
        self.order.append(slot)
        keep = ok[:, None].to(s.dtype)
        self.buf[:, slot] = s * keep
        self.buf[:, self.m + slot] = y * keep
        others = torch.tensor([j for j in self.order if j != slot], dtype=torch.long, device=s.device)
        self.valid[:, slot] = ok
        okd = ok.double()
        if len(others):
            # s_i . y_new (column), s_new . y_j (row), y_j . y_new
            self.SY[:, others, slot] = prods_y[:, others] * okd[:, None]
            self.SY[:, slot, others] = prods_s[:, self.m + others] * okd[:, None]
            self.YY[:, others, slot] = prods_y[:, self.m + others] * okd[:, None]
            self.YY[:, slot, others] = self.YY[:, others, slot]
        self.SY[:, slot, slot] = sy * okd
        self.YY[:, slot, slot] = yy * okd
        self.gamma = torch.where(ok, sy / yy.clamp_min(1e-300), self.gamma)


def minimize(
    fun: Objective,
    x0: torch.Tensor,
    scale: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    memory: int = 10,
    max_trials: int = 20,
    fixed: torch.Tensor | None = None,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Result:
    """Minimise B independent problems ``fun`` from ``x0`` (B, p).

    ``fun(x, rows)`` returns the objective values (len(rows),) in float64 and gradients (len(rows), p)
    of the problems ``rows`` (a LongTensor; None: all) at their points ``x`` (len(rows), p).
    ``scale`` (B, p) defines the scaled coordinates; a problem stops when the largest entry of its
    scaled gradient ``g / scale`` is at most ``tol``, or when no step decreases it any more.
    ``fixed`` (B,) marks problems left where they are; ``start``: (f, g) at ``x0`` if already known.
    """
    B, p = x0.shape
    x = x0.clone()
    f, g = fun(x, None) if start is None else start
    n_eval, n_iter = (1 if start is None else 0), 0
    mem = _Memory(B, p, memory, x)
    gv = g / scale
    gmax = gv.abs().amax(1)
    if fixed is not None:
        gmax = torch.where(fixed, torch.zeros_like(gmax), gmax)
    active = gmax > tol
    ac = torch.zeros(B, 2 * memory, dtype=torch.float64, device=x.device)
    while bool(active.any()) and n_iter < max_iter:
        n_iter += 1
        d = mem.direction(gv, ac)
        slope = (gv * d).sum(1).double()
        bad = slope >= 0  # not a descent direction: restart that problem from steepest descent
        if bool(bad.any()):
            d = torch.where(bad[:, None], -gv, d)
            slope = torch.where(bad, -(gv * gv).sum(1).double(), slope)
        t = torch.ones(B, dtype=torch.float64, device=x.device)
        pending = active.clone()
        x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
        for _ in range(max_trials):
            rows = torch.nonzero(pending).squeeze(1)
            if rows.numel() == 0:
                break
            xt = x[rows] + (t[rows, None].to(x.dtype) * d[rows]) / scale[rows]
            ft, gt = fun(xt, rows)
            n_eval += 1
            dt = ((gt / scale[rows]) * d[rows]).sum(1).double()
            s0 = slope[rows]
            decrease = ft <= f[rows] + ARMIJO * t[rows] * s0 + F_NOISE * f[rows].abs()
            accept = decrease & (dt <= WOLFE * s0.abs())
            x_new[rows[accept]], f_new[rows[accept]], g_new[rows[accept]] = xt[accept], ft[accept], gt[accept]
            pending[rows[accept]] = False
            # shrink the others: secant step when past the minimum along d, else halve
            frac = torch.where(dt > 0, (-s0 / (dt - s0)).clamp(0.1, 0.9), torch.full_like(s0, 0.5))
            t[rows[~accept]] *= frac[~accept]
        stalled = pending  # no acceptable step within max_trials: as far as round-off allows
        moved = active & ~stalled
        s = (x_new - x) * scale
        gv_new = g_new / scale
        y = gv_new - gv
        prods = mem.products(torch.stack([s, gv_new], 1))  # (B, 2m, 2)
        prods_s, prods_gnew = prods[..., 0], prods[..., 1]
        prods_y = prods_gnew - ac  # stored . (g_new - g) = stored . g_new - stored . g
        moved_f = moved[:, None].to(s.dtype)
        mem.push(s * moved_f, y * moved_f, prods_s, prods_y)
        x, f, g, gv = x_new, f_new, g_new, gv_new
        # (S gv, Y gv) for the next direction, with the new pair in its slot
        slot = mem.order[-1]
        ac = prods_gnew.clone()
        ac[:, slot] = (mem.buf[:, slot] * gv).sum(1).double()
        ac[:, memory + slot] = (mem.buf[:, memory + slot] * gv).sum(1).double()
        gmax = gv.abs().amax(1)
        if fixed is not None:
            gmax = torch.where(fixed, torch.zeros_like(gmax), gmax)
        active = active & ~stalled & (gmax > tol)
    return Result(x, f, g, gmax, gmax <= tol, n_iter, n_eval)
