"""Representational similarity between layers and between networks, on features of the same images.

Linear CKA (centred kernel alignment with linear kernels). With X (n, p) and Y (n, q) the two feature
matrices of the same n images, columns centred, and K = X X^T, L = Y Y^T:

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),    HSIC(K, L) = tr(K H L H) / (n - 1)^2

which for linear kernels is ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F). The debiased variant replaces
HSIC by its unbiased estimator (the diagonals of K and L set to 0, K~ and L~):

    HSIC_u = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n - 1)(n - 2)) - 2 / (n - 2) 1^T K~ L~ 1] / (n (n - 3))

which removes the upward bias of plain CKA when features have many dimensions relative to images
(plain CKA of two independent random representations is far from 0 then; debiased CKA is near 0).
Both are computed from p x q products or from n x n Gram matrices, whichever is smaller, in float64.

RSA (representational similarity analysis): each representation gives a representational
dissimilarity matrix (RDM), the correlation distance 1 - r(x_i, x_j) between every pair of images;
two representations are compared by the Spearman (default) or Pearson correlation of the upper
triangles of their RDMs. An RDM has n (n - 1) / 2 entries, so at most ``max_items`` images (a seeded
subset) are used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from deepfeat.analysis._inputs import as_matrix
from deepfeat.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from deepfeat.data.source import DataSource, as_dataset
from deepfeat.errors import ConfigError, DataError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract
from deepfeat.features.store import FeatureStore
from deepfeat.report import plots as _plot
from deepfeat.validation import as_names, check_choice, check_int

METHODS = ("cka", "cka-debiased", "rsa-spearman", "rsa-pearson")
MAX_ITEMS = 2000


def _centred(X: ArrayLike, name: str) -> np.ndarray:
    arr = as_matrix(X, name).astype(np.float64)
    if not np.isfinite(arr).all():
        raise DataError(f"{name} hold NaN or infinite values; use the valid rows only")
    return arr - arr.mean(axis=0, keepdims=True)


def _pair(X: ArrayLike, Y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    A, B = _centred(X, "X"), _centred(Y, "Y")
    if A.shape[0] != B.shape[0]:
        raise DataError(f"X and Y must hold the same images (rows): {A.shape[0]} vs {B.shape[0]}")
    return A, B


def _cross(A: np.ndarray, B: np.ndarray) -> float:
    """||B^T A||_F^2 = tr(A A^T B B^T), by whichever product is smaller."""
    n, p, q = A.shape[0], A.shape[1], B.shape[1]
    if p * q <= n * n:
        return float(np.square(B.T @ A).sum())
    return float(((A @ A.T) * (B @ B.T)).sum())


def _unbiased_hsic(A: np.ndarray, B: np.ndarray) -> float:
    """HSIC_u of the linear kernels of A and B (module docstring), from row sums, without n x n."""
    n = A.shape[0]
    a2, b2 = np.square(A).sum(axis=1), np.square(B).sum(axis=1)  # diagonals of K and L
    trace = _cross(A, B) - float(a2 @ b2)
    ka = A @ A.sum(axis=0) - a2  # K~ 1
    lb = B @ B.sum(axis=0) - b2  # L~ 1
    total = trace + ka.sum() * lb.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(ka @ lb)
    return total / (n * (n - 3))


def linear_cka(X: ArrayLike, Y: ArrayLike, *, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same images (rows), plain or debiased."""
    A, B = _pair(X, Y)
    n = A.shape[0]
    if debiased:
        if n < 4:
            raise DataError(f"debiased CKA needs at least 4 images, got {n}")
        xy, xx, yy = _unbiased_hsic(A, B), _unbiased_hsic(A, A), _unbiased_hsic(B, B)
    else:
        if n < 2:
            raise DataError(f"CKA needs at least 2 images, got {n}")
        xy, xx, yy = _cross(A, B), _cross(A, A), _cross(B, B)
    if xx <= 0 or yy <= 0:
        raise DataError("a representation is constant over the images (zero variance); CKA is undefined")
    return float(xy / np.sqrt(xx * yy))


def rdm(X: ArrayLike) -> np.ndarray:
    """Correlation distances 1 - r(x_i, x_j) between the rows of X, condensed (upper triangle, row by
    row, as scipy's ``pdist`` orders it)."""
    Z = as_matrix(X, "X").astype(np.float64)
    Z = Z - Z.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError("an image has a constant feature vector; its correlation distance is undefined")
    Z /= norms
    i, j = np.triu_indices(Z.shape[0], k=1)
    return (1.0 - Z @ Z.T)[i, j]


def rsa(X: ArrayLike, Y: ArrayLike, *, method: str = "spearman") -> float:
    """Spearman or Pearson correlation between the RDMs of two representations of the same images."""
    check_choice("RSA correlation", method, ("spearman", "pearson"))
    a, b = rdm(X), rdm(Y)
    if a.shape != b.shape:
        raise DataError("X and Y must hold the same images (rows)")
    if a.size < 2:
        raise DataError("RSA needs at least 3 images")
    if method == "spearman":
        from scipy.stats import rankdata

        a, b = rankdata(a), rankdata(b)
    return float(np.corrcoef(a, b)[0, 1])


def similarity(X: ArrayLike, Y: ArrayLike, method: str = "cka") -> float:
    """One of :data:`METHODS` between two representations of the same images."""
    check_choice("similarity method", method, METHODS)
    if method.startswith("cka"):
        return linear_cka(X, Y, debiased=method == "cka-debiased")
    return rsa(X, Y, method=method.split("-")[1])


