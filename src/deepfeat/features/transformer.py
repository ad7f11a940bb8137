"""FeatureExtractor: DeCAF-style layer features as a scikit-learn transformer over images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, TransformerMixin

from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.registry import DEFAULT_BACKBONE, load_backbone
from deepfeat.data.datasets import ArrayDataset, ImageDataset, dataset_from_paths
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.data.transforms import Preprocess, preset
from deepfeat.errors import ConfigError, DataError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import ON_ERROR, Extraction, extract
from deepfeat.validation import check_choice, check_int


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """scikit-learn transformer from images to DeCAF-style layer features.

    Parameters
    ----------
    backbone: backbone name (see ``list_backbones``) or a loaded :class:`Backbone`.
    layers: layer names, a list (``["stage6", "pool"]``) or one name.
    pool: pooling / ablation, one or several (avg, max, unroll, sp-shuffle, bin, sp-max-bin).
    weights: weights file for the backbone (None: its default).
    preprocess: ``"backbone"``, ``"decaf"``, ``"interactive"``, ``"warp"`` or a :class:`Preprocess`.
    store: folder of a FeatureStore (None: keep features in memory only).
    batch_size, workers: images per forward pass, and decoding threads.
    on_error: ``"skip"`` or ``"fail"`` for images that cannot be decoded.
    random_state: seed of the sp-shuffle ablation.
    progress: show a progress bar.

    ``transform(X)`` takes an ImageDataset, image paths (a list, a 1-D array or a pandas Series) or a
    uint8 image array (N, H, W) or (N, H, W, 3|4) and returns the features of all requested layers
    side by side (n_images, total_dim); ``extract(dataset)`` returns them per layer.
    """

    def __init__(
        self,
        backbone: str | Backbone = DEFAULT_BACKBONE,
        layers: Sequence[str] = ("pool",),
        pool: Sequence[str] = ("avg",),
        *,
        weights: str | None = None,
        preprocess: str | Preprocess = "backbone",
        store: str | Path | None = None,
        batch_size: int = 32,
        workers: int = 2,
        on_error: str = "skip",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        random_state: int = 0,
        progress: bool = False,
    ):
        self.backbone = backbone
        self.layers = layers
        self.pool = pool
        self.weights = weights
        self.preprocess = preprocess
        self.store = store
        self.batch_size = batch_size
        self.workers = workers
        self.on_error = on_error
        self.max_pixels = max_pixels
        self.random_state = random_state
        self.progress = progress

    def fit(self, X: Any = None, y: ArrayLike | None = None) -> FeatureExtractor:
        """Load the backbone and validate every parameter (no learning happens)."""
        if self.on_error not in ON_ERROR:
            check_choice("on_error", self.on_error, ON_ERROR)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("workers", self.workers, minimum=0)
        check_int("max_pixels", self.max_pixels, minimum=1)
        if isinstance(self.backbone, Backbone):
            self.backbone_ = self.backbone
        else:
            self.backbone_ = load_backbone(self.backbone, weights=self.weights)
        self.method_ = LayerActivations(self.layers, self.pool, random_state=self.random_state)
        self.outputs_ = self.method_.outputs(self.backbone_)
        if isinstance(self.preprocess, str):
            preset(self.preprocess, self.backbone_.preprocess)
        self.output_dims_ = {}
        self.fitted_params_ = self.get_params(deep=False)
        return self

    def _params_changed(self) -> bool:
        """Whether the parameters differ from those of the last fit (or there was none)."""
        fitted = getattr(self, "fitted_params_", None)
        return fitted is None or any(not _same(v, fitted[k]) for k, v in self.get_params(deep=False).items())

    def extract(self, dataset: ImageDataset) -> Extraction:
        """Features of every requested layer and pooling for ``dataset`` (fitted first where the
        parameters changed since the last fit: set_params after fit takes effect)."""
        if self._params_changed():
            self.fit()
        return extract(
            dataset,
            self.backbone_,
            [self.method_],
            store=self.store,
            preprocess=self.preprocess,
            batch_size=self.batch_size,
            on_error=self.on_error,
            max_pixels=self.max_pixels,
            workers=self.workers,
            progress=self.progress,
        )

    def transform(self, X: Any) -> np.ndarray:
        """Features of ``X`` (an ImageDataset, image paths: a list, a 1-D array or a Series, or a uint8
        image array), layers side by side."""
        dataset = _as_images(X)
        result = self.extract(dataset)
        if result.failures:
            path, reason = result.failures[0]
            raise DataError(f"{path}: {reason} (transform needs every image; use extract() to skip bad ones)")
        blocks = [np.asarray(result.features[s.key].features) for s in self.outputs_]
        self.output_dims_ = {s.key: b.shape[1] for s, b in zip(self.outputs_, blocks)}
        return np.hstack(blocks)

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> np.ndarray:
        """``<layer>/<pooling>_<i>`` for every column of :meth:`transform`'s output. Pooled outputs have
        one column per channel; unrolled maps depend on the input size and are known after a transform."""
        if self._params_changed():
            self.fit()
        names = []
        for spec in self.outputs_:
            dim = getattr(self, "output_dims_", {}).get(spec.key)
            if dim is None:
                if spec.layer.spatial and spec.params["pool"] in ("unroll", "sp-shuffle", "bin"):
                    raise ConfigError(
                        f"the width of {spec.key!r} depends on the input size; call transform() first"
                    )
                dim = spec.layer.channels
            names += [f"{spec.key}_{i}" for i in range(dim)]
        return np.asarray(names, dtype=object)


def _same(a, b) -> bool:
    """Whether two parameter values are equal (arrays and lists of names compared element by element)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # arrays of several elements
        return np.asarray(a).tolist() == np.asarray(b).tolist()


