"""Layer features for the analyses: extracted through the store, one feature set per layer, with the
provenance of the run; and the train / test rows an analysis fits on."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from deepfeat.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from deepfeat.data.source import DataSource, as_dataset
from deepfeat.errors import DataError
from deepfeat.evaluation.protocols import TEST_SPLIT_NAMES, TRAIN_SPLIT_NAMES, VAL_SPLIT_NAMES
from deepfeat.features.activations import LayerActivations
from deepfeat.features.featureset import FeatureKind, FeatureSet
from deepfeat.features.pipeline import extract
from deepfeat.features.store import FeatureStore


def layer_features(
    data: DataSource,
    layers: Sequence[str],
    pool: str,
    *,
    backbone: Backbone | str = DEFAULT_BACKBONE,
    weights: str | os.PathLike | None = None,
    store: FeatureStore | str | os.PathLike | None = None,
    preprocess: str = "backbone",
    progress: bool = True,
    min_classes: int = 1,
) -> tuple[dict[str, FeatureSet], dict]:
    """Features of ``layers`` with one pooling (``"unroll"``: the maps), by layer name, through the
    store; returns them with the provenance of the run. Single-label data only, of at least
    ``min_classes`` classes (checked before any extraction)."""
    dataset = as_dataset(data)
    if dataset.multilabel:
        raise DataError(f"{dataset.name}: this analysis needs single-label data")
    present = np.unique(dataset.targets)
    if len(present) < min_classes:
        named = ", ".join(repr(dataset.classes[int(c)]) for c in present)
        raise DataError(
            f"{dataset.name}: the images are of {len(present)} class ({named}); this analysis compares "
            f"classes and needs {min_classes} or more"
        )
    bb = backbone if isinstance(backbone, Backbone) else load_backbone(backbone, weights=weights)
    method = LayerActivations(layers, [pool])
    store = store if store is None or isinstance(store, FeatureStore) else FeatureStore(store)
    result = extract(dataset, bb, [method], store=store, preprocess=preprocess, progress=progress)
    by_layer = {key.split("/")[0]: fs for key, fs in result.features.items()}
    for layer, fs in by_layer.items():
        if fs.multilabel:
            raise DataError(f"{dataset.name}: this analysis needs single-label data")
        if len(fs) == 0:
            raise DataError(f"{dataset.name}: no image of layer {layer!r} could be extracted")
    provenance = {
        "data": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "backbone": bb.name,
        "weights_id": bb.weights_id,
        "pool": pool,
        "preprocess": preprocess,
        "n_images": len(next(iter(by_layer.values()))),
        "failures": [list(f) for f in result.failures],
    }
    return by_layer, provenance


def map_shape(fs: FeatureSet) -> tuple[int, int, int] | None:
    """The (C, H, W) shape of unrolled maps, None for vectors."""
    return tuple(fs.layer_shape) if fs.kind is FeatureKind.MAPS and fs.layer_shape is not None else None


def train_test_rows(fs: FeatureSet, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The data's own train / test rows as the ``fixed`` protocol takes them (``train`` or VOC's
    ``trainval`` rows train; ``test`` rows test, else the ``val`` rows; validation rows beside a test
    split are left out), else a seeded stratified half split."""
    if fs.splits is not None:
        split = np.char.lower(fs.splits.astype(str))
        train = np.flatnonzero(np.isin(split, TRAIN_SPLIT_NAMES))
        test = np.flatnonzero(np.isin(split, TEST_SPLIT_NAMES))
        if not len(test):
            test = np.flatnonzero(np.isin(split, VAL_SPLIT_NAMES))
        if len(train) and len(test):
            return train, test
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(fs))
    return tuple(train_test_split(idx, test_size=0.5, stratify=fs.targets, random_state=seed))
