"""The Newton methods' shared line search (deepfeat.probes.newton)."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_forcing_term_loosens_far_from_the_optimum_and_tightens_near_it():
    from deepfeat.probes.newton import CG_REL, FORCING_MAX, _forcing

    first = torch.tensor([1.0, 1.0, 1.0])
    gg = torch.tensor([1.0, 1e-4, 1e-12])  # squared gradient norms: ratios 1, 1e-4, 1e-12
    assert _forcing(gg, first, False).tolist() == pytest.approx([CG_REL] * 3)
    assert _forcing(gg, first, True).tolist() == pytest.approx([FORCING_MAX, 0.1, CG_REL])


def test_multinomial_newton_with_forcing_reaches_the_same_optimum_with_fewer_products():
    """From a far start (zero weights, C = 1) the forcing term's loose early directions save Hessian
    products and reach the optimum the fixed residual reaches."""
    from deepfeat.probes.basis import Basis
    from deepfeat.probes.newton import newton_multinomial
    from deepfeat.probes.solver import initial_point

    rng = np.random.default_rng(5)
    codes = rng.integers(0, 6, 240)
    X = rng.normal(size=(240, 20)) + 1.5 * rng.normal(size=(6, 20))[codes]
    Xt = torch.as_tensor(X, dtype=torch.float64)
    problem = make_problem(Basis.of(Xt).project(Xt), codes, None, 6, "multinomial", True)
    W0, b0 = initial_point(problem)
    fixed = newton_multinomial(problem, 1.0, W0, b0, 1e-8, 300)
    forced = newton_multinomial(problem, 1.0, W0, b0, 1e-8, 300, forcing=True)
    assert fixed[3] <= 1e-8 and forced[3] <= 1e-8
    assert forced[2] < fixed[2]
    torch.testing.assert_close(forced[0], fixed[0], rtol=1e-5, atol=1e-7)
    # (the softmax leaves a constant shift of the intercepts free)
    torch.testing.assert_close(forced[1] - forced[1].mean(), fixed[1] - fixed[1].mean(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_newton_cg_takes_the_same_steps_on_z_with_its_intercept_column(monkeypatch, loss):
    """Hessian products on the copy [Z 1] (small problems) against those on Z with the intercept's
    column apart: the same products, so the same solution and the same number of them, for a loss
    whose products use every row (logistic) and one whose products use the violators only, with
    entry weights (three stacked outputs)."""
    from deepfeat.probes import newton
    from deepfeat.probes.solver import initial_point

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 3, 150)
    X = rng.normal(size=(150, 12)) + 1.5 * rng.normal(size=(3, 12))[codes]
    Z = torch.as_tensor(X, dtype=torch.float64)
    problem = make_problem(Z, codes, None, 3, loss, False)
    problem.weight = torch.as_tensor(rng.uniform(0.5, 1.5, size=(150, 3)), dtype=torch.float64)
    W0, b0 = initial_point(problem)
    runs = {}
    for entries in (0, 10**6):
        monkeypatch.setattr(newton, "AUGMENTED_ENTRIES", entries)
        runs[entries] = newton.newton_cg(problem, 10.0, W0, b0, 1e-9, 300)
    apart, augmented = runs[0], runs[10**6]
    assert apart[3] <= 1e-9 and augmented[3] <= 1e-9
    assert abs(apart[2] - augmented[2]) <= 1
    torch.testing.assert_close(augmented[0], apart[0], rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(augmented[1], apart[1], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("loss", ["multinomial", "logistic", "squared_hinge"])
def test_conjugate_gradients_stop_once_the_residual_is_within_the_tolerance(monkeypatch, loss):
    """The absolute stop (the residual, the model's gradient after the step, within the tolerance)
    saves Hessian products of the last Newton steps; the solution still meets the tolerance on
    its gradient and agrees with the one conjugate gradients solved to their relative residual."""
    from deepfeat.probes import newton
    from deepfeat.probes.basis import Basis
    from deepfeat.probes.solver import initial_point

    rng = np.random.default_rng(7)
    codes = rng.integers(0, 4, 300)
    X = rng.normal(size=(300, 40)) + 0.5 * rng.normal(size=(4, 40))[codes]
    Xt = torch.as_tensor(X, dtype=torch.float64)
    multinomial = loss == "multinomial"
    problem = make_problem(Basis.of(Xt).project(Xt), codes, None, 4, loss, multinomial)
    W0, b0 = initial_point(problem)
    tol, runs = 1e-7, {}
    for stop in (0.0, newton.ABSOLUTE_STOP):
        monkeypatch.setattr(newton, "ABSOLUTE_STOP", stop)
        if multinomial:
            runs[stop] = newton.newton_multinomial(problem, 1.0, W0, b0, tol, 300, forcing=True)
        else:
            runs[stop] = newton.newton_cg(problem, 1.0, W0, b0, tol, 300)
    (W_rel, b_rel, products_rel, g_rel), (W_abs, b_abs, products_abs, g_abs) = runs.values()
    assert newton.ABSOLUTE_STOP > 0
    assert g_rel <= tol and g_abs <= tol
    assert products_abs < products_rel  # (here 61 -> 55, 53 -> 51, 385 -> 359)
    torch.testing.assert_close(W_abs, W_rel, rtol=1e-4, atol=1e-6)
    if multinomial:  # (the softmax leaves a constant shift of the intercepts free)
        b_abs, b_rel = b_abs - b_abs.mean(), b_rel - b_rel.mean()
    torch.testing.assert_close(b_abs, b_rel, rtol=1e-4, atol=1e-6)