def _as_images(X) -> ImageDataset:
    """``X`` as a dataset: an ImageDataset as it is, image paths (a list, or a 1-D array or pandas Series
    of them), or a uint8 image array (N, H, W) or (N, H, W, 3|4); a clear error for anything else (a
    single path, a float array)."""
    if isinstance(X, ImageDataset):
        return X
    if isinstance(X, str | os.PathLike):
        raise DataError(
            f"X must be a list of image paths, an ImageDataset or a uint8 image array, got the single "
            f"path {str(X)!r}; wrap one image in a list, or open a folder tree with open_dataset()"
        )
    if hasattr(X, "__array__") and not isinstance(X, list | tuple):
        arr = np.asarray(X)
        if arr.dtype.kind in "USO" and (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
            return _as_images(arr.ravel().tolist())  # paths: an array, a Series, a one-column DataFrame
        if arr.dtype.kind in "USO":
            raise DataError(
                f"X holds text of shape {arr.shape}: image paths go in one column (a list, a 1-D array, a "
                "Series or a one-column DataFrame)"
            )
        if (
            arr.dtype != np.uint8
            or arr.ndim not in (3, 4)
            or (arr.ndim == 4 and arr.shape[3] not in (1, 3, 4))
        ):
            raise DataError(
                f"an image array must be uint8 (N, H, W) or (N, H, W, 3|4) with values 0..255, got "
                f"{arr.dtype} {arr.shape} (for floats in 0..1: (X * 255).round().astype(np.uint8); "
                "channels last)"
            )
        if arr.ndim == 3 and arr.shape[2] in (3, 4):
            raise DataError(
                f"X has shape {arr.shape}: one colour image, not a batch; pass X[None] for a batch of "
                "one (grey images 3 or 4 pixels wide go as (N, H, W, 1))"
            )
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
        n = len(arr)
        return ArrayDataset(
            name="array",
            ids=[f"array/{i}" for i in range(n)],
            classes=["unlabelled"],
            targets=np.zeros(n, dtype=np.int64),
            images=np.ascontiguousarray(arr),
        )
    items = list(X)
    for i, item in enumerate(items):
        if not isinstance(item, str | os.PathLike):
            what = (
                f"an array of shape {item.shape}"
                if hasattr(item, "shape")
                else f"{type(item).__name__} {item!r:.80}"
            )
            raise DataError(
                f"X[{i}] is {what}, not an image path; give image paths, or stack the images into one "
                "uint8 array (N, H, W, 3)"
            )
    return dataset_from_paths(items)
