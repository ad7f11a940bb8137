import pytest
import torch

from deepfeat.probes import blas


@pytest.fixture
def through_numpy(monkeypatch):
    monkeypatch.setattr(blas, "NUMPY", True)
    monkeypatch.setattr(blas, "MIN_WORK", 0)
    monkeypatch.setattr(blas, "EIGH_SIZE", 0)


def _calls(monkeypatch) -> list:
    """Records every NumPy / SciPy call that :mod:`blas` makes (through ``_threads``)."""
    calls: list = []
    real = blas._threads
    monkeypatch.setattr(blas, "_threads", lambda run: calls.append(run) or real(run))
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_products_through_numpy_equal_torch_s(dtype, through_numpy, monkeypatch):
    calls = _calls(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(70, 40, generator=gen, dtype=dtype)
    b = torch.randn(40, 30, generator=gen, dtype=dtype)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    product = blas.mm(a, b)
    assert product.dtype == dtype
    torch.testing.assert_close(product, a @ b, **tol)
    torch.testing.assert_close(blas.mm(a.t(), a), a.t() @ a, **tol)  # a transposed view
    G = blas.gram(a)
    assert G.dtype == dtype and torch.equal(G, G.t())  # exactly symmetric
    torch.testing.assert_close(G, a @ a.t(), **tol)
    assert len(calls) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eigh_through_scipy_is_an_eigendecomposition_like_torch_s(dtype, through_numpy, monkeypatch):
    calls = _calls(monkeypatch)
    a = torch.randn(50, 20, generator=torch.Generator().manual_seed(1), dtype=dtype)
    S = a.t() @ a
    lam, V = blas.eigh(S)
    assert len(calls) == 1 and lam.dtype == dtype and V.dtype == dtype
    assert bool((lam[1:] >= lam[:-1]).all())  # ascending, as torch's
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(lam, torch.linalg.eigh(S)[0], **tol)
    torch.testing.assert_close(V.t() @ V, torch.eye(20, dtype=dtype), **tol)
    torch.testing.assert_close(V @ torch.diag(lam) @ V.t(), S, **tol)


def test_torch_keeps_small_work_bfloat16_and_the_off_switch(monkeypatch):
    """Below MIN_WORK / EIGH_SIZE, for bfloat16, and with NUMPY False, torch computes it."""
    calls = _calls(monkeypatch)
    monkeypatch.setattr(blas, "NUMPY", True)
    a = torch.randn(20, 10)
    blas.mm(a, a.t())
    assert blas.gram(a) is None
    blas.eigh(a.t() @ a)
    monkeypatch.setattr(blas, "MIN_WORK", 0)
    monkeypatch.setattr(blas, "EIGH_SIZE", 0)
    half = a.to(torch.bfloat16)
    torch.testing.assert_close(blas.mm(half, half.t()), half @ half.t())
    assert blas.gram(half) is None
    monkeypatch.setattr(blas, "NUMPY", False)
    blas.mm(a, a.t())
    assert blas.gram(a) is None
    blas.eigh(a.t() @ a)
    assert calls == []


def test_numpy_runs_with_torch_s_thread_count():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        inside = blas._threads(lambda: threadpoolctl.threadpool_info())
    finally:
        torch.set_num_threads(before)
    counts = {
        lib["num_threads"]
        for lib in inside
        if lib["user_api"] == "blas" and lib["internal_api"] == "openblas"
    }
    assert counts == {1}


def test_the_measured_choice_is_a_bool_taken_once():
    first = blas.numpy_faster()
    assert isinstance(first, bool)
    assert blas.numpy_faster() is first
