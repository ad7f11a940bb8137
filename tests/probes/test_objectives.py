"""The hand-written gradients and curvature weights of the probes' objectives against autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepfeat.probes.objectives import CURVATURE, FLOOR, Problem, make_problem, stack_folds


def data(n=40, r=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    Z = torch.as_tensor(rng.normal(size=(n, r)), dtype=torch.float64)
    codes = rng.integers(0, k, n)
    codes[:k] = np.arange(k)
    W = torch.as_tensor(rng.normal(size=(k, r)), dtype=torch.float64)
    b = torch.as_tensor(rng.normal(size=k), dtype=torch.float64)
    return Z, codes, W, b


def reference(loss, Z, codes, W, b, C, weight, N):
    """The objective written directly with torch's own losses, for autograd."""
    logits = Z @ W.t() + b
    if loss == "multinomial":
        per = F.cross_entropy(logits, torch.as_tensor(codes), reduction="none")
        per = per if weight is None else per * weight[:, 0]
    else:
        T = torch.as_tensor(np.eye(W.shape[0])[codes])
        if loss == "logistic":
            per = F.binary_cross_entropy_with_logits(logits, T, reduction="none")
        else:
            per = torch.clamp(1 - (2 * T - 1) * logits, min=0) ** 2
        per = per if weight is None else per * weight
    return per.sum() / N + 0.5 * (W**2).sum() / (C * N)


