"""2-D embeddings of a layer's features coloured by label (DeCAF, section 2.2.1 and Figure 2.1).

Features of any layer (vectors, or maps flattened channel-major) with more dimensions than
``project_dim`` (512) are first mapped to ``project_dim`` dimensions by a seeded Gaussian random
projection, which is cheap and roughly preserves the pairwise distances t-SNE depends on; t-SNE
(scikit-learn) or UMAP (the optional ``umap-learn`` package) then gives 2-D coordinates, drawn as points
coloured by their label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike

from deepfeat.analysis._inputs import as_matrix, check_finite, to_numpy
from deepfeat.errors import ConfigError, DataError
from deepfeat.report import plots as _plot
from deepfeat.validation import check_choice

EMBEDDING_METHODS = ("tsne", "umap")
PROJECT_DIM = 512


@dataclass
class Embedding:
    """2-D coordinates (n, 2) of n items, their labels (or None), and how they were obtained."""

    coords: np.ndarray
    labels: np.ndarray | None
    method: str
    input_dim: int
    projected_dim: int | None
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "input_dim": self.input_dim,
            "projected_dim": self.projected_dim,
            "params": self.params,
            "coords": self.coords.tolist(),
            "labels": None if self.labels is None else self.labels.tolist(),
        }


def _import_umap():
    try:
        import umap
    except ImportError:
        raise ConfigError(
            "method 'umap' needs the umap-learn package (pip install umap-learn); or use method='tsne'"
        ) from None
    return umap


def random_projection(X: np.ndarray, dim: int = PROJECT_DIM, random_state: int | None = 0) -> np.ndarray:
    """Seeded Gaussian random projection of (n, d) features to ``dim`` dimensions (entries N(0, 1/dim))."""
    from sklearn.random_projection import GaussianRandomProjection

    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 2:
        raise ConfigError(f"the projection dimension must be a whole number of at least 2, got {dim!r}")
    proj = GaussianRandomProjection(n_components=int(dim), random_state=random_state)
    return proj.fit_transform(np.asarray(X, dtype=np.float32)).astype(np.float32)


def embed(
    features: ArrayLike | torch.Tensor,
    labels: ArrayLike | torch.Tensor | None = None,
    *,
    method: str = "tsne",
    project_dim: int | None = PROJECT_DIM,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    max_iter: int = 1000,
    random_state: int | None = 0,
    method_params: Mapping | None = None,
) -> Embedding:
    """2-D embedding of (n, d) features (higher-rank arrays are flattened per row).

    ``method``: ``"tsne"`` or ``"umap"`` (needs umap-learn). ``project_dim``: features with more dimensions
    are randomly projected to this many first (None: never). ``perplexity`` and ``max_iter`` go to t-SNE,
    ``n_neighbors`` to UMAP, ``method_params`` to either. ``labels``: (n,) values kept for colouring.
    """
    check_choice("embedding method", method, EMBEDDING_METHODS)
    if method == "umap":
        umap = _import_umap()
    X = as_matrix(features)
    check_finite(X[:, :, None], "features")
    n = X.shape[0]
    lab = None
    if labels is not None:
        lab = to_numpy(labels)
        if lab.ndim != 1 or lab.shape[0] != n:
            raise DataError(f"labels must be a vector of {n} values (one per item), got shape {lab.shape}")
    if n < 3:
        raise DataError(f"an embedding needs at least 3 items, got {n}")
    if method == "tsne" and not 0 < perplexity < n:
        raise ConfigError(
            f"perplexity must be positive and below the number of items ({n}), got {perplexity}"
        )
    if method == "umap" and not 2 <= n_neighbors < n:
        raise ConfigError(
            f"n_neighbors must be from 2 to {n - 1} (below the number of items), got {n_neighbors}"
        )
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 250:
        raise ConfigError(
            f"max_iter must be a whole number of at least 250 (t-SNE's minimum), got {max_iter!r}"
        )
    input_dim = X.shape[1]
    projected = None
    if project_dim is not None and input_dim > project_dim:
        X = random_projection(X, project_dim, random_state)
        projected = int(project_dim)
    if not (X[:1] != X).any():  # t-SNE's PCA start is NaN there, and its Barnes-Hut code then crashes
        raise DataError(
            f"all {n} rows of the features are identical (a constant layer, or one image repeated); "
            "an embedding needs rows that differ"
        )
    extra = dict(method_params or {})
    if method == "tsne":
        from sklearn.manifold import TSNE

        options = {
            "perplexity": float(perplexity),
            "max_iter": int(max_iter),
            "init": "pca",
            "learning_rate": "auto",
            **extra,
        }
        build = TSNE
    else:
        options = {"n_neighbors": int(n_neighbors), **extra}
        build = umap.UMAP
    try:
        model = build(n_components=2, random_state=random_state, **options)
    except TypeError as exc:
        raise ConfigError(f"method_params holds an option {method} does not take: {exc}") from None
    coords = np.asarray(model.fit_transform(X), dtype=np.float64)
    if not np.isfinite(coords).all():
        raise DataError(f"{method} produced non-finite coordinates; check the features (constant rows?)")
    params = {"random_state": random_state, "project_dim": project_dim, **options}
    return Embedding(coords, lab, method, int(input_dim), projected, params)


def plot_embedding(
    embedding: Embedding,
    path: str | Path,
    *,
    class_names: Mapping | Sequence[str] | None = None,
    title: str = "",
    point_size: float = 6.0,
) -> Path:
    """Scatter plot of the 2-D coordinates, one colour per label, with a legend.

    ``class_names``: a mapping from label value to name, or a list indexed by integer labels.
    """
    if not isinstance(embedding, Embedding):
        raise ConfigError("embedding must be the Embedding returned by embed()")
    fig, ax = _plot.figure((7.5, 6.0))
    xy = embedding.coords
    if embedding.labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=point_size, color="tab:blue")
    else:
        values = np.unique(embedding.labels)
        for value, colour in zip(values, _plot.colours(len(values))):
            sel = embedding.labels == value
            ax.scatter(xy[sel, 0], xy[sel, 1], s=point_size, color=colour, label=_name(value, class_names))
        ax.legend(fontsize=7, markerscale=2, ncol=1 + len(values) // 16, loc="best", framealpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if not title:
        title = f"{embedding.method}" + (
            f" (random projection {embedding.input_dim} -> {embedding.projected_dim})"
            if embedding.projected_dim
            else ""
        )
    return _plot.save(fig, path, title)


def _name(value, class_names) -> str:
    if class_names is None:
        return str(value)
    if isinstance(class_names, Mapping):
        return str(class_names.get(value, class_names.get(str(value), value)))
    try:
        return str(class_names[int(value)])
    except (ValueError, TypeError, IndexError):
        raise ConfigError(f"class_names has no name for label {value!r}") from None
