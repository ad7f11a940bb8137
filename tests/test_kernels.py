"""The factored trace kernel against dot products of materialised gradients."""

from __future__ import annotations

import numpy as np
import pytest

from deepfeat.errors import ConfigError, DataError, UnknownNameError
from deepfeat.kernels import (
    FactoredLayout,
    explicit_gradients,
    factored_kernel,
    linear_kernel,
    self_kernel,
)


def factored_rows(n: int, layout: FactoredLayout, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, layout.row_dim)).astype(np.float32)


def explicit_by_loop(rows: np.ndarray, layout: FactoredLayout) -> np.ndarray:
    """sum_p x_p g_p^T image by image in float64, straight from the row layout."""
    out = []
    for row in rows.astype(np.float64):
        m = row.reshape(layout.d_in + layout.d_out, layout.positions)
        x, g = m[: layout.d_in], m[layout.d_in :]
        out.append((x @ g.T).ravel())
    return np.array(out)


@pytest.mark.parametrize("positions", [1, 5])
def test_factored_kernel_is_the_trace_kernel_of_explicit_gradients(positions):
    layout = FactoredLayout(7, 4, positions)
    A, B = factored_rows(9, layout, 1), factored_rows(6, layout, 2)
    GA, GB = explicit_by_loop(A, layout), explicit_by_loop(B, layout)
    np.testing.assert_allclose(explicit_gradients(A, layout), GA, rtol=1e-5, atol=1e-5)
    K = factored_kernel(A, B, layout=layout, normalize="none")
    np.testing.assert_allclose(K, GA @ GB.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(self_kernel(A, layout), (GA * GA).sum(1), rtol=1e-4)


def test_one_position_is_the_product_of_forward_and_backward_kernels():
    layout = FactoredLayout(5, 3)
    A = factored_rows(8, layout, 3)
    fw, bw = A[:, :5].astype(np.float64), A[:, 5:].astype(np.float64)
    K = factored_kernel(A, layout=layout, normalize="none")
    np.testing.assert_allclose(K, (fw @ fw.T) * (bw @ bw.T), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("positions", [1, 4])
def test_normalisations(positions):
    layout = FactoredLayout(6, 5, positions)
    A = factored_rows(7, layout, 4)
    G = explicit_by_loop(A, layout)
    unit = G / np.linalg.norm(G, axis=1, keepdims=True)
    np.testing.assert_allclose(
        factored_kernel(A, layout=layout, normalize="gradient"), unit @ unit.T, atol=1e-5
    )
    # "factors": each image's stacked forward factor and backward factor scaled to unit norm
    scaled = A.reshape(7, 11, positions).astype(np.float64).copy()
    scaled[:, :6] /= np.linalg.norm(scaled[:, :6].reshape(7, -1), axis=1)[:, None, None]
    scaled[:, 6:] /= np.linalg.norm(scaled[:, 6:].reshape(7, -1), axis=1)[:, None, None]
    Gs = explicit_by_loop(scaled.reshape(7, -1), layout)
    np.testing.assert_allclose(factored_kernel(A, layout=layout, normalize="factors"), Gs @ Gs.T, atol=1e-5)
    if positions == 1:  # one position: factor normalisation is the L2-normalised gradient
        np.testing.assert_allclose(Gs, unit, atol=1e-6)


def test_blocks_do_not_change_the_result_and_memmaps_are_read(tmp_path):
    layout = FactoredLayout(4, 3, 3)
    A = factored_rows(23, layout, 5)
    path = tmp_path / "rows.npy"
    np.save(path, A)
    mm = np.load(path, mmap_mode="r")
    whole = factored_kernel(A, layout=layout, block=64)
    for block in (1, 5, 7):
        np.testing.assert_allclose(
            factored_kernel(mm, layout=layout, block=block), whole, rtol=1e-6, atol=1e-6
        )
    rect = factored_kernel(A[:10], A[5:], layout=layout, block=4)
    np.testing.assert_allclose(rect, whole[:10, 5:], rtol=1e-6, atol=1e-6)
    assert np.allclose(whole, whole.T)


def test_linear_kernel():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(9, 5)), rng.normal(size=(4, 5))
    np.testing.assert_allclose(linear_kernel(A, B, block=2), A @ B.T, rtol=1e-5, atol=1e-5)
    An = A / np.linalg.norm(A, axis=1, keepdims=True)
    np.testing.assert_allclose(linear_kernel(A, normalize="l2"), An @ An.T, rtol=1e-5, atol=1e-5)
    with pytest.raises(UnknownNameError):
        linear_kernel(A, normalize="factors")


def test_bad_layouts():
    layout = FactoredLayout(4, 3, 2)
    with pytest.raises(DataError, match=r"\(4 \+ 3\) \* 2 = 14 columns"):
        factored_kernel(np.zeros((3, 13), np.float32), layout=layout)
    with pytest.raises(UnknownNameError, match="kernel normalisation"):
        factored_kernel(np.zeros((3, 14), np.float32), layout=layout, normalize="l1")
    with pytest.raises(ConfigError, match="would not fit"):
        explicit_gradients(np.zeros((300, 2 * 70000), np.float32), FactoredLayout(70000, 70000))


def test_layout_from_provenance():
    assert FactoredLayout.from_provenance({"d_in": 320, "d_out": 1280}, (1600, 49)) == FactoredLayout(
        320, 1280, 49
    )
    assert FactoredLayout.from_provenance({"d_in": 3, "d_out": 2}, (5, 1)).positions == 1
