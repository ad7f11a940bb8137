"""The training features' basis (an exact reparametrisation) and the prepared features' Gram blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.errors import ConfigError
from deepfeat.probes.basis import GRAM_BLOCK_ROWS, Basis, PreparedFeatures, gram_matrix


def features(n, d, seed=0, offset=20.0):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(np.maximum(rng.normal(size=(n, d)), 0) + offset, dtype=torch.float64)


@pytest.mark.parametrize(("n", "d", "factor"), [(50, 8, "eigh"), (8, 50, "eigh"), (8, 50, "cholesky")])
def test_basis_is_an_exact_reparametrisation(n, d, factor):
    X = features(n, d)
    basis = Basis.of(X, factor=factor)
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


def ill_conditioned_rows(n=80, d=300, seed=6):
    """float32 rows whose centred Gram matrix has eigenvalues down to 1e-7 of the largest."""
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.normal(size=(n, n - 1)))[0]
    V = np.linalg.qr(rng.normal(size=(d, n - 1)))[0]
    return (U @ np.diag(10 ** -np.linspace(0, 3.5, n - 1)) @ V.T + 3.0).astype(np.float32), U


@pytest.mark.parametrize("factor", ["eigh", "cholesky"])
def test_fewer_rows_than_dimensions_give_an_orthonormal_basis_from_float32_rows(factor):
    """The n x n factorisation in float64 from the Gram matrix up: with a float32 Gram matrix, B^T B
    was 0.12 from I on these rows (5.5e-4 on 1,200 x 1,280 EfficientNet features), so the penalty
    on the coordinates was not the penalty on the coefficients."""
    X, _ = ill_conditioned_rows()
    basis = Basis.of(torch.as_tensor(X), factor=factor)
    B = basis.B.double()
    r = B.shape[1]
    assert r in (78, 79)  # the eigendecomposition drops the direction at the threshold
    torch.testing.assert_close(B.t() @ B, torch.eye(r, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", ["cholesky", "eigh"])
def test_fewer_rows_than_dimensions_give_coordinates_and_coefficients_without_forming_the_basis(factor):
    """n < d: the rows' coordinates come with the factorisation (the Cholesky factor's rows and
    minus their sum, or A diag(mu)^1/2 from the Gram matrix's eigenpairs) and the coefficients
    through K right-hand sides, both as the basis itself gives them; it is formed only if asked."""
    X = features(8, 50)
    basis = Basis.of(X, factor=factor)
    Z = basis.own_coordinates(X)
    assert basis.coordinates is None  # handed over
    r = Z.shape[1]
    W, b = torch.randn(3, r, dtype=X.dtype), torch.randn(3, dtype=X.dtype)
    coef, intercept = basis.to_coef(W, b)
    assert basis._B is None
    assert basis.rows[0] is X  # the rows themselves, not a float64 copy of them (d x n x 8 bytes)
    torch.testing.assert_close(Z, basis.project(X), atol=1e-10, rtol=0)
    torch.testing.assert_close(coef, W @ basis.B.t(), atol=1e-10, rtol=0)
    torch.testing.assert_close(X @ coef.t() + intercept, Z @ W.t() + b)
    assert Basis.of(features(50, 8), factor=factor).coordinates is None  # d <= n: projected
    other = Basis.of(X, factor=factor)
    torch.testing.assert_close(other.own_coordinates(X + 0), Z, atol=1e-10, rtol=0)  # projected
    assert other.coordinates is not None  # still there for its own rows

    # float32 rows with eigenvalues down to 1e-7 of the largest: Z Z^T is the Gram matrix to their
    # precision (the coordinates from a float32 product over d were further off)
    X32 = torch.as_tensor(ill_conditioned_rows()[0])
    basis = Basis.of(X32, factor=factor)
    Z64 = basis.own_coordinates(X32)
    assert Z64.dtype == torch.float32
    Z64 = Z64.double()
    error = float((Z64 @ Z64.t() - basis.gram).abs().max() / basis.gram.abs().max())
    projected = basis.project(X32).double()
    assert error < 1e-6
    assert error <= float((projected @ projected.t() - basis.gram).abs().max() / basis.gram.abs().max())


def test_the_cholesky_basis_falls_back_to_the_eigendecomposition_for_dependent_rows():
    X = features(8, 50)
    X = torch.cat([X, X[:3]])  # repeated rows: the rows' Gram matrix is singular
    basis = Basis.of(X, factor="cholesky")
    assert basis.B.shape == (50, 7)
    torch.testing.assert_close(basis.B.t() @ basis.B, torch.eye(7, dtype=X.dtype), atol=1e-10, rtol=0)
    Xc = X - X.mean(0)
    torch.testing.assert_close(basis.project(X) @ basis.B.t(), Xc, atol=1e-9, rtol=0)
    with pytest.raises(ConfigError, match="factor"):
        Basis.of(X, factor="qr")


def test_prepared_gram_of_rows_is_a_block_of_one_float64_gram_matrix():
    X = features(30, 12).float()
    basis = Basis.of(X)
    prepared = PreparedFeatures(X=X, basis=basis, Z=basis.project(X))
    Z64 = prepared.Z.double()
    whole = prepared.gram_of(torch.arange(30))
    assert whole.dtype == torch.float64
    torch.testing.assert_close(whole, Z64 @ Z64.t())
    rows = torch.tensor([3, 7, 8, 20, 29])
    block = prepared.gram_of(rows)
    torch.testing.assert_close(block, Z64[rows] @ Z64[rows].t())
    assert prepared.gram_of(torch.arange(30)) is whole  # computed once, for every fold and the final fit


def test_prepared_gram_of_rows_in_float32_is_formed_in_float32_or_taken_from_float64():
    """A float32 Gram matrix is the float32 product where no float64 one exists (the squared hinge's
    float32 C search), else the float64 one converted; each is formed once."""
    X = features(30, 12).float()
    basis = Basis.of(X)
    prepared = PreparedFeatures(X=X, basis=basis, Z=basis.project(X))
    rows = torch.tensor([3, 7, 8, 20, 29])
    block = prepared.gram_of(rows, torch.float32)
    assert block.dtype == torch.float32 and set(prepared._grams) == {torch.float32}
    Z = prepared.Z
    torch.testing.assert_close(block, Z[rows] @ Z[rows].t())
    assert prepared.gram_of(torch.arange(30), torch.float32) is prepared._grams[torch.float32]
    given = (prepared.Z.double() @ prepared.Z.double().t()) + 1.0  # marks where it came from
    other = PreparedFeatures(X=X, basis=basis, Z=prepared.Z, gram=given)
    torch.testing.assert_close(other.gram_of(rows, torch.float32), given[rows][:, rows].float())


@pytest.mark.parametrize("n", [GRAM_BLOCK_ROWS - 1, GRAM_BLOCK_ROWS, 1031])
def test_gram_matrix_from_its_lower_block_triangle_is_the_product(n):
    X = torch.randn(n, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    G = gram_matrix(X)
    torch.testing.assert_close(G, X @ X.t(), atol=1e-11, rtol=0)
    assert torch.equal(G, G.t())


def test_factorisation_projection_and_gram_take_the_threads_a_small_budget_held_back(monkeypatch):
    import deepfeat.probes.base as base

    seen = []

    def recording(fn):
        def call(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(torch.linalg, "eigh", recording(torch.linalg.eigh))
    monkeypatch.setattr(torch, "mm", recording(torch.mm))
    X = torch.randn(40, 8)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with base.thread_budget(1):
            B = Basis.of(X)
            B.project(X)
            gram_matrix(X)
            small = list(seen)
            seen.clear()
            monkeypatch.setattr(base, "DENSE_WORK_PER_THREAD", 1)
            B = Basis.of(X)
            B.project(X)
            gram_matrix(X)
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert small and set(small) == {1}  # 40 x 8: too small for a second thread
    assert seen and set(seen) == {2}
