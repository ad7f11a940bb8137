"""CKA and RSA against direct implementations of their formulas and scipy; the CLI across two networks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, spearmanr
from typer.testing import CliRunner

from deepfeat.analysis.similarity import linear_cka, rdm, rsa, similarity_matrix
from deepfeat.cli.main import app
from deepfeat.errors import ConfigError, DataError


def hsic(K: np.ndarray, L: np.ndarray) -> float:
    n = len(K)
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H)) / (n - 1) ** 2


def hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    n = len(K)
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    value = np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
    return float(value - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3))


def cka_reference(X, Y, unbiased=False):
    X, Y = X - X.mean(0), Y - Y.mean(0)
    K, L = X @ X.T, Y @ Y.T
    f = hsic_unbiased if unbiased else hsic
    return f(K, L) / np.sqrt(f(K, K) * f(L, L))


@pytest.mark.parametrize("n, p, q", [(40, 12, 30), (10, 80, 120)])  # feature-space and Gram paths
def test_cka_equals_its_formula(n, p, q):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, p))
    Y = X[:, :6] @ rng.standard_normal((6, q)) + 0.5 * rng.standard_normal((n, q))
    for debiased in (False, True):
        assert linear_cka(X, Y, debiased=debiased) == pytest.approx(cka_reference(X, Y, debiased), rel=1e-9)
    assert linear_cka(X, X) == pytest.approx(1.0) and linear_cka(X, X, debiased=True) == pytest.approx(1.0)


def test_cka_invariances_and_bias():
    rng = np.random.default_rng(0)
    X, R = rng.standard_normal((50, 20)), np.linalg.qr(rng.standard_normal((20, 20)))[0]
    Y = np.tanh(X @ rng.standard_normal((20, 15)))
    assert linear_cka(X @ R * 3.0 + 1.0, Y) == pytest.approx(linear_cka(X, Y), rel=1e-9)
    A, B = rng.standard_normal((30, 2000)), rng.standard_normal((30, 2000))  # independent, wide
    assert linear_cka(A, B) > 0.8 and abs(linear_cka(A, B, debiased=True)) < 0.05


def test_rsa_equals_scipy():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((25, 10)), rng.standard_normal((25, 7))
    Y[:, :3] += X[:, :3]
    np.testing.assert_allclose(rdm(X), pdist(X, metric="correlation"), rtol=1e-10, atol=1e-12)
    assert rsa(X, Y) == pytest.approx(
        spearmanr(pdist(X, "correlation"), pdist(Y, "correlation"))[0], rel=1e-9
    )
    assert rsa(X, Y, method="pearson") == pytest.approx(
        pearsonr(pdist(X, "correlation"), pdist(Y, "correlation"))[0], rel=1e-9
    )


def test_matrix_and_refusals():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 8))
    reps = {"a": X, "b": X @ rng.standard_normal((8, 5)), "c": rng.standard_normal((60, 4))}
    result = similarity_matrix(reps, ["cka", "rsa-pearson"], max_items=20)
    for m in result.matrices.values():
        assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1.0)
    assert result.params["rsa_items"] == 20 and result.matrices["cka"][0, 1] > result.matrices["cka"][0, 2]
    with pytest.raises(ConfigError, match="similarity method"):
        similarity_matrix(reps, ["cca"])
    with pytest.raises(DataError, match="same images"):
        linear_cka(X, X[:10])
    with pytest.raises(DataError, match="constant"):
        linear_cka(X, np.ones((60, 3)))


def test_cli_across_two_networks(image_tree, tmp_path):
    out = tmp_path / "sim"
    args = ["analyze", "similarity", str(image_tree), "--layers", "stage2,pool", "--out", str(out)]
    args += ["--backbones", "timm:test_resnet,timm:test_vit", "--weights", "random,random"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "similarity.json").read_text())
    names = doc["result"]["names"]
    assert names == [
        "timm:test_resnet/stage2",
        "timm:test_resnet/pool",
        "timm:test_vit/stage2",
        "timm:test_vit/pool",
    ]
    matrix = np.array(doc["result"]["matrices"]["cka"])
    assert matrix.shape == (4, 4) and np.allclose(np.diag(matrix), 1.0) and doc["kind"] == "analysis"
    assert doc["provenance"]["n_images"] == 12 and (out / "similarity_heatmap.png").stat().st_size > 1000
    bad = CliRunner().invoke(
        app, ["analyze", "similarity", str(image_tree), "--layers", "fc99", "--out", str(out)]
    )
    assert bad.exit_code == 2 and "unknown layer 'fc99'" in bad.output
