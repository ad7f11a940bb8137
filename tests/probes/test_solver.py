"""The solver's exact reparametrisations and the C path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import deepfeat.probes.budget as cg
from deepfeat.probes.basis import Basis
from deepfeat.probes.objectives import make_problem
from deepfeat.probes.solver import solve, solve_path


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
    # Newton-CG may take the rough fit to the optimum already: equal within float64 round-off then
    assert f_fine <= f_rough * (1 + 1e-12)
    assert fine.grad_max <= 1e-4 and fine.converged


@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
@pytest.mark.parametrize("C", [0.1, 100.0])
def test_newton_exact_reaches_the_iterative_optimum(loss, C, monkeypatch):
    """Newton's method with exact Hessians (float64) reaches the optimum L-BFGS / Newton-CG reach,
    also at a large C on nearly separable data: on a two-class problem through ``solve`` (which sends
    small ones to it), and on four outputs called directly, where an output without positives stays
    where it started."""
    import deepfeat.probes.solver as solver
    from deepfeat.probes.exact import newton_exact

    monkeypatch.setattr(cg, "CG_EXACT_STEPS", 0)  # exact Newton from the start (no Newton-CG)
    rng = np.random.default_rng(7)
    X = torch.as_tensor(rng.normal(size=(150, 12)), dtype=torch.float32)
    codes = rng.integers(0, 3, 150)
    X = X + 2 * torch.as_tensor(np.eye(3)[codes] @ rng.normal(size=(3, 12)), dtype=torch.float32)
    Z = Basis.of(X).project(X)
    onehot = np.eye(4, dtype=np.int64)[codes]  # output 3 has no positives: fixed
    many = make_problem(Z, onehot, None, 4, loss, False)
    two = make_problem(Z, (codes == 1).astype(np.int64), None, 1, loss, False)
    assert many.fixed is not None and bool(many.fixed[3])

    def objective(problem, sol):
        return problem.to(torch.float64).evaluate(sol[0].double(), sol[1].double(), C)[0]

    newton_two = solve(two, C, tol=1e-6, polish=True)
    W0, b0 = solver.initial_point(many)
    W, b, _its, grad = newton_exact(many.to(torch.float64), C, W0.double(), b0.double(), 1e-7, 300)
    assert grad <= 1e-7
    monkeypatch.setattr(solver, "NEWTON_EXACT_WORK", 0)
    monkeypatch.setattr(solver, "DUAL_WORK", 0)
    iter_two = solve(two, C, tol=1e-6, polish=True)
    iter_many = solve(many, C, tol=1e-6, polish=True)
    assert newton_two.converged and (loss == "squared_hinge" or newton_two.n_iter < iter_two.n_iter)
    for problem, ours, ref in [
        (two, (newton_two.W, newton_two.b), (iter_two.W, iter_two.b)),
        (many, (W, b), (iter_many.W, iter_many.b)),
    ]:
        f_ours, f_ref = objective(problem, ours), objective(problem, ref)
        torch.testing.assert_close(f_ours, f_ref, rtol=1e-6, atol=1e-9)
        assert bool((f_ours <= f_ref * (1 + 1e-7)).all())
    torch.testing.assert_close(W[3], W0[3].double())
    torch.testing.assert_close(b[3], b0[3].double())


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_squared_hinge_many_outputs_dual_steps_reach_the_iterative_optimum(C, monkeypatch):
    """30 one-vs-rest squared-hinge outputs, each with fewer margin violators than dimensions at the
    larger Cs: exact Newton through the violators' Gram matrix (``solve`` sends them there) reaches
    the optimum of Newton-CG with a float64 polish, along a C path too."""
    import deepfeat.probes.exact as exact
    import deepfeat.probes.solver as solver

    rng = np.random.default_rng(11)
    K, n, d = 30, 240, 60
    codes = np.arange(n) % K
    X = rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(K, d))[codes]
    Z = Basis.of(torch.as_tensor(X, dtype=torch.float32)).project(torch.as_tensor(X, dtype=torch.float32))
    problem = make_problem(Z, codes, None, K, "squared_hinge", False)
    assert solver.exact_newton("squared_hinge", K, n, Z.shape[1])
    calls = []
    real = exact._dual_steps
    monkeypatch.setattr(exact, "_dual_steps", lambda *a: calls.append(a[3].shape[1]) or real(*a))
    ours = solve(problem, C, tol=1e-6, polish=True)
    *_, along = solve_path(problem, [C / 100, C / 10, C], tol=1e-6)
    assert ours.converged and sum(calls) > 0
    monkeypatch.setattr(solver, "DUAL_WORK", 0)
    # (to 1e-8: conjugate gradients stop once within the tolerance, and at C = 100 a scaled gradient
    # of 1e-6 left weights up to 2e-4 from the optimum along the flattest directions)
    ref = solve(problem, C, tol=1e-8, polish=True)
    p64 = problem.to(torch.float64)
    f = {
        name: p64.evaluate(s.W.double(), s.b.double(), C)[0]
        for name, s in [("o", ours), ("a", along), ("r", ref)]
    }
    torch.testing.assert_close(f["o"], f["r"], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(f["a"], f["r"], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(ours.W, ref.W, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("C", [0.1, 100.0])
@pytest.mark.parametrize("groups", [1, 3])
def test_newton_multinomial_reaches_the_lbfgs_optimum(C, groups, monkeypatch):
    """Newton-CG for the softmax loss (the final fit's float64 phase of small multinomial problems)
    reaches the optimum of the float32 L-BFGS + float64 L-BFGS polish, per group of a grouped
    problem whose groups see different rows."""
    import deepfeat.probes.solver as solver
    from deepfeat.probes.newton import newton_multinomial
    from deepfeat.probes.objectives import Problem

    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.normal(size=(120, 10)), dtype=torch.float32)
    codes = rng.integers(0, 4, 120)
    X = X + 1.5 * torch.as_tensor(np.eye(4)[codes] @ rng.normal(size=(4, 10)), dtype=torch.float32)
    Z = Basis.of(X).project(X)
    base = make_problem(Z, codes, None, 4, "multinomial", True)
    if groups == 1:
        problem = base
    else:
        member = torch.as_tensor(rng.random((120, groups)) > 0.3, dtype=torch.float32)
        problem = Problem(Z, "multinomial", base.T, member, base.N, 4 * groups, None, groups)
    W0, b0 = solver.initial_point(problem)
    p64 = problem.to(torch.float64)
    W, b, products, grad = newton_multinomial(p64, C, W0.double(), b0.double(), 1e-7, 300)
    assert grad <= 1e-7 and products > 0
    monkeypatch.setattr(solver, "MULTINOMIAL_NEWTON_WORK", 0)
    ref = solve(problem, C, tol=1e-6, polish=True)  # L-BFGS in float32, then in float64
    f_ours = p64.evaluate(W, b, C)[0]
    f_ref = p64.evaluate(ref.W.double(), ref.b.double(), C)[0]
    assert f_ours.shape == (groups,)
    torch.testing.assert_close(f_ours, f_ref, rtol=1e-6, atol=1e-9)
    assert bool((f_ours <= f_ref * (1 + 1e-7)).all())


def test_newton_exact_stops_at_round_off_below_an_unreachable_tol():
    """A scaled-gradient tolerance below float64's reach ends when iterations stop lowering the
    objective, not after max_iter of them."""
    from deepfeat.probes.exact import newton_exact
    from deepfeat.probes.solver import initial_point

    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(size=(90, 8)))
    codes = rng.integers(0, 3, 90)
    Z = Basis.of(X).project(X)
    problem = make_problem(Z, codes, None, 3, "squared_hinge", False)
    W0, b0 = initial_point(problem)
    *_, iterations, grad = newton_exact(problem, 3.0, W0, b0, 1e-300, 2000)
    assert iterations < 50 and 0 < grad < 1e-6


def test_small_multinomial_final_fit_in_float64_is_solved():
    """A float64 multinomial problem's final fit (polish) goes straight to Newton-CG and converges:
    the float32-then-float64 route has no float32 phase to skip here."""
    rng = np.random.default_rng(5)
    X = torch.as_tensor(rng.normal(size=(80, 6)))
    codes = rng.integers(0, 3, 80)
    X = X + torch.as_tensor(np.eye(3)[codes] @ rng.normal(size=(3, 6)))
    problem = make_problem(Basis.of(X).project(X), codes, None, 3, "multinomial", True)
    sol = solve(problem, 1.0, tol=1e-6, polish=True)
    assert sol.converged and sol.grad_max <= 1e-6 and sol.n_iter > 0


def test_newton_cg_many_outputs_few_violators():
    """One-vs-rest SVMs with more dimensions than training rows along a C path: at large C each
    output has few margin violators (ridge plus low rank), where conjugate gradients converge in
    about rank steps unpreconditioned. Every C reaches the exact-Newton optimum, with fewer Hessian
    products than the diagonally preconditioned iteration took (1,091 on this path to 1e-4; now about
    400 to 1e-5)."""
    from deepfeat.probes.exact import newton_exact
    from deepfeat.probes.newton import newton_cg
    from deepfeat.probes.solver import initial_point

    rng = np.random.default_rng(0)
    n, r, K = 150, 192, 102
    Z = torch.as_tensor(rng.normal(size=(n, r)) * np.geomspace(3, 0.01, r), dtype=torch.float32)
    problem = make_problem(Z, rng.integers(0, K, n), None, K, "squared_hinge", False)
    p64 = problem.to(torch.float64)
    W, b = initial_point(problem)
    total = 0
    for C in (0.01, 0.1, 1.0, 10.0):
        W, b, products, grad = newton_cg(problem, C, W, b, 1e-5, 300)
        total += products
        assert grad <= 1e-5
        We, be, _its, grad_e = newton_exact(p64, C, W.double(), b.double(), 1e-9, 100)
        assert grad_e <= 1e-9
        f_cg = p64.evaluate(W.double(), b.double(), C)[0]
        f_exact = p64.evaluate(We, be, C)[0]
        torch.testing.assert_close(f_cg, f_exact, rtol=1e-4, atol=1e-8)
    assert total < 700


def test_weighted_gram_from_the_nonzero_rows_equals_the_full_product():
    """The squared hinge's Hessians are formed from the margin violators' rows only (weights 0
    elsewhere): the same matrix as the product over every row."""
    from deepfeat.probes.exact import _weighted_gram

    rng = np.random.default_rng(2)
    Za = torch.as_tensor(rng.normal(size=(50, 7)), dtype=torch.float32)
    w = torch.as_tensor(rng.random(50) * (rng.random(50) < 0.3), dtype=torch.float32)
    full = torch.mm((Za * w[:, None]).t(), Za)
    torch.testing.assert_close(_weighted_gram(Za, w, True), full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_weighted_gram(Za, w, False), full, rtol=1e-5, atol=1e-6)


def _one_vs_rest_hinge(seed: int, K: int, n: int, d: int, spread: float):
    """A K-output squared-hinge problem of n rows around K Gaussian class centres, in its basis."""
    rng = np.random.default_rng(seed)
    codes = np.arange(n) % K
    X = rng.normal(size=(n, d)) + spread * rng.normal(size=(K, d))[codes]
    Xt = torch.as_tensor(X, dtype=torch.float32)
    return make_problem(Basis.of(Xt).project(Xt), codes, None, K, "squared_hinge", False)


@pytest.mark.parametrize("outputs", [1, 6])
def test_squared_hinge_search_fits_take_exact_newton_in_float32(outputs, monkeypatch):
    """The squared hinge's C-search fits take exact Newton in the problem's float32 (through the
    violators' Gram matrix at large C, fewer rows than dimensions), its final fits and the logistic
    loss's in float64; each C's objective equals the float64 path's within float32 round-off."""
    import deepfeat.probes.exact as exact
    import deepfeat.probes.solver as solver

    monkeypatch.setattr(cg, "CG_EXACT_STEPS", 0)  # exact Newton from the start (no Newton-CG)
    hinge = _one_vs_rest_hinge(14, max(outputs, 2), 90, 150, 1.0)
    if outputs == 1:
        codes = (hinge.T[:, 0] > 0).numpy().astype(np.int64)
        hinge = make_problem(hinge.Z, codes, None, 1, "squared_hinge", False)
    logistic = make_problem(hinge.Z, (hinge.T[:, 0] > 0).numpy().astype(np.int64), None, 1, "logistic", False)
    assert hinge.Z.dtype == torch.float32 and hinge.Z.shape[0] <= hinge.Z.shape[1] + 1
    dtypes, grams = [], []
    real, real_dual = solver.newton_exact, exact._dual_steps
    monkeypatch.setattr(
        solver, "newton_exact", lambda p, *a, **k: dtypes.append(p.Z.dtype) or real(p, *a, **k)
    )
    monkeypatch.setattr(exact, "_dual_steps", lambda *a: grams.append(a[1].dtype) or real_dual(*a))
    Cs = [1e-3, 0.1, 10.0]
    low = list(solve_path(hinge, Cs, tol=1e-5))
    assert dtypes == [torch.float32] * len(Cs)
    assert grams and set(grams) == {torch.float32}
    dtypes.clear()
    solve(hinge, 0.1, tol=1e-5, polish=True)
    list(solve_path(logistic, Cs, tol=1e-5))
    assert set(dtypes) == {torch.float64}
    monkeypatch.setattr(solver, "EXACT_SEARCH_FLOAT32", ())
    high = list(solve_path(hinge, Cs, tol=1e-5))
    for C, ours, ref in zip(Cs, low, high):
        torch.testing.assert_close(
            _objective(hinge, ours, C), _objective(hinge, ref, C), rtol=1e-5, atol=1e-7
        )


def test_float32_searches_take_dual_steps_over_more_rows_than_float64_fits(monkeypatch):
    """Between DUAL_ROWS and DUAL_ROWS_FLOAT32 rows, a squared-hinge C-search fit (float32) takes dual
    steps through a Gram matrix formed in float32, while the final fit (float64) stays iterative;
    both reach the iterative solver's optimum."""
    import deepfeat.probes.exact as exact
    import deepfeat.probes.solver as solver

    K, n = 2, 90
    problem = _one_vs_rest_hinge(15, K, n, 40, 0.3)  # more rows than dimensions, overlapping
    codes = (problem.T[:, 0] > 0).numpy().astype(np.int64)
    problem = make_problem(problem.Z, codes, None, 1, "squared_hinge", False)
    monkeypatch.setattr(solver, "DUAL_ROWS", n - 1)
    monkeypatch.setattr(exact, "DUAL_ROWS", n - 1)
    monkeypatch.setattr(exact, "DUAL_ROWS_FLOAT32", n)
    monkeypatch.setattr(solver, "NEWTON_EXACT_SIZE", 0)  # outside the static rule
    monkeypatch.setattr(solver, "NEWTON_WORK", 0)  # iterative: L-BFGS
    grams = []
    real = exact._dual_steps
    monkeypatch.setattr(exact, "_dual_steps", lambda *a: grams.append(a[1].dtype) or real(*a))
    C = 10.0
    W0, b0 = solver.initial_point(problem)
    assert solver._dual_newton(problem, C, W0, b0, torch.float32)
    assert not solver._dual_newton(problem, C, W0, b0, torch.float64)
    search = solve(problem, C, tol=1e-5, init=(W0, b0))
    assert search.exact and set(grams) == {torch.float32}
    assert set(problem._grams) == {torch.float32}  # formed in float32, no float64 product
    grams.clear()
    final = solve(problem, C, tol=1e-5, init=(W0, b0), polish=True)
    assert not final.exact and not grams
    monkeypatch.setattr(exact, "DUAL_ROWS_FLOAT32", n - 1)
    ref = solve(problem, C, tol=1e-5, init=(W0, b0))
    assert not ref.exact
    best = _objective(problem, final, C)  # float64 to a tenth of the tolerance
    for sol in (search, ref):
        torch.testing.assert_close(_objective(problem, sol, C), best, rtol=1e-5, atol=1e-7)


def test_squared_hinge_fewer_rows_than_dimensions_takes_dual_steps_at_large_C(monkeypatch):
    """Outside the static exact-Newton rule, a squared-hinge problem with fewer rows than dimensions
    is sent to exact Newton through the violators' Gram matrix where its margin violators are few
    (large C), and stays iterative where every row violates (small C): both reach the iterative
    solver's optimum."""
    import deepfeat.probes.exact as exact
    import deepfeat.probes.solver as solver

    K, n = 6, 90
    problem = _one_vs_rest_hinge(12, K, n, 150, 1.0)
    Z = problem.Z
    monkeypatch.setattr(solver, "NEWTON_EXACT_SIZE", 0)  # the static rule says no
    assert not solver.exact_newton("squared_hinge", K, n, Z.shape[1])
    calls = []
    real = exact._dual_steps
    monkeypatch.setattr(exact, "_dual_steps", lambda *a: calls.append(a[3].shape[1]) or real(*a))
    r = Z.shape[1]
    monkeypatch.setattr(solver, "DUAL_WORK", (K * n**3 + n * n * r) // 2)  # half of a step at zero
    W0, b0 = solver.initial_point(problem)
    small, large = 1e-4, 10.0
    assert not solver._dual_newton(problem, small, W0, b0, torch.float64)  # all n rows violate K outputs
    ours = {C: solve(problem, C, tol=1e-6, polish=True) for C in (small, large)}
    assert ours[large].converged and sum(calls) > 0
    monkeypatch.setattr(solver, "DUAL_WORK", 0)
    for C, sol in ours.items():
        ref = solve(problem, C, tol=1e-6, polish=True)
        p64 = problem.to(torch.float64)
        f_ours = p64.evaluate(sol.W.double(), sol.b.double(), C)[0]
        f_ref = p64.evaluate(ref.W.double(), ref.b.double(), C)[0]
        torch.testing.assert_close(f_ours, f_ref, rtol=1e-6, atol=1e-9)


def test_many_squared_hinge_outputs_inside_the_static_rule_follow_the_run_time_rule(monkeypatch):
    """With more than DUAL_RUNTIME_OUTPUTS outputs (and over NEWTON_WORK per evaluation), a problem
    the static rule would send to exact Newton takes it only where the violators' work at the C's
    start is accepted: not at small C from the start (every row violates every output), yes at large
    C; both reach the optimum of exact Newton."""
    import deepfeat.probes.solver as solver

    monkeypatch.setattr(cg, "CG_EXACT_STEPS", 0)  # exact Newton's own rules (no Newton-CG first)
    K, n = 8, 160
    problem = _one_vs_rest_hinge(13, K, n, 12, 1.5)
    r = problem.Z.shape[1]
    assert solver.exact_newton("squared_hinge", K, n, r)
    exact = {}
    for C in (1e-4, 10.0):  # the static rule alone: exact Newton at every C
        exact[C] = solve(problem, C, tol=1e-6, polish=True)
    monkeypatch.setattr(solver, "DUAL_RUNTIME_OUTPUTS", K - 1)
    monkeypatch.setattr(solver, "NEWTON_WORK", n * r * K - 1)
    monkeypatch.setattr(solver, "DUAL_WORK", K * (n * r * r + r**3) // 2)  # below the all-violating start
    calls = []
    real = solver.newton_exact
    monkeypatch.setattr(solver, "newton_exact", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    small = solve(problem, 1e-4, tol=1e-6, polish=True)
    assert 1e-4 not in calls
    large = solve(problem, 10.0, init=(exact[10.0].W, exact[10.0].b), tol=1e-6, polish=True)
    assert 10.0 in calls
    p64 = problem.to(torch.float64)
    for C, sol in ((1e-4, small), (10.0, large)):
        f = p64.evaluate(sol.W.double(), sol.b.double(), C)[0]
        f_ref = p64.evaluate(exact[C].W.double(), exact[C].b.double(), C)[0]
        torch.testing.assert_close(f, f_ref, rtol=1e-6, atol=1e-9)


def test_fewer_rows_than_dimensions_reach_the_optimum_at_large_C():
    """n < d with small-variance directions (the Gram matrix's eigenvalues down to 1e-7 of the
    largest), squared hinge at C = 100, where the solution leans on those directions: the probe's
    objective on its float32 rows is the float64 optimum's to 1e-7 (a float32 n x n eigendecomposition
    left it 1e-5 above)."""
    from deepfeat.probes import LinearProbe
    from deepfeat.probes.exact import newton_exact

    rng = np.random.default_rng(6)
    U = np.linalg.qr(rng.normal(size=(80, 79)))[0]
    V = np.linalg.qr(rng.normal(size=(300, 79)))[0]
    X = (U @ np.diag(10 ** -np.linspace(0, 3.5, 79)) @ V.T + 3.0).astype(np.float32)
    y = (U[:, :3] @ rng.normal(size=3) + 0.02 * U[:, 40:60] @ rng.normal(size=20) > 0).astype(int)
    C = 100.0
    X64 = torch.as_tensor(X, dtype=torch.float64)
    basis = Basis.of(X64)
    problem = make_problem(basis.project(X64), y, None, 1, "squared_hinge", False)
    sol = solve(problem, C, tol=1e-9, polish=True, max_iter=2000)
    W, b, _, _ = newton_exact(problem, C, sol.W, sol.b, 1e-12, 500)
    ref_coef, ref_b = basis.to_coef(W, b)
    T = torch.as_tensor(np.where(y == 1, 1.0, -1.0), dtype=torch.float64)

    def objective(coef, intercept):
        margin = torch.clamp(1 - T * (X64 @ coef.reshape(-1) + intercept.reshape(())), min=0)
        return float(C * (margin**2).sum() + 0.5 * (coef**2).sum())

    probe = LinearProbe(loss="squared_hinge", C=C).fit(X, y)
    ours = objective(
        torch.as_tensor(probe.coef_, dtype=torch.float64),
        torch.as_tensor(probe.intercept_, dtype=torch.float64),
    )
    assert ours <= objective(ref_coef, ref_b) * (1 + 1e-7)


def test_the_path_starts_each_logistic_C_from_the_tangent_prediction(monkeypatch):
    """Exact Newton's solutions carry d(W, b)/d log C; the next C starts from the tangent's prediction
    where it lowers the new objective, which on this path beats the secant's at C = 0.01-10."""
    from deepfeat.probes.solver import _predict

    monkeypatch.setattr(cg, "CG_EXACT_STEPS", 0)  # exact Newton from the start (no Newton-CG)

    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.normal(size=(200, 12)), dtype=torch.float32)
    codes = (X[:, :3].sum(1).numpy() + rng.normal(size=200) > 0).astype(np.int64)
    problem = make_problem(Basis.of(X).project(X), codes, None, 1, "logistic", False)
    Cs = [float(c) for c in np.logspace(-4, 2, 7)]
    path = list(solve_path(problem, Cs, tol=1e-6))
    assert all(sol.tangent is not None for sol in path)
    for j in range(1, 5):
        prev, current, C = path[j - 1], path[j], Cs[j + 1]
        W, b = _predict(problem, C, Cs[j], current, prev)
        start = float(problem.evaluate(W, b, C)[0])
        secant = problem.evaluate(2 * current.W - prev.W, 2 * current.b - prev.b, C)[0]
        assert start < float(secant)
        assert start < float(problem.evaluate(current.W, current.b, C)[0])


def test_exact_squared_hinge_paths_start_each_C_from_the_previous_solution(monkeypatch):
    """No secant for exact Newton on the squared hinge (its start took a poorer set of margin
    violators and more Newton steps); the path still reaches every C's optimum."""
    from deepfeat.probes.solver import _predict

    monkeypatch.setattr(cg, "CG_EXACT_STEPS", 0)  # exact Newton from the start (no Newton-CG)
    rng = np.random.default_rng(4)
    X = torch.as_tensor(rng.normal(size=(150, 10)), dtype=torch.float32)
    codes = (X[:, :2].sum(1).numpy() + rng.normal(size=150) > 0).astype(np.int64)
    problem = make_problem(Basis.of(X).project(X), codes, None, 1, "squared_hinge", False)
    Cs = [0.01, 0.1, 1.0, 10.0]
    path = list(solve_path(problem, Cs, tol=1e-6))
    assert all(sol.exact and sol.tangent is None for sol in path)
    W, b = _predict(problem, Cs[2], Cs[1], path[1], path[0])
    assert W is path[1].W and b is path[1].b
    for C, sol in zip(Cs, path):
        cold = solve(problem, C, tol=1e-6, polish=True)
        f_path = problem.to(torch.float64).evaluate(sol.W.double(), sol.b.double(), C)[0].sum()
        f_cold = problem.to(torch.float64).evaluate(cold.W.double(), cold.b.double(), C)[0].sum()
        assert float(f_path) <= float(f_cold) * (1 + 1e-5) + 1e-9


def _per_output_problems(loss="logistic"):
    rng = np.random.default_rng(11)
    X = torch.as_tensor(rng.normal(size=(160, 14)), dtype=torch.float32)
    codes = rng.integers(0, 3, 160)
    X = X + 1.5 * torch.as_tensor(np.eye(3)[codes] @ rng.normal(size=(3, 14)), dtype=torch.float32)
    Z = Basis.of(X).project(X)
    two = make_problem(Z, (codes == 1).astype(np.int64), None, 1, loss, False)
    three = make_problem(Z, np.eye(3, dtype=np.int64)[codes], None, 3, loss, False)
    return two, three


def _objective(problem, sol, C):
    return problem.to(torch.float64).evaluate(sol.W.double(), sol.b.double(), C)[0]


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_newton_cg_first_reaches_exact_newtons_optimum(C, outputs, loss, monkeypatch):
    """Small per-output problems take Newton-CG steps within a budget of Hessian products first:
    where it suffices (cg=True) the solution is exact Newton's optimum; with a budget of one product
    it hands over to exact Newton (cg=False), which reaches the same optimum from there."""
    import deepfeat.probes.solver as solver

    problem = _per_output_problems(loss)[0 if outputs == 1 else 1]
    assert solver.cg_budget(problem) > 0
    first = solve(problem, C, tol=1e-7, polish=True)
    monkeypatch.setattr(cg, "CG_EXACT_STEPS", 0)
    exact = solve(problem, C, tol=1e-7, polish=True)
    assert exact.cg is None and exact.exact
    asked = []
    monkeypatch.setattr(solver, "cg_budget", lambda *a: asked.append(1) or 1)
    handed = solve(problem, C, tol=1e-7, polish=True)
    assert asked and handed.cg is False and handed.exact
    for sol in (first, handed):
        assert sol.converged and sol.grad_max <= 1e-7
        torch.testing.assert_close(
            _objective(problem, sol, C), _objective(problem, exact, C), rtol=1e-7, atol=1e-10
        )
    if first.cg:  # (to 1e-7: conjugate gradients stop once within the tolerance, and the weights'
        # distance to the optimum along the flattest directions is about tol / (their curvature))
        torch.testing.assert_close(first.W.double(), exact.W.double(), rtol=2e-3, atol=2e-4)


def test_logistic_path_keeps_exact_newton_after_a_handover(monkeypatch):
    """Once a C of the path ran out of Newton-CG's budget, the larger Cs go to exact Newton directly
    (and carry its tangent); before that, Newton-CG's solutions (no tangent) still reach each C's
    optimum."""
    import deepfeat.probes.solver as solver

    two, _ = _per_output_problems()
    Cs = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    budget = solver.cg_budget(two)
    assert budget > 0
    path = list(solve_path(two, Cs, tol=1e-6))
    flags = [sol.cg for sol in path]
    assert flags[0] is True
    if False in flags:
        handed = flags.index(False)
        assert all(flag is None for flag in flags[handed + 1 :])
        assert all(sol.tangent is not None for sol in path[handed:])
    monkeypatch.setattr(solver, "cg_budget", lambda *a: 2)  # hand over at the first C
    tight = list(solve_path(two, Cs, tol=1e-6))
    assert [sol.cg for sol in tight] == [False] + [None] * (len(Cs) - 1)
    for C, a, b in zip(Cs, path, tight):
        torch.testing.assert_close(_objective(two, a, C), _objective(two, b, C), rtol=1e-5, atol=1e-9)


def test_path_goes_to_exact_newton_where_newton_cg_would_outgrow_its_next_budget(monkeypatch):
    """Along the path, once CG_GROWTH times the Hessian products Newton-CG took at one C exceed the
    next C's budget, the later Cs take exact Newton directly; without that look-ahead (switched off,
    or too few rows per dimension) only a C that runs out hands over. Every C reaches its optimum."""
    import deepfeat.probes.solver as solver

    two, _ = _per_output_problems()
    Cs = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    monkeypatch.setattr(solver, "cg_budget", lambda *a: 60)
    monkeypatch.setattr(solver, "CG_GROWTH", 0.0)
    plain = list(solve_path(two, Cs, tol=1e-6))
    used = [sol.n_iter for sol in plain if sol.cg]
    assert len(used) >= 3 and used[-1] > used[0]  # products grow along the path
    growth = 0.5 * 60 / used[1] + 0.5 * 60 / used[2]  # outgrows the budget after the second or third C
    monkeypatch.setattr(solver, "CG_GROWTH", growth)
    ahead = list(solve_path(two, Cs, tol=1e-6))
    flags = [sol.cg for sol in ahead]
    first = next(j for j, sol in enumerate(ahead) if sol.cg and growth * sol.n_iter > 60)
    assert flags[: first + 1] == [True] * (first + 1) and flags[first + 1 :] == [None] * (len(Cs) - first - 1)
    assert first < len(used) - 1  # earlier than the path without the look-ahead
    monkeypatch.setattr(solver, "CG_GROWTH_ROWS", 100)  # 160 rows, 14 dimensions: no look-ahead
    assert [sol.cg for sol in solve_path(two, Cs, tol=1e-6)] == [sol.cg for sol in plain]
    for C, a, b in zip(Cs, plain, ahead):
        torch.testing.assert_close(_objective(two, a, C), _objective(two, b, C), rtol=1e-5, atol=1e-9)


def test_newton_cg_spends_at_most_its_product_budget():
    from deepfeat.probes.newton import newton_cg
    from deepfeat.probes.solver import initial_point

    two, three = _per_output_problems()
    for problem in (two, three):
        W0, b0 = initial_point(problem)
        W, b, products, grad = newton_cg(problem, 100.0, W0, b0, 1e-12, 300, max_products=5)
        assert products <= 5 and grad > 1e-12
        f0 = problem.evaluate(W0, b0, 100.0)[0]
        assert bool((problem.evaluate(W, b, 100.0)[0] < f0).all())  # the truncated steps descend


def test_squared_hinge_budget_only_where_rows_outnumber_dimensions(monkeypatch):
    """Squared-hinge problems with few rows per basis dimension (or many outputs) take exact Newton
    from the start: its steps go through the violators' small systems there."""
    import deepfeat.probes.solver as solver

    two, three = _per_output_problems("squared_hinge")
    assert solver.cg_budget(two) > 0 and solver.cg_budget(three) > 0
    narrow = make_problem(two.Z[:20], two.T[:20, 0].gt(0).long().numpy(), None, 1, "squared_hinge", False)
    assert solver.cg_budget(narrow) == 0
    called = []
    monkeypatch.setattr(solver, "newton_cg_first", lambda *a: called.append(1))
    sol = solve(narrow, 1.0, tol=1e-6)
    assert not called and sol.exact and sol.cg is None
    monkeypatch.setattr(cg, "CG_HINGE_OUTPUTS", 2)
    assert solver.cg_budget(three) == 0


def test_many_narrow_squared_hinge_outputs_price_exact_newton_by_their_violators():
    """Squared-hinge problems with few rows per dimension but many outputs get a Newton-CG budget
    priced by their violators' systems: large at small C (every row violates), smaller at large C;
    solved through it, they reach exact Newton's optimum."""
    import deepfeat.probes.solver as solver

    K, n = 12, 40
    problem = _one_vs_rest_hinge(5, K, n, 30, 2.0)
    r = problem.Z.shape[1]
    assert n < cg.CG_HINGE_ROWS * r and K >= cg.CG_MANY_OUTPUTS
    assert solver.exact_newton("squared_hinge", K, n, r)
    small = solver.cg_budget(problem, 1e-4)
    exact_large = solve(problem, 100.0, tol=1e-6, polish=True, cg_first=False)
    large = solver.cg_budget(problem, 100.0, exact_large.W, exact_large.b)
    assert small > large >= 0
    for C in (1e-4, 1.0):
        first = solve(problem, C, tol=1e-6, polish=True)
        exact = solve(problem, C, tol=1e-6, polish=True, cg_first=False)
        assert exact.cg is None and first.cg is not None and first.converged
        torch.testing.assert_close(
            _objective(problem, first, C), _objective(problem, exact, C), rtol=1e-6, atol=1e-9
        )


def test_outputs_held_fixed_skip_newton_cg(monkeypatch):
    """An output with one class only (no finite logistic optimum) stays where exact Newton keeps it:
    such problems go to exact Newton directly."""
    import deepfeat.probes.solver as solver

    _, three = _per_output_problems()
    T = three.T.clone()
    T[:, 2] = 0
    problem = make_problem(three.Z, T.long().numpy(), None, 3, "logistic", False)
    assert problem.fixed is not None and bool(problem.fixed[2])
    called = []
    monkeypatch.setattr(solver, "newton_cg_first", lambda *a: called.append(1))
    sol = solve(problem, 1.0, tol=1e-6)
    assert not called and sol.exact and sol.cg is None


def test_a_float32_phase_ending_in_nan_is_solved_again_in_float64(monkeypatch):
    import deepfeat.probes.solver as solver

    problem = _per_output_problems("logistic")[0]
    reference = solve(problem, 1.0, tol=1e-5)
    inner = solver._solve

    def broken(p, C, **kw):
        sol = inner(p, C, **kw)
        if p.Z.dtype == torch.float32:
            sol.W = torch.full_like(sol.W, float("nan"))
        return sol

    monkeypatch.setattr(solver, "_solve", broken)
    again = solve(problem, 1.0, tol=1e-5)
    assert again.W.dtype == torch.float32 and bool(torch.isfinite(again.W).all())
    torch.testing.assert_close(again.W, reference.W, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("C", [0.1, 100.0])
def test_a_float64_multinomial_final_fit_is_polished_to_a_tenth_of_tol(C):
    """A float64 problem's final fit (the NaN fallback's) reaches POLISH * tol, as a float32 one's
    float64 phase does (the float32 tolerance floor briefly stopped it at tol)."""
    from deepfeat.probes.solver import POLISH

    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.normal(size=(120, 10)), dtype=torch.float64)
    codes = rng.integers(0, 4, 120)
    X = X + 1.5 * torch.as_tensor(np.eye(4)[codes] @ rng.normal(size=(4, 10)))
    problem = make_problem(Basis.of(X).project(X), codes, None, 4, "multinomial", True)
    sol = solve(problem, C, tol=1e-3, polish=True)
    assert sol.converged and sol.grad_max <= POLISH * 1e-3
