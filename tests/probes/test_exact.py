"""Exact Newton (deepfeat.probes.exact): dual steps through the margin violators and the C path's tangent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.probes.exact import Factors, _dual_steps, _factor, newton_exact
from deepfeat.probes.objectives import make_problem


def test_dual_steps_equal_the_primal_newton_steps():
    """Through the margin violators' Gram matrix (m <= r rows), the squared-hinge Newton direction
    equals the one from each output's full (r + 1)^2 Hessian, with entry weights (an ignored entry),
    an output without violators and padding to the largest violator count."""
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


def test_the_path_tangent_is_the_optimum_s_derivative_in_log_C():
    """Factors.tangent from exact Newton's last Hessian factor against central differences of
    optima solved to round-off at C e^(+-eps) (two outputs, one of them with an ignored entry)."""
    rng = np.random.default_rng(5)
    n, r, C, eps = 80, 6, 2.0, 1e-3
    Z = torch.as_tensor(rng.normal(size=(n, r)), dtype=torch.float64)
    Y = (rng.random((n, 2)) < 0.4).astype(np.int64)
    Y[:5, 1] = 1 - Y[:5, 0]  # the outputs differ
    ignore = np.zeros((n, 2), dtype=bool)
    ignore[3, 1] = True
    problem = make_problem(Z, Y, ~ignore, 2, "logistic", False)
    W0, b0 = torch.zeros(2, r, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)

    def optimum(c, factors=None):
        W, b, _, grad = newton_exact(problem, c, W0, b0, 1e-13, 100, factors=factors)
        assert grad < 1e-6  # the Hessians are float32: round-off stops it near 1e-8
        return W, b

    factors = Factors()
    W, _ = optimum(C, factors)
    assert factors.parts
    dW, db, have = factors.tangent(problem, C, W)
    assert bool(have.all())
    (Wp, bp), (Wm, bm) = optimum(C * np.exp(eps)), optimum(C * np.exp(-eps))
    torch.testing.assert_close(dW, (Wp - Wm) / (2 * eps), rtol=2e-3, atol=1e-6)
    torch.testing.assert_close(db, (bp - bm) / (2 * eps), rtol=2e-3, atol=1e-6)
    assert not bool((dW == 0).all())
    assert Factors().tangent(problem, C, W) is None  # no factor, no tangent


def test_factors_hold_only_the_parts_a_tangent_still_needs():
    """A step that factors every output of an earlier step replaces it; a part whose outputs are
    still the latest for some of them stays (memory stays bounded over many Newton steps)."""
    factors = Factors()
    L = [torch.full((k, 2, 2), float(i)) for i, k in enumerate((3, 2, 2, 1))]
    factors.store([0, 1, 2], L[0])
    factors.store([0, 2], L[1])
    factors.store([0, 2], L[2])
    factors.store([2], L[3])
    assert [outputs for outputs, _ in factors.parts] == [[0, 1, 2], [0, 2], [2]]
    assert factors.parts[1][1] is L[2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factor_adds_a_ridge_only_where_round_off_left_a_system_indefinite(dtype):
    """A batch of one positive-definite system and one with a slightly negative eigenvalue (round-off
    of a singular one): the first keeps its exact factor, the second factors with a ridge far below
    its scale; a clearly indefinite system still fails with torch's error."""
    rng = np.random.default_rng(5)
    Q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    good = Q @ np.diag([4.0, 3.0, 2.0, 1.5, 1.0, 0.5]) @ Q.T
    bad = Q @ np.diag([4.0, 3.0, 2.0, 1.5, 1.0, -1e-3 * float(torch.finfo(dtype).eps) ** 0.5]) @ Q.T
    M = torch.as_tensor(np.stack([good, bad]), dtype=dtype)
    assert int(torch.linalg.cholesky_ex(M).info[1]) > 0
    L = _factor(M)
    torch.testing.assert_close(L[0], torch.linalg.cholesky(M[0]))
    assert bool(torch.isfinite(L).all())
    torch.testing.assert_close(L[1] @ L[1].T, M[1], rtol=0, atol=1e-4 if dtype == torch.float32 else 1e-8)
    with pytest.raises(torch.linalg.LinAlgError):
        _factor(-torch.eye(3, dtype=dtype)[None])
