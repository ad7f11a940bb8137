"""Fisher vectors of conv-map descriptors as a scikit-learn transformer: :class:`FisherEncoder`.

At most ``max_descriptors`` of an image's descriptors are used: a random subset that depends only on
``random_state`` and the image's own descriptors, so an image is encoded the same way whatever batch or
split it is in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher._common import (
    check_convention,
    check_dtype,
    check_layer_shape,
    check_power,
    check_random_state,
    chunk_rows_for,
)
from deepfeat.features.fisher.descriptors import (
    DescriptorPCA,
    _to_tensor,
    as_descriptor_sets,
    check_finite_sets,
    conv_descriptors,
    subsample_descriptors,
)
from deepfeat.features.fisher.encoding import centred_params, encode_sets, fisher_dim, working_dtype
from deepfeat.features.fisher.gmm import DiagonalGMM
from deepfeat.validation import check_bool, check_device, check_float, check_int

log = logging.getLogger(__name__)

#: Descriptor rows read, converted and projected together (a group of images; bounds the copies).
SOURCE_ROWS = 1 << 16

__all__ = ["FisherEncoder"]


class _Source:
    """Images of ``X`` in chunks, as CPU descriptor sets: dense (b, T, C) tensors or lists."""

    def __init__(self, X, layer_shape):
        self.shape = check_layer_shape(layer_shape)
        if sparse.issparse(X):
            raise DataError(
                "X is a sparse matrix; FisherEncoder takes dense conv maps or descriptors (X.toarray())"
            )
        if isinstance(X, (list, tuple)):
            self.kind = "list"
            self.sets = as_descriptor_sets(X, "X")
            self.n, self.dim = len(self.sets), int(self.sets[0].shape[1])
            self.counts = np.array([len(s) for s in self.sets])
            return
        arr = X if hasattr(X, "shape") else np.asarray(X)
        self.arr = arr
        ndim = len(arr.shape)
        if ndim == 2:
            if self.shape is None:
                raise DataError(
                    f"X has flat rows of {arr.shape[1]} values; pass layer_shape=(C, H, W) to read them "
                    "as conv maps (or give (n, C, H, W) maps, (n, T, D) descriptors or a list of (T_i, D) "
                    "arrays)"
                )
            if arr.shape[1] != math.prod(self.shape):
                raise DataError(
                    f"X rows have {arr.shape[1]} values but layer_shape {self.shape} holds "
                    f"{math.prod(self.shape)}; give the (C, H, W) of the layer the rows come from"
                )
            self.kind, (c, h, w) = "rows", self.shape
            self.dim, t = c, h * w
        elif ndim == 4:
            if self.shape is not None and tuple(arr.shape[1:]) != self.shape:
                raise DataError(f"X maps have shape {tuple(arr.shape[1:])} but layer_shape is {self.shape}")
            self.kind, self.dim, t = "maps", int(arr.shape[1]), int(arr.shape[2] * arr.shape[3])
        elif ndim == 3:
            self.kind, self.dim, t = "dense", int(arr.shape[2]), int(arr.shape[1])
        else:
            raise DataError(
                f"X must be flat conv-map rows (with layer_shape), (n, C, H, W) maps, (n, T, D) descriptors "
                f"or a list of (T_i, D) arrays; got shape {tuple(arr.shape)}"
            )
        self.n = int(arr.shape[0])
        if self.n == 0 or t == 0 or self.dim == 0:
            raise DataError(f"X holds no descriptors (shape {tuple(arr.shape)})")
        self.counts = np.full(self.n, t)

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, int]]:
        if self.kind == "list":
            i0 = 0
            while i0 < self.n:
                i1, rows = i0, 0
                while i1 < self.n and (i1 == i0 or rows + self.counts[i1] <= chunk_rows):
                    rows += self.counts[i1]
                    i1 += 1
                yield i0, i1
                i0 = i1
            return
        step = max(1, chunk_rows // int(self.counts[0]))
        for i0 in range(0, self.n, step):
            yield i0, min(self.n, i0 + step)

    def get(self, i0: int, i1: int, check: bool = True):
        """Descriptor sets of images i0..i1-1; ``check``: raise for NaN or infinite values now."""
        if self.kind == "list":
            sets = self.sets[i0:i1]
        else:
            x = _to_tensor(self.arr[i0:i1], "X")
            if self.kind != "dense":
                x = conv_descriptors(x, self.shape if self.kind == "rows" else None)
            sets = x
        if check:
            check_finite_sets(sets, "X", offset=i0)
        return sets


class FisherEncoder(TransformerMixin, BaseEstimator):
    """Fisher vectors of conv-map descriptors (or of any descriptor sets) as a scikit-learn transformer.

    ``fit`` draws at most ``max_descriptors`` descriptors per training image, then ``fit_sample`` of
    them uniformly at random, fits a PCA to ``pca_dim`` dimensions (None: no PCA) and a diagonal GMM of
    ``n_components`` by EM; ``transform`` encodes every image (again at most ``max_descriptors``
    descriptors) into a float32 Fisher vector of (2 pca_dim + 1) n_components values.

    X: flat rows of unrolled conv maps (n, C*H*W) with ``layer_shape=(C, H, W)``, (n, C, H, W) maps, a
    dense (n, T, D) array of descriptor sets or a list of (T_i, D) arrays. Its estimator tags declare
    3-D input, and 2-D input only when ``layer_shape`` is set; ``get_feature_names_out`` names the
    Fisher-vector entries.

    Parameters
    ----------
    n_components: GMM components K.
    pca_dim: PCA dimension D (<= the descriptor dimension), or None for no PCA.
    whiten: divide the PCA axes by their standard deviations.
    max_descriptors: descriptors used per image (a random subset beyond that).
    fit_sample: descriptors the PCA and GMM are fitted on (drawn from all training images).
    power: signed-power normalisation exponent alpha in (0, 1], or None.
    l2: L2-normalise the Fisher vectors.
    layer_shape: (C, H, W) of flat rows.
    convention: ``"paper"`` (eqs. 2-4) or ``"skimage"`` (see :mod:`deepfeat.features.fisher.encoding`).
    tol, max_iter: EM convergence (relative log-likelihood change) and iteration limit.
    dtype: ``"float32"`` or ``"float64"`` for the encoding arithmetic (the output is float32).
    random_state: seed of the descriptor draws and of the k-means++ start.
    device: ``"cpu"`` or ``"cuda"``.
    progress: show progress bars.
    """

    def __init__(
        self,
        n_components: int = 32,
        pca_dim: int | None = 64,
        whiten: bool = False,
        max_descriptors: int = 10_000,
        fit_sample: int = 50_000,
        power: float | None = 0.5,
        l2: bool = True,
        layer_shape: tuple[int, int, int] | None = None,
        convention: str = "paper",
        tol: float = 1e-6,
        max_iter: int = 300,
        dtype: str = "float32",
        random_state: int | None = 0,
        device: str = "cpu",
        progress: bool = False,
    ):
        self.n_components = n_components
        self.pca_dim = pca_dim
        self.whiten = whiten
        self.max_descriptors = max_descriptors
        self.fit_sample = fit_sample
        self.power = power
        self.l2 = l2
        self.layer_shape = layer_shape
        self.convention = convention
        self.tol = tol
        self.max_iter = max_iter
        self.dtype = dtype
        self.random_state = random_state
        self.device = device
        self.progress = progress

    def _validate_params(self) -> torch.device:
        check_int("n_components", self.n_components, 1)
        if self.pca_dim is not None:
            check_int("pca_dim", self.pca_dim, 1)
        check_int("max_descriptors", self.max_descriptors, 1)
        check_int("fit_sample", self.fit_sample, 1)
        check_int("max_iter", self.max_iter, 1)
        check_power(self.power)
        check_convention(self.convention)
        check_random_state(self.random_state)
        check_layer_shape(self.layer_shape)
        for name in ("whiten", "l2", "progress"):
            check_bool(name, getattr(self, name))
        check_dtype(self.dtype)
        check_float("tol", self.tol, 0, low_open=True)
        if self.fit_sample < self.n_components:
            raise ConfigError(
                f"fit_sample={self.fit_sample} is smaller than n_components={self.n_components}; "
                "the GMM needs at least one descriptor per component"
            )
        return check_device(self.device)

    def _capped(self, sets):
        return subsample_descriptors(sets, int(self.max_descriptors), self.random_state)

    def fit(self, X: Any, y: ArrayLike | None = None) -> FisherEncoder:
        """Fit the PCA and the GMM on the descriptors of the training images ``X`` (``y`` is ignored)."""
        device = self._validate_params()
        k, max_desc = int(self.n_components), int(self.max_descriptors)
        pca_dim = None if self.pca_dim is None else int(self.pca_dim)
        src = _Source(X, self.layer_shape)
        if pca_dim is not None and pca_dim > src.dim:
            raise ConfigError(
                f"pca_dim={pca_dim} exceeds the descriptor dimension {src.dim}; "
                f"use pca_dim <= {src.dim} or None"
            )
        counts = np.minimum(src.counts, max_desc)
        total = int(counts.sum())
        if total < k:
            raise DataError(
                f"X holds {total} descriptors, too few for n_components={k}; "
                "give more images or lower n_components"
            )
        m = min(int(self.fit_sample), total)
        rng = np.random.default_rng(self.random_state)
        chosen = np.sort(rng.choice(total, size=m, replace=False)) if m < total else np.arange(total)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        rows: list[torch.Tensor] = []
        bar = tqdm(total=src.n, desc="fisher fit", unit="img", disable=not self.progress, dynamic_ncols=True)
        for i0, i1 in src.chunks(SOURCE_ROWS):
            capped = self._capped(src.get(i0, i1))
            lo, hi = np.searchsorted(chosen, [offsets[i0], offsets[i1]])
            picks = chosen[lo:hi]
            owner = np.searchsorted(offsets, picks, side="right") - 1
            for i in np.unique(owner):
                local = torch.from_numpy(picks[owner == i] - offsets[i])
                rows.append(capped[int(i) - i0][local])
            bar.update(i1 - i0)
        bar.close()
        sample = torch.cat(rows).to(device)
        if pca_dim is not None:
            self.pca_ = DescriptorPCA(pca_dim, self.whiten).fit(sample)
            sample = self.pca_.transform(sample.to(torch.float64))
        else:
            self.pca_ = None
        self.gmm_ = DiagonalGMM(
            k, tol=self.tol, max_iter=self.max_iter, random_state=self.random_state, device=str(device)
        ).fit(sample)
        self.descriptor_dim_ = src.dim
        self.dim_ = pca_dim if pca_dim is not None else src.dim
        self.n_features_out_ = fisher_dim(k, self.dim_)
        self.n_fit_descriptors_ = m
        if src.kind == "rows":
            self.n_features_in_ = int(math.prod(src.shape))
        log.info(
            "FisherEncoder: GMM of %d components on %d descriptors (dim %d), EM %d iterations",
            k,
            m,
            self.dim_,
            self.gmm_.n_iter_,
        )
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Fisher vectors (n, (2D + 1) K), float32."""
        check_is_fitted(self, "gmm_")
        device = self._validate_params()
        dtype = working_dtype(self.gmm_.params_, check_dtype(self.dtype))
        src = _Source(X, self.layer_shape)
        if src.dim != self.descriptor_dim_:
            raise DataError(
                f"X has descriptors of dimension {src.dim}, the encoder was fitted on {self.descriptor_dim_}"
            )
        params, centre = centred_params(self.gmm_.params_.to(device, dtype))
        rows = chunk_rows_for(device)
        out = np.empty((src.n, self.n_features_out_), dtype=np.float32)
        bar = tqdm(total=src.n, desc="fisher", unit="img", disable=not self.progress, dynamic_ncols=True)
        with torch.no_grad():
            for i0, i1 in src.chunks(SOURCE_ROWS):
                raw = self._capped(src.get(i0, i1, check=False))  # non-finite values: found from the output
                fv = encode_sets(
                    self._project(raw, device, dtype, centre),
                    params,
                    None if self.pca_ else centre,
                    convention=self.convention,
                    power=self.power,
                    l2=self.l2,
                    chunk_rows=rows,
                    name="X",
                    raw=raw,
                    offset=i0,
                )
                out[i0:i1] = fv.float().cpu().numpy()
                bar.update(i1 - i0)
        bar.close()
        return out

    def _project(self, sets, device, dtype, centre=None):
        """PCA-projected sets minus ``centre`` (with PCA; without, the sets as they are)."""

        def one(x):
            x = x.to(device=device, dtype=dtype)
            return x if self.pca_ is None else self.pca_.transform(x, centre)

        return one(sets) if isinstance(sets, torch.Tensor) else [one(s) for s in sets]

    def descriptors(self, X: Any) -> torch.Tensor | list[torch.Tensor]:
        """The (sampled, PCA-projected) descriptor sets the encoder turns into Fisher vectors: a dense
        (n, T, D) tensor or a list of (T_i, D) tensors, float64 on the CPU."""
        check_is_fitted(self, "gmm_")
        src = _Source(X, self.layer_shape)
        parts = []
        for i0, i1 in src.chunks(SOURCE_ROWS):
            parts.append(self._project(self._capped(src.get(i0, i1)), "cpu", torch.float64))
        if all(isinstance(p, torch.Tensor) for p in parts) and len({p.shape[1] for p in parts}) == 1:
            return torch.cat(parts)
        return [s for p in parts for s in (list(p) if isinstance(p, torch.Tensor) else p)]

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> np.ndarray:
        """Names of the Fisher-vector entries, in their order: ``fisherencoder_w_k{k}`` (K weight
        entries), ``fisherencoder_mu_k{k}_d{d}`` and ``fisherencoder_sigma2_k{k}_d{d}`` (K x D each,
        component-major; d counts PCA axes when there is a PCA). ``input_features`` is only checked
        for its length against ``n_features_in_`` (flat rows)."""
        check_is_fitted(self, "gmm_")
        n_in = getattr(self, "n_features_in_", None)
        if input_features is not None and n_in is not None and len(input_features) != n_in:
            raise ConfigError(
                f"input_features has {len(input_features)} names, the encoder was fitted on {n_in} features"
            )
        k, d = self.gmm_.params_.n_components, int(self.dim_)  # fitted, not current, parameters
        names = [f"fisherencoder_w_k{i}" for i in range(k)]
        for part in ("mu", "sigma2"):
            names += [f"fisherencoder_{part}_k{i}_d{j}" for i in range(k) for j in range(d)]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        """Input: 3-D descriptor sets (n, T, D) always, 2-D flat conv-map rows only with
        ``layer_shape`` (4-D maps and lists of sets are accepted too, beyond what tags can say); no
        NaN; output always float32; fitting required."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = self.layer_shape is not None
        tags.input_tags.three_d_array = True
        tags.input_tags.allow_nan = False
        tags.requires_fit = True
        tags.non_deterministic = self.random_state is None
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
