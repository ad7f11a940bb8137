"""The batched compact L-BFGS: independent problems, their own stopping, fixed problems untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.probes.lbfgs import minimize


def quadratics(B=4, p=20, cond=1e2, seed=0):
    """B quadratics 1/2 (x - c)^T A (x - c) with condition numbers up to ``cond``."""
    rng = np.random.default_rng(seed)
    As, cs = [], []
    for _ in range(B):
        Q, _ = np.linalg.qr(rng.normal(size=(p, p)))
        As.append(Q @ np.diag(np.logspace(0, np.log10(cond), p)) @ Q.T)
        cs.append(rng.normal(size=p))
    return torch.as_tensor(np.array(As)), torch.as_tensor(np.array(cs))


@pytest.mark.parametrize("memory", [5, 10])
def test_quadratics_reach_their_minimisers(memory):
    A, c = quadratics()
    calls = []

    def fun(x, rows):
        rows = torch.arange(len(A)) if rows is None else rows
        calls.append(len(rows))
        diff = x - c[rows]
        g = torch.einsum("bij,bj->bi", A[rows], diff)
        return 0.5 * (diff * g).sum(1), g

    res = minimize(fun, torch.zeros_like(c), torch.ones_like(c), tol=1e-9, max_iter=2000, memory=memory)
    assert bool(res.converged.all())
    torch.testing.assert_close(res.x, c, atol=1e-7, rtol=0)
    assert float(res.grad_max.max()) <= 1e-9
    assert res.n_eval == sum(1 for _ in calls)
    assert min(calls) < len(A)  # converged problems drop out of the evaluations


def test_scaling_and_fixed_problems():
    """A diagonal scale that matches the curvature makes the unit step exact; fixed rows stay put."""
    d = torch.logspace(-3, 3, 40, dtype=torch.float64).expand(3, 40)
    c = torch.randn(3, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def fun(x, rows):
        rows = torch.arange(3) if rows is None else rows
        g = d[rows] * (x - c[rows])
        return 0.5 * ((x - c[rows]) * g).sum(1), g

    x0 = torch.zeros_like(c)
    fixed = torch.tensor([False, True, False])
    res = minimize(fun, x0, d.sqrt(), tol=1e-10, max_iter=10, fixed=fixed)
    assert res.n_iter == 1
    torch.testing.assert_close(res.x[[0, 2]], c[[0, 2]])
    assert torch.equal(res.x[1], x0[1])
    assert bool(res.converged.all())


def test_already_converged_start_does_nothing():
    c = torch.ones(2, 3, dtype=torch.float64)

    def fun(x, rows):
        rows = torch.arange(2) if rows is None else rows
        return 0.5 * ((x - c[rows]) ** 2).sum(1), x - c[rows]

    res = minimize(fun, c.clone(), torch.ones_like(c), tol=1e-8, max_iter=5)
    assert res.n_iter == 0 and res.n_eval == 1
