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