@pytest.mark.parametrize("loss", ["multinomial", "logistic", "squared_hinge"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradients_match_autograd(loss, weighted):
    Z, codes, W, b = data()
    C = 0.7
    mask = None
    if weighted and loss != "multinomial":
        mask = np.random.default_rng(1).random((len(Z), 4)) > 0.2
    row_weight = 0.25 if weighted and loss == "multinomial" else 1.0
    problem = make_problem(
        Z, codes, mask, 4, "logistic" if loss == "logistic" else loss, loss == "multinomial", row_weight
    )
    value, gW, gb, _h = problem.evaluate(W, b, C)
    Wr, br = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ref = reference(loss, Z, codes, Wr, br, C, problem.weight, problem.N)
    ref.backward()
    assert float(value.sum()) == pytest.approx(float(ref.detach()), rel=1e-12)
    torch.testing.assert_close(gW, Wr.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gb, br.grad, rtol=1e-10, atol=1e-12)
    if loss != "multinomial":  # independent outputs: one value per output, summing to the total
        assert value.shape == (4,)


@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_curvature_weights_are_second_derivatives(loss):
    """h is the diagonal second derivative of each entry's loss in its logit."""
    Z, codes, W, b = data(n=30)
    problem = make_problem(Z, codes, None, 4, loss, False)
    _, _, _, h = problem.evaluate(W, b, 1.0)
    logits = (Z @ W.t() + b).requires_grad_(True)
    T = torch.as_tensor(np.eye(4)[codes])
    if loss == "logistic":
        per = F.binary_cross_entropy_with_logits(logits, T, reduction="none")
    else:
        per = torch.clamp(1 - (2 * T - 1) * logits, min=0) ** 2
    (g,) = torch.autograd.grad(per.sum(), logits, create_graph=True)
    (second,) = torch.autograd.grad(g.sum(), logits)  # entries are independent: the diagonal
    torch.testing.assert_close(h, second)


def test_diagonal_floor_and_subset():
    Z, codes, _W, _b = data(n=30)
    mask = np.ones((30, 4), bool)
    mask[:5, 1] = False
    problem = make_problem(Z, codes, mask, 4, "squared_hinge", False)
    h = torch.zeros(30, 4, dtype=torch.float64)  # no violator anywhere
    diag = problem.diagonal(h, C=2.0)
    floor = FLOOR * CURVATURE["squared_hinge"]
    w = torch.as_tensor(mask, dtype=torch.float64)
    expected = (floor * w).t() @ (Z * Z) / problem.N + 1 / (2.0 * problem.N)
    torch.testing.assert_close(diag[:, :-1], expected)
    torch.testing.assert_close(diag[:, -1], floor * w.sum(0) / problem.N)
    sub = problem.diagonal(h[:, [1, 3]], C=2.0, cols=torch.tensor([1, 3]))
    torch.testing.assert_close(sub, diag[[1, 3]])


def test_targets_and_fixed_outputs():
    Z, codes, _, _ = data(n=12, k=3)
    Y = np.eye(3, dtype=np.int64)[codes]
    Y[:, 2] = 0  # a label without positives (as in a small fold): left constant
    p = make_problem(Z, Y, None, 3, "squared_hinge", False)
    assert set(np.unique(p.T.numpy())) == {-1.0, 1.0}
    assert p.fixed.tolist() == [False, False, True]
    binary = make_problem(Z, (codes == 1).astype(np.int64), None, 1, "logistic", False)
    assert binary.T.shape == (12, 1) and binary.fixed is None
    np.testing.assert_array_equal(binary.T[:, 0].numpy(), (codes == 1).astype(float))
    dropout = make_problem(Z, codes, None, 3, "multinomial", True, row_weight=0.25)
    assert dropout.N == 3.0 and dropout.weight.shape == (12, 1)


def test_grouped_multinomial_matches_autograd_per_group():
    """Groups of one multinomial problem (the folds of a C search): each group's value and gradients
    are those of its own softmax problem on the rows its weight column selects."""
    Z, codes, _, _ = data()
    G = 3
    rng = np.random.default_rng(2)
    member = torch.as_tensor(rng.random((len(Z), G)) > 0.3, dtype=torch.float64)
    base = make_problem(Z, codes, None, 4, "multinomial", True)
    grouped = Problem(Z, "multinomial", base.T, member, base.N, G * 4, None, G)
    Ws = torch.as_tensor(rng.normal(size=(G * 4, Z.shape[1])))
    bs = torch.as_tensor(rng.normal(size=G * 4))
    value, gW, gb, h = grouped.evaluate(Ws, bs, 0.7)
    assert value.shape == (G,) and h.shape == (len(Z), G * 4)
    for g in range(G):
        Wr = Ws[4 * g : 4 * g + 4].clone().requires_grad_(True)
        br = bs[4 * g : 4 * g + 4].clone().requires_grad_(True)
        ref = reference("multinomial", Z, codes, Wr, br, 0.7, member[:, g : g + 1], base.N)
        ref.backward()
        assert float(value[g]) == pytest.approx(float(ref.detach()), rel=1e-12)
        torch.testing.assert_close(gW[4 * g : 4 * g + 4], Wr.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gb[4 * g : 4 * g + 4], br.grad, rtol=1e-10, atol=1e-12)
    # a subset of groups evaluates those groups only
    sub = grouped.evaluate(Ws[4:], bs[4:], 0.7, torch.tensor([1, 2]))
    torch.testing.assert_close(sub[0], value[1:])
    torch.testing.assert_close(sub[1], gW[4:])


@pytest.mark.parametrize("loss", ["multinomial", "logistic", "squared_hinge"])
def test_values_and_gradients_from_given_logits_equal_a_full_evaluation(loss):
    """Line searches evaluate trial points from their logits (no pass over Z): the same values; a
    gradient from the caller's logits is the full evaluation's."""
    Z, codes, W, b = data()
    problem = make_problem(Z, codes, None, 4, loss, loss == "multinomial")
    full = problem.evaluate(W, b, 0.7)
    logits = Z @ W.t() + b
    torch.testing.assert_close(problem.value_at(logits, W, 0.7), full[0])
    for given, expected in zip(problem.evaluate(W, b, 0.7, logits=logits), full):
        torch.testing.assert_close(given, expected)


@pytest.mark.parametrize("loss", ["multinomial", "logistic", "squared_hinge"])
def test_values_from_logits_of_stacked_folds_equal_a_full_evaluation(loss):
    """The C path's start prediction compares objective values of stacked folds from their logits
    alone: each fold's (or group's) value is the full evaluation's, its rows weighted by membership."""
    Z, codes, W, b = data()
    base = make_problem(Z, codes, None, 4, loss, loss == "multinomial")
    rows = np.arange(len(Z))
    stacked = stack_folds(base, [rows[rows % 3 != f] for f in range(3)])
    Ws, bs = W.repeat(3, 1) * torch.linspace(0.5, 1.5, 12, dtype=W.dtype)[:, None], b.repeat(3)
    full = stacked.evaluate(Ws, bs, 0.7)[0]
    assert full.shape == (3 if loss == "multinomial" else 12,)
    torch.testing.assert_close(stacked.value_at(stacked.scores(Z, Ws, bs), Ws, 0.7), full)


def test_a_problem_converts_to_another_precision_once():
    Z, codes, _, _ = data()
    problem = make_problem(Z.float(), codes, None, 4, "squared_hinge", False)
    p64 = problem.to(torch.float64)
    assert p64.Z.dtype == torch.float64 and problem.to(torch.float64) is p64
    assert problem.to(torch.float32) is problem
    torch.testing.assert_close(p64.T, problem.T.double())


@pytest.mark.parametrize("loss", ["multinomial", "logistic", "squared_hinge"])
def test_gradients_from_the_transposed_copy_equal_the_direct_product(loss, monkeypatch):
    """Large problems take the gradient's product on a transposed copy of Z, made at the
    TRANSPOSED_AFTER-th evaluation and only for the outputs the rule names: the same gradients."""
    import deepfeat.probes.objectives as objectives

    monkeypatch.setattr(objectives, "TRANSPOSED_BYTES", (0, 10**9))
    monkeypatch.setattr(objectives, "TRANSPOSED_DIM", 1)
    monkeypatch.setattr(objectives, "TRANSPOSED_AFTER", 3)
    Z, codes, W, b = data()
    problem = make_problem(Z, codes, None, 4, loss, loss == "multinomial")
    first = problem.evaluate(W, b, 0.7)
    assert problem._Zt is None
    problem.evaluate(W, b, 0.7)
    later = problem.evaluate(W, b, 0.7)
    assert problem._Zt is not None and torch.equal(problem._Zt, Z.t())
    for a, c in zip(later, first):
        torch.testing.assert_close(a, c)
    if loss != "multinomial":  # a subset of outputs, as L-BFGS asks for
        cols = torch.tensor([1, 3])
        value, gW, gb, h = problem.evaluate(W[cols], b[cols], 0.7, cols)
        for a, c in zip((value, gW, gb, h.t()), (first[0], first[1], first[2], first[3].t())):
            torch.testing.assert_close(a, c[cols])
    # one output: no copy, whatever the size
    binary = "logistic" if loss == "multinomial" else loss
    single = make_problem(Z, (codes == 0).astype(int), None, 1, binary, False)
    for _ in range(5):
        single.evaluate(W[:1], b[:1], 0.7)
    assert single._Zt is None


@pytest.mark.parametrize("loss", ["multinomial", "logistic"])
def test_large_margins_leave_no_subnormal_gradients_or_curvatures(loss):
    """Rows separated by margins near 88 underflow the float32 logistic and softmax gradients and
    curvature weights into subnormal numbers (which slowed the products they enter a hundredfold):
    they come back as zeros, and the gradients equal the unflushed ones to float32 precision."""
    import deepfeat.probes.objectives as objectives
    from deepfeat.probes.objectives import flush_tiny

    x = torch.tensor([1e-40, -3e-39, 1e-31, 2e-30, -1.0, 0.0])
    assert flush_tiny(x.clone()).tolist() == [0.0, 0.0, 0.0, pytest.approx(2e-30), -1.0, 0.0]
    n, K = 8, 2
    Z = torch.zeros(n, 1)
    Z[:, 0] = torch.linspace(-1.0, 1.0, n)
    codes = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    problem = make_problem(Z, codes, None, K, loss, loss == "multinomial")
    logits = torch.tensor([[88.0, 0.0], [87.5, 0.0], [3.0, 0.0], [0.0, 1.0]] * 2)
    if loss == "logistic":
        logits = logits - logits.flip(1)  # the first output's logit -88 on rows of class 1
        logits[:, 0] = -logits[:, 0].abs()
    tiny = torch.finfo(torch.float32).tiny
    old = objectives.FLUSH
    try:
        objectives.FLUSH = False
        G_raw, h_raw, _ = problem._loss(logits.clone(), None)
    finally:
        objectives.FLUSH = old
    G, h, _ = problem._loss(logits.clone(), None)
    assert bool(((h_raw != 0) & (h_raw.abs() < tiny)).any())  # without flushing: subnormals
    for t in (G, h):
        assert not bool(((t != 0) & (t.abs() < tiny)).any())
    torch.testing.assert_close(G, G_raw, atol=1e-30, rtol=0)
    torch.testing.assert_close(h, h_raw, atol=1e-30, rtol=0)


def test_exact_newton_hessian_weights_flush_what_float32_cannot_hold(monkeypatch):
    """Exact Newton's Hessians take float64 curvature weights to float32: weights that would land
    among float32's subnormals reach the Hessian product as zeros."""
    import deepfeat.probes.exact as exact

    seen = []
    real = exact._weighted_gram
    monkeypatch.setattr(exact, "_weighted_gram", lambda Za, w, sparse: seen.append(w) or real(Za, w, sparse))
    rng = np.random.default_rng(2)
    Z = torch.as_tensor(rng.normal(size=(60, 3)))
    codes = (Z[:, 0] > 0).long().numpy()
    problem = make_problem(Z, codes, None, 1, "logistic", False)
    W = torch.tensor([[400.0, 0.0, 0.0]], dtype=torch.float64)  # margins of hundreds
    b = torch.zeros(1, dtype=torch.float64)
    exact.newton_exact(problem, 1e6, W, b, 1e-30, 1)
    tiny = torch.finfo(torch.float32).tiny
    assert seen and all(not bool(((w != 0) & (w.abs() < tiny)).any()) for w in seen)


def ref_half(Z, codes):
    """The logistic gradient in W at W = 0, b = 0: (1/N) (1/2 - t)^T Z."""
    T = torch.as_tensor(codes == 1, dtype=torch.float64)
    return ((0.5 - T)[None] @ Z.double() / len(Z)).float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_reduction_through_numpy_equals_torch_s(dtype, monkeypatch):
    """Where the gradient's G^T Z goes through NumPy's BLAS (large CPU problems of at most
    NUMPY_REDUCTION_OUTPUTS outputs), values, gradients and curvature weights equal torch's; problems
    with more outputs, or in bfloat16 (which NumPy lacks), keep torch's product."""
    import deepfeat.probes.objectives as objectives

    rng = np.random.default_rng(8)
    Z = torch.as_tensor(rng.normal(size=(300, 20)), dtype=dtype)
    codes = rng.integers(0, 2, 300)
    calls = []
    real = np.matmul
    monkeypatch.setattr(objectives.np, "matmul", lambda a, b: calls.append(a.shape) or real(a, b))
    monkeypatch.setattr(objectives, "NUMPY_REDUCTION_ENTRIES", 300 * 20)
    for loss, K, codes_k in [("logistic", 1, codes), ("squared_hinge", 3, np.eye(3, dtype=np.int64)[codes])]:
        problem = make_problem(Z, codes_k, None, K, loss, False)
        W = torch.as_tensor(rng.normal(size=(K, 20)), dtype=dtype)
        b = torch.as_tensor(rng.normal(size=K), dtype=dtype)
        monkeypatch.setattr(objectives, "NUMPY_REDUCTION", True)
        calls.clear()
        ours = problem.evaluate(W, b, 0.5)
        assert calls == [(K, 300)]
        monkeypatch.setattr(objectives, "NUMPY_REDUCTION", False)
        ref = problem.evaluate(W, b, 0.5)
        for a, r in zip(ours, ref):
            assert a.dtype == r.dtype
            torch.testing.assert_close(a, r)
    many = make_problem(Z, np.eye(4, dtype=np.int64)[rng.integers(0, 4, 300)], None, 4, "logistic", False)
    monkeypatch.setattr(objectives, "NUMPY_REDUCTION", True)
    calls.clear()
    many.evaluate(torch.zeros(4, 20, dtype=dtype), torch.zeros(4, dtype=dtype), 0.5)
    assert calls == [] and objectives.NUMPY_REDUCTION_OUTPUTS < 4
    half = make_problem(Z.to(torch.bfloat16), codes, None, 1, "logistic", False)
    zero = torch.zeros(1, 20, dtype=torch.bfloat16)
    torch.testing.assert_close(
        half.evaluate(zero, zero[:, 0], 0.5)[1].float(), ref_half(Z, codes), atol=0.05, rtol=0
    )
    assert calls == []
    assert isinstance(objectives.numpy_reduction_faster(), bool)


def test_augmented_features_carry_the_intercept_column_and_are_formed_once_per_dtype():
    Z = torch.randn(7, 3, dtype=torch.float64)
    problem = make_problem(Z, np.array([0, 1, 0, 1, 1, 0, 1]), None, 1, "logistic", False)
    Za = problem.augmented()
    assert Za.dtype == torch.float64 and Za.shape == (7, 4)
    torch.testing.assert_close(Za[:, :3], Z)
    assert bool((Za[:, 3] == 1).all())
    assert problem.augmented() is Za
    low = problem.augmented(torch.float32)
    assert low.dtype == torch.float32 and problem.augmented(torch.float32) is low
    torch.testing.assert_close(low, Za.float())
