"""FeatureSet: one feature array with the ids, labels and splits of its rows and its provenance."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from deepfeat.features.pooling import ALIASES, POOLINGS
from deepfeat.kernels import FactoredLayout


class FeatureKind(str, Enum):
    """What the rows of a feature set hold, which decides the probes and encoders that can read them.

    - ``VECTOR``: one feature vector per image (pooled layers, forward baselines, concatenations);
    - ``MAPS``: a layer's unrolled (C, H, W) map per image, flattened channel-major: local descriptors
      for a per-split encoder such as Fisher vectors (``layer_shape`` gives (C, H, W));
    - ``FACTORED``: Deep Fishing gradients kept as their two factors per position (``layer_shape`` is
      (d_in + d_out, P)); compared through the factored trace kernel.
    """

    VECTOR = "vector"
    MAPS = "maps"
    FACTORED = "factored"


@dataclass
class FeatureSet:
    """Features of the items of a dataset that decoded, in dataset order.

    ``features`` is float32 (n, dim); it is memory-mapped from the store when every item decoded.
    ``rows`` are the dataset indices of the rows; ``targets`` are class indices (single-label) or an
    indicator matrix (multi-label), as in the dataset.
    """

    key: str
    features: np.ndarray
    ids: list[str]
    targets: np.ndarray
    classes: list[str]
    rows: np.ndarray
    provenance: dict
    splits: np.ndarray | None = None
    difficult: np.ndarray | None = None
    layer_shape: tuple[int, ...] | None = None
    source: str | None = None
    kind: FeatureKind = FeatureKind.VECTOR

    def __post_init__(self) -> None:
        self.kind = FeatureKind(self.kind)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.features.shape[1]) if self.features.ndim == 2 else 0

    @property
    def factored_layout(self) -> FactoredLayout:
        """How factored gradient rows split into their forward and backward factors."""
        from deepfeat.errors import ConfigError

        if self.kind is not FeatureKind.FACTORED:
            raise ConfigError(f"features {self.key!r} are {self.kind.value} features, not factored gradients")
        return FactoredLayout.from_provenance(self.provenance, self.layer_shape)

    @property
    def multilabel(self) -> bool:
        """True when targets is an indicator matrix."""
        return self.targets.ndim == 2

    def class_counts(self) -> np.ndarray:
        """int64 (n_classes,): rows with features per class (positives per class when multi-label);
        a 0 means every image of that class failed or the class has none."""
        if self.multilabel:
            return np.asarray(self.targets, dtype=np.int64).reshape(-1, len(self.classes)).sum(axis=0)
        return np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.classes))

    def subset(self, mask_or_index: np.ndarray) -> FeatureSet:
        """The rows selected by a boolean mask or an index array (features copied)."""
        idx = np.asarray(mask_or_index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return FeatureSet(
            key=self.key,
            features=np.asarray(self.features[idx]),
            ids=[self.ids[i] for i in idx],
            targets=self.targets[idx],
            classes=self.classes,
            rows=self.rows[idx],
            provenance=self.provenance,
            splits=None if self.splits is None else self.splits[idx],
            difficult=None if self.difficult is None else self.difficult[idx],
            layer_shape=self.layer_shape,
            source=self.source,
            kind=self.kind,
        )

    def with_features(
        self,
        key: str,
        features: np.ndarray,
        provenance: dict,
        *,
        layer_shape: tuple[int, ...] | None = None,
        kind: FeatureKind = FeatureKind.VECTOR,
    ) -> FeatureSet:
        """A feature set of the same images (ids, labels, splits) holding other ``features``."""
        return FeatureSet(
            key=key,
            features=features,
            ids=self.ids,
            targets=self.targets,
            classes=self.classes,
            rows=self.rows,
            provenance=provenance,
            splits=self.splits,
            difficult=self.difficult,
            layer_shape=layer_shape,
            kind=kind,
        )

    def to_pandas(self) -> Any:
        """A pandas DataFrame indexed by item id: ``label`` (class name; a list when multi-label),
        ``target`` (class index; 0/1 vector when multi-label), ``split`` when the data has splits, then
        one float32 column per feature dimension (``f0``, ``f1``, ...). The provenance, key, kind and
        layer shape are in ``DataFrame.attrs``. Needs pandas (the ``export`` extra)."""
        try:
            import pandas as pd
        except ImportError:
            from deepfeat.errors import ConfigError

            raise ConfigError('to_pandas needs pandas: pip install "deepfeat[export]"') from None
        X = np.asarray(self.features, dtype=np.float32).reshape(len(self), -1)
        if self.multilabel:
            targets = [row.tolist() for row in np.asarray(self.targets)]
            labels = [[self.classes[j] for j in np.flatnonzero(row)] for row in np.asarray(self.targets)]
        else:
            targets = np.asarray(self.targets, dtype=np.int64)
            labels = [self.classes[int(t)] for t in targets]
        head = {"label": labels, "target": targets}
        if self.splits is not None:
            head["split"] = [str(s) for s in self.splits]
        index = pd.Index(self.ids, name="id")
        frame = pd.concat(
            [
                pd.DataFrame(head, index=index),
                pd.DataFrame(X, index=index, columns=[f"f{i}" for i in range(X.shape[1])], copy=False),
            ],
            axis=1,
        )
        frame.attrs.update(
            key=self.key,
            kind=self.kind.value,
            layer_shape=None if self.layer_shape is None else list(self.layer_shape),
            provenance=self.provenance,
        )
        return frame

    def __repr__(self) -> str:
        return f"FeatureSet({self.key!r}, n={len(self)}, dim={self.dim}, kind={self.kind.value})"


def concat_features(sets: list[FeatureSet], key: str | None = None) -> FeatureSet:
    """Side-by-side concatenation of feature sets of the same images, each block L2-normalised per
    row first so that no block dominates by scale (the x_{k-1};y_k baselines of Deep Fishing)."""
    from deepfeat.errors import ConfigError, DataError

    if len(sets) < 2:
        raise ConfigError("concatenation needs at least two feature sets")
    for fs in sets:
        if fs.kind is FeatureKind.FACTORED:
            raise ConfigError(f"features {fs.key!r} are factored gradients; they cannot be concatenated")
    first = sets[0]
    for other in sets[1:]:
        if other.ids != first.ids:
            raise DataError(f"feature sets {first.key!r} and {other.key!r} cover different images")
    blocks = []
    for fs in sets:
        X = np.asarray(fs.features, dtype=np.float32)
        blocks.append(X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12))
    return first.with_features(
        key or ";".join(fs.key for fs in sets),
        np.concatenate(blocks, axis=1),
        {"concat": [fs.provenance for fs in sets], "block_normalisation": "l2"},
    )


def pool_positions(sets: list[FeatureSet], key: str | None = None) -> FeatureSet:
    """Unrolled maps of one layer at several input scales as one set of local descriptors per image:
    every position of every scale, rows laid out as a (C, sum of positions, 1) map (for Fisher vectors
    over several scales)."""
    from deepfeat.errors import ConfigError, DataError

    if not sets:
        raise ConfigError("no feature sets to pool")
    first = sets[0]
    blocks = []
    for fs in sets:
        shape = fs.layer_shape
        if fs.kind is FeatureKind.FACTORED or shape is None or len(shape) != 3:
            raise DataError(f"features {fs.key!r} are not unrolled conv maps (need a (C, H, W) row shape)")
        if shape[0] != first.layer_shape[0] or fs.ids != first.ids:
            raise DataError(f"features {fs.key!r} and {first.key!r} differ in channels or images")
        X = np.asarray(fs.features, dtype=np.float32)
        blocks.append(X.reshape(len(X), shape[0], shape[1] * shape[2]))
    features = np.concatenate(blocks, axis=2)
    return first.with_features(
        key or first.key,
        features.reshape(len(features), -1),
        {"scales": [fs.provenance for fs in sets], "layout": "positions of every scale"},
        layer_shape=(first.layer_shape[0], features.shape[2], 1),
        kind=FeatureKind.MAPS,
    )


def find_set(sets: dict[str, FeatureSet], key: str) -> FeatureSet:
    """The set ``key`` names among sets keyed ``layer/pool`` (a vector layer's by its layer alone): the
    key itself, a layer with one set, or ``layer/<a pooling>`` for a vector layer's set (as the CLI
    takes ``pool/avg``); a KeyError listing the keys otherwise."""
    if key in sets:
        return sets[key]
    layer, _, pool = key.partition("/")
    matches = [k for k in sets if k.split("/")[0] == key or (k == layer and pool in (*POOLINGS, *ALIASES))]
    if len(matches) == 1:
        return sets[matches[0]]
    raise KeyError(f"no feature set {key!r}; available: {', '.join(sets)}")