@dataclass
class SimilarityMatrix:
    """Pairwise similarities of named representations (one matrix per method)."""

    names: list[str]
    matrices: dict[str, np.ndarray]
    n_items: int
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "names": self.names,
            "n_items": self.n_items,
            "params": self.params,
            "matrices": {m: v.tolist() for m, v in self.matrices.items()},
        }


def similarity_matrix(
    representations: Mapping[str, ArrayLike],
    methods: Sequence[str] = ("cka",),
    *,
    max_items: int | None = MAX_ITEMS,
    random_state: int = 0,
) -> SimilarityMatrix:
    """Every pair of ``representations`` ({name: (n, d) features of the same n images}) under every
    method; RSA uses at most ``max_items`` images (a seeded subset; None: all)."""
    methods = [check_choice("similarity method", m, METHODS) for m in methods]
    if not methods:
        raise ConfigError("methods names nothing; valid: " + ", ".join(METHODS))
    names = list(representations)
    if len(names) < 2:
        raise ConfigError("similarity needs at least two representations (layers or networks)")
    mats = {name: as_matrix(representations[name], name) for name in names}
    n = {m.shape[0] for m in mats.values()}
    if len(n) != 1:
        raise DataError(f"representations cover different numbers of images: {sorted(n)}")
    n_items = n.pop()
    subset = np.arange(n_items)
    if max_items is not None and n_items > check_int("max_items", max_items, minimum=3):
        subset = np.sort(np.random.default_rng(random_state).choice(n_items, max_items, replace=False))
    out = {}
    for method in methods:
        rows = subset if method.startswith("rsa") else slice(None)
        matrix = np.eye(len(names))
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                value = similarity(mats[names[a]][rows], mats[names[b]][rows], method)
                matrix[a, b] = matrix[b, a] = value
        out[method] = matrix
    params = {
        "methods": methods,
        "max_items": max_items,
        "random_state": random_state,
        "rsa_items": len(subset),
    }
    return SimilarityMatrix(names, out, n_items, params)


def layer_representations(
    data: DataSource,
    layers: Sequence[str],
    *,
    backbones: Sequence[Backbone | str] = (DEFAULT_BACKBONE,),
    weights: Sequence[str | None] | None = None,
    pool: str = "avg",
    store: FeatureStore | str | os.PathLike | None = None,
    preprocess: str = "backbone",
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict]:
    """Features of ``layers`` of every backbone (each layer name is looked up in each backbone; one
    no backbone has is an error), pooled by ``pool``, through the store; rows of the images valid in
    every representation. Returns ({"<backbone>/<layer>" or "<layer>": features}, provenance)."""
    dataset = as_dataset(data)
    weights = list(weights) if weights is not None else [None] * len(backbones)
    if len(weights) != len(backbones):
        raise ConfigError(f"{len(weights)} weights for {len(backbones)} backbones; give one per backbone")
    nets = [b if isinstance(b, Backbone) else load_backbone(b, weights=w) for b, w in zip(backbones, weights)]
    wanted = as_names(layers, "layers")
    for layer in wanted:
        if not any(layer in net.catalog for net in nets):
            nets[0].catalog.get(layer)  # the error lists the valid names
    store = store if store is None or isinstance(store, FeatureStore) else FeatureStore(store)
    sets, provenance = {}, {"data": dataset.name, "dataset_fingerprint": dataset.fingerprint(), "pool": pool}
    for net in nets:
        mine = [layer for layer in wanted if layer in net.catalog]
        if not mine:
            continue
        result = extract(
            dataset,
            net,
            [LayerActivations(mine, [pool])],
            store=store,
            preprocess=preprocess,
            progress=progress,
        )
        for key, fs in result.features.items():
            name = key.split("/")[0] if len(nets) == 1 else f"{net.name}/{key.split('/')[0]}"
            sets[name] = fs
        provenance.setdefault("backbones", {})[net.name] = {
            **net.provenance(),
            "layers": mine,
            "failures": [list(f) for f in result.failures],
        }
    common = set.intersection(*(set(fs.ids) for fs in sets.values()))
    if len(common) < 4:
        raise DataError(f"{dataset.name}: only {len(common)} images have features in every representation")
    out = {}
    for name, fs in sets.items():
        keep = np.asarray([item in common for item in fs.ids])
        out[name] = np.asarray(fs.features)[keep]
    provenance["n_images"] = len(common)
    return out, provenance


def plot_similarity(result: SimilarityMatrix, path: str | os.PathLike, title: str = "") -> Path:
    """One heatmap per method, values written in the cells."""
    methods = list(result.matrices)
    k = len(result.names)
    side = max(3.6, 0.55 * k + 2.2)
    fig, axes = _plot.grid(len(methods), ncols=min(2, len(methods)), size=(side + 0.8, side))
    for ax, method in zip(axes, methods):
        matrix = result.matrices[method]
        low = min(0.0, float(np.nanmin(matrix)))
        shown = ax.imshow(matrix, cmap="viridis", vmin=low, vmax=1.0)
        ax.set_xticks(range(k), result.names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), result.names, fontsize=8)
        if k <= 16:
            for a in range(k):
                for b in range(k):
                    colour = "white" if matrix[a, b] < (low + 1.0) / 2 else "black"
                    ax.text(b, a, f"{matrix[a, b]:.2f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_title(method)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    return _plot.save(fig, path, title or f"representational similarity ({result.n_items} images)")
