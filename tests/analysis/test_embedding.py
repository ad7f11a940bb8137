"""2-D embeddings: finite, seeded, class structure kept, random projection above 512 dims, PNG."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from deepfeat.analysis import embed, plot_embedding, random_projection
from deepfeat.errors import ConfigError, DataError

PNG = b"\x89PNG\r\n\x1a\n"


def blobs(n_per: int = 25, d: int = 20, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(k, d))
    y = np.repeat(np.arange(k), n_per)
    return (centres[y] + rng.normal(size=(len(y), d))).astype(np.float32), y


def knn_accuracy(coords: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy in the embedding."""
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(y[d.argmin(1)] == y))


def test_tsne_gives_finite_coordinates_that_keep_the_classes(tmp_path):
    x, y = blobs()
    emb = embed(x, y, perplexity=10, max_iter=300)
    assert emb.coords.shape == (75, 2)
    assert np.isfinite(emb.coords).all()
    assert emb.projected_dim is None and emb.input_dim == 20
    assert knn_accuracy(emb.coords, y) > 0.95
    path = plot_embedding(emb, tmp_path / "tsne.png", class_names=["cat", "dog", "cow"])
    assert path.read_bytes().startswith(PNG)
    again = embed(x, y, perplexity=10, max_iter=300)
    np.testing.assert_array_equal(emb.coords, again.coords)  # same random_state, same coordinates


def test_wide_features_are_randomly_projected_to_512(tmp_path):
    x, y = blobs(n_per=15, d=700)
    maps = x.reshape(45, 7, 10, 10)  # maps are flattened per image
    emb = embed(maps, y, perplexity=8, max_iter=250, random_state=3)
    assert emb.input_dim == 700 and emb.projected_dim == 512
    assert np.isfinite(emb.coords).all()
    assert plot_embedding(emb, tmp_path / "p.png").exists()
    p1, p2 = random_projection(x, 512, random_state=3), random_projection(x, 512, random_state=3)
    np.testing.assert_array_equal(p1, p2)
    assert p1.shape == (45, 512)
    # distances are roughly kept (Johnson-Lindenstrauss)
    d0 = np.linalg.norm(x[0] - x[20])
    assert np.linalg.norm(p1[0] - p1[20]) == pytest.approx(d0, rel=0.25)
    plain = embed(x, y, perplexity=8, max_iter=250, project_dim=None)
    assert plain.projected_dim is None


def test_without_labels_and_string_labels(tmp_path):
    x, y = blobs(n_per=10)
    emb = embed(x, perplexity=5, max_iter=250)
    assert emb.labels is None
    assert plot_embedding(emb, tmp_path / "plain.png").exists()
    named = embed(x, np.array(["a", "b", "c"])[y], perplexity=5, max_iter=250)
    assert plot_embedding(named, tmp_path / "named.png", class_names={"a": "ants"}).exists()


@pytest.mark.skipif(
    importlib.util.find_spec("umap") is None, reason="umap-learn is not installed (umap extra)"
)
def test_umap_gives_finite_coordinates_that_keep_the_classes(tmp_path):
    x, y = blobs()
    emb = embed(x, y, method="umap", n_neighbors=10)
    assert emb.method == "umap" and emb.coords.shape == (75, 2) and np.isfinite(emb.coords).all()
    assert emb.params["n_neighbors"] == 10 and knn_accuracy(emb.coords, y) > 0.95
    assert plot_embedding(emb, tmp_path / "umap.png").read_bytes().startswith(PNG)
    with pytest.raises(ConfigError, match="n_neighbors"):
        embed(x, y, method="umap", n_neighbors=75)


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap-learn is installed")
def test_umap_without_the_package_is_a_clear_error():
    x, y = blobs(n_per=10)
    with pytest.raises(ConfigError, match="umap-learn"):
        embed(x, y, method="umap")


def test_validation():
    x, y = blobs(n_per=5)
    with pytest.raises(ConfigError, match="perplexity"):
        embed(x, y, perplexity=15)
    with pytest.raises(ConfigError, match="valid: tsne, umap"):
        embed(x, y, method="pca")
    with pytest.raises(DataError, match="labels must be a vector of 15"):
        embed(x, y[:10], perplexity=5)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        embed(bad, y, perplexity=5)
    with pytest.raises(ConfigError, match="at least 2"):
        random_projection(x, 1)
    with pytest.raises(ConfigError, match="method_params"):
        embed(x, y, perplexity=5, max_iter=250, method_params={"colour": 1})


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_identical_rows_are_refused_before_tsne_crashes_the_process(value):
    # scikit-learn's t-SNE starts from NaN on identical rows and its Barnes-Hut code segfaults
    x = np.full((20, 5), value, dtype=np.float32)
    with pytest.raises(DataError, match="all 20 rows of the features are identical"):
        embed(x, np.arange(20) % 2, perplexity=5)
    wide = np.ones((20, 600), dtype=np.float32)  # identical after the random projection too
    with pytest.raises(DataError, match="identical"):
        embed(wide, perplexity=5)
    x[3, 1] += 1.0  # one differing row is enough
    assert np.isfinite(embed(x, perplexity=5, max_iter=250).coords).all()
