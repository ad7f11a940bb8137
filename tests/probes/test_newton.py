"""The Newton methods' shared line search (deepfeat.probes.newton)."""

from __future__ import annotations

import numpy as np
import torch

from deepfeat.probes.newton import line_search
from deepfeat.probes.objectives import make_problem


def test_line_search_reaches_the_minimum_along_an_overshooting_direction():
    """A direction 100x too long for a squared hinge (its first trial passes many margin kinks):
    the step taken gets nearly all of the decrease available along the line. Accepting any point
    where the objective still falls stopped at 1% of the direction with a fifth of the decrease."""
    Z = torch.tensor([[1.0], [-1.0], [0.1]] + [[-1.0]] * 20, dtype=torch.float64)
    problem = make_problem(Z, np.array([1, 0, 1] + [0] * 20), None, 1, "squared_hinge", False)
    C = 1.0
    W, b = torch.tensor([[2.0]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    _, gW, gb, _ = problem.evaluate(W, b, C)
    grad = torch.cat([gW, gb[:, None]], 1)
    d = -100 * grad
    start = float(problem.evaluate(W, b, C)[0])
    ts = torch.linspace(0, 1, 20001, dtype=torch.float64)
    best = min(float(problem.evaluate(W + t * d[:, :1], b + t * d[:, 1], C)[0]) for t in ts)
    W_new, b_new, new = line_search(problem, C, W, b, grad, d, lambda x: x.sum(1), lambda v: v[:, None])
    assert float(new[0]) <= start - 0.95 * (start - best)
    torch.testing.assert_close(new[0], problem.evaluate(W_new, b_new, C)[0])


def test_dual_steps_equal_the_primal_newton_steps():
    """Through the margin violators' Gram matrix (m <= r rows), the squared-hinge Newton direction
    equals the one from each output's full (r + 1)^2 Hessian, with entry weights (an ignored entry),
    an output without violators and padding to the largest violator count."""
    from deepfeat.probes.newton import _dual_steps

    rng = np.random.default_rng(3)
    n, r, K, C = 60, 40, 4, 3.0
    Z = torch.as_tensor(rng.normal(size=(n, r)), dtype=torch.float64)
    onehot = (rng.random((n, K)) < 0.3).astype(np.int64)
    mask = np.ones((n, K), dtype=bool)
    mask[5, 0] = False
    problem = make_problem(Z, onehot, mask, K, "squared_hinge", False)
    W = torch.as_tensor(rng.normal(size=(K, r)), dtype=torch.float64)
    b = torch.as_tensor(rng.normal(size=K), dtype=torch.float64)
    W[3], b[3] = 0.0, 50.0
    problem.T[:, 3] = 1.0  # every margin of output 3 is 50: no violators
    _, gW, gb, h = problem.evaluate(W, b, C)
    violators = (h > 0).sum(0)
    assert int(violators[3]) == 0 and int(violators.max()) <= r and len(set(violators.tolist())) > 2
    grad = torch.cat([gW, gb[:, None]], 1)
    Za = torch.cat([Z, torch.ones(n, 1, dtype=torch.float64)], 1)
    ridge = torch.full((r + 1,), 1.0 / (C * problem.N), dtype=torch.float64)
    ridge[-1] = 0.0
    d = _dual_steps(Z, torch.mm(Z, Z.t()), problem.T, h / 2, W, b, C)
    for k in range(3):
        H = (Za * (h[:, k] / problem.N)[:, None]).t() @ Za + torch.diag(ridge)
        torch.testing.assert_close(d[k], -torch.linalg.solve(H, grad[k]), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(d[3], torch.cat([-W[3], torch.zeros(1, dtype=torch.float64)]))


def test_dual_steps_share_the_systems_of_outputs_with_equal_weights():
    """At zero weights every row violates every output's margin: the outputs' systems are equal
    and factored once, and each output's direction still equals its primal Newton step (with one
    output of different weights among them)."""
    from deepfeat.probes.newton import _dual_steps

    rng = np.random.default_rng(5)
    n, r, K, C = 30, 40, 5, 0.7
    Z = torch.as_tensor(rng.normal(size=(n, r)), dtype=torch.float64)
    onehot = (rng.random((n, K)) < 0.4).astype(np.int64)
    mask = np.ones((n, K), dtype=bool)
    mask[:4, 2] = False  # output 2 sees fewer rows: a system of its own
    problem = make_problem(Z, onehot, mask, K, "squared_hinge", False)
    W = torch.zeros(K, r, dtype=torch.float64)
    b = torch.zeros(K, dtype=torch.float64)
    _, gW, gb, h = problem.evaluate(W, b, C)
    assert len(torch.unique(h.t(), dim=0)) == 2
    grad = torch.cat([gW, gb[:, None]], 1)
    Za = torch.cat([Z, torch.ones(n, 1, dtype=torch.float64)], 1)
    ridge = torch.full((r + 1,), 1.0 / (C * problem.N), dtype=torch.float64)
    ridge[-1] = 0.0
    d = _dual_steps(Z, torch.mm(Z, Z.t()), problem.T, h / 2, W, b, C)
    for k in range(K):
        H = (Za * (h[:, k] / problem.N)[:, None]).t() @ Za + torch.diag(ridge)
        torch.testing.assert_close(d[k], -torch.linalg.solve(H, grad[k]), rtol=1e-8, atol=1e-10)
