"""The solver's exact reparametrisations and the C path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.probes.objectives import make_problem
from deepfeat.probes.solver import Basis, solve, solve_path


def features(n, d, seed=0, offset=20.0):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(np.maximum(rng.normal(size=(n, d)), 0) + offset, dtype=torch.float64)


@pytest.mark.parametrize(("n", "d"), [(50, 8), (8, 50)])
def test_basis_is_an_exact_reparametrisation(n, d):
    X = features(n, d)
    basis = Basis.of(X)
    r = min(n - 1, d)  # centring removes one direction when n <= d
    assert basis.B.shape == (d, r)
    torch.testing.assert_close(basis.B.t() @ basis.B, torch.eye(r, dtype=X.dtype), atol=1e-10, rtol=0)
    W = torch.randn(3, r, dtype=X.dtype)
    b = torch.randn(3, dtype=X.dtype)
    coef, intercept = basis.to_coef(W, b)
    # same scores on the raw rows, same penalty
    torch.testing.assert_close(X @ coef.t() + intercept, basis.project(X) @ W.t() + b)
    assert float((coef**2).sum()) == pytest.approx(float((W**2).sum()), rel=1e-10)
    # every row lies in the span: projecting back reproduces the centred rows
    Xc = X - X.mean(0)
    torch.testing.assert_close(basis.project(X) @ basis.B.t(), Xc, atol=1e-9, rtol=0)


@pytest.mark.parametrize("loss", ["multinomial", "logistic", "squared_hinge"])
def test_path_solutions_equal_cold_solves(loss):
    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.normal(size=(120, 10)))
    codes = rng.integers(0, 3, 120)
    X = X + torch.as_tensor(np.eye(3)[codes] @ rng.normal(size=(3, 10)))
    basis = Basis.of(X.float())
    Z = basis.project(X.float())
    problem = make_problem(
        Z, codes, None, 3, "logistic" if loss == "logistic" else loss, loss == "multinomial"
    )
    Cs = [0.01, 0.1, 1.0, 10.0]
    path = list(solve_path(problem, Cs, tol=1e-6))
    for C, sol in zip(Cs, path):
        cold = solve(problem, C, tol=1e-6, polish=True)
        f_path = problem.to(torch.float64).evaluate(sol.W.double(), sol.b.double(), C)[0].sum()
        f_cold = problem.to(torch.float64).evaluate(cold.W.double(), cold.b.double(), C)[0].sum()
        assert float(f_path) <= float(f_cold) * (1 + 1e-5) + 1e-9
        assert sol.n_iter < 300


def test_polish_tightens_the_optimum():
    rng = np.random.default_rng(4)
    X = torch.as_tensor(rng.normal(size=(200, 15)), dtype=torch.float32)
    codes = rng.integers(0, 4, 200)
    problem = make_problem(Basis.of(X).project(X), codes, None, 4, "multinomial", True)
    rough = solve(problem, 10.0, tol=1e-3)
    fine = solve(problem, 10.0, tol=1e-3, polish=True)
    p64 = problem.to(torch.float64)
    f_rough = float(p64.evaluate(rough.W.double(), rough.b.double(), 10.0)[0].sum())
    f_fine = float(p64.evaluate(fine.W.double(), fine.b.double(), 10.0)[0].sum())
    assert f_fine <= f_rough
    assert fine.grad_max <= 1e-4 and fine.converged
