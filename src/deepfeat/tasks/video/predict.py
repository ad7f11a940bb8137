"""Classifying video files with a trained model, or with an RGB and a flow model fused (the weight
of RGB given, 1/3 by default as in the thesis' best row). Unreadable files are reported, not fatal."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepfeat.data.images import printable
from deepfeat.data.videosets import VideoDataset
from deepfeat.errors import ConfigError, DataError
from deepfeat.features.store import FeatureStore
from deepfeat.tasks.video.evaluation import classifier_features, weight_label
from deepfeat.tasks.video.models import VideoClassifier
from deepfeat.tasks.video.training import load_classifier
from deepfeat.validation import check_device, check_float, check_int


@dataclass
class Prediction:
    """One file's class probabilities per model (and fused), its top classes, or why it failed."""

    path: str
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "top": [[c, p] for c, p in self.top],
            "probabilities": {k: v.tolist() for k, v in self.probs.items()},
            "error": self.error,
        }


def predict_videos(
    paths: Sequence[str | os.PathLike],
    models: Sequence[VideoClassifier | str | os.PathLike],
    *,
    fusion: float = 1 / 3,
    top_k: int = 5,
    store: FeatureStore | str | os.PathLike | None = None,
    batch_size: int = 32,
    workers: int = 2,
    device: str | None = None,
    progress: bool = True,
) -> list[Prediction]:
    """Class probabilities of each video file: one model, or an RGB and a flow model of the same
    classes fused as ``fusion * RGB + (1 - fusion) * flow``."""
    if not paths:
        raise ConfigError("no video file given")
    check_float("fusion weight (of RGB)", fusion, 0, 1)
    check_int("top_k", top_k, 1)
    check_int("batch_size", batch_size, 1)
    check_device(device)
    classifiers = [m if isinstance(m, VideoClassifier) else load_classifier(m) for m in models]
    if len(classifiers) not in (1, 2) or (
        len(classifiers) == 2 and {c.stream for c in classifiers} != {"rgb", "flow"}
    ):
        raise ConfigError("give one model, or two: an RGB and a flow model to fuse")
    classes = classifiers[0].classes
    if any(set(c.classes) != set(classes) for c in classifiers):
        raise ConfigError("the RGB and flow models know different classes; they cannot be fused")
    if isinstance(store, str | os.PathLike):
        store = FeatureStore(store)
    paths = [Path(p) for p in paths]
    videos = VideoDataset(
        name="clips",
        ids=[printable(p) for p in paths],
        paths=paths,
        classes=list(classes),
        targets=np.zeros(len(paths), np.int64),
    )
    extraction = {"batch_size": batch_size, "workers": workers, "device": device}
    out = [Prediction(path=printable(p)) for p in paths]
    backbones: dict = {}
    cache: dict = {}
    for clf in classifiers:
        columns = np.asarray([clf.classes.index(c) for c in classes])
        try:
            feats = classifier_features(
                clf,
                videos,
                store=store,
                extraction=extraction,
                backbones=backbones,
                cache=cache,
                progress=progress,
            )
        except DataError as exc:  # no file could be read: said per file
            for p in out:
                p.error = p.error or str(exc)
            continue
        clf.to(check_device(device))
        for row, pr in zip(feats.rows.tolist(), clf.predict_proba(feats.sequences)[:, columns]):
            out[row].probs[clf.name] = pr
        reasons = dict(feats.failed_videos)
        for p in out:
            if clf.name not in p.probs and p.error is None:
                p.error = f"{clf.stream}: {reasons.get(p.path, 'no usable frame')}"
    for p in out:
        if len(p.probs) != len(classifiers):
            continue
        final = next(iter(p.probs.values()))
        if len(classifiers) == 2:
            rgb = next(v for k, v in p.probs.items() if k.endswith("/rgb"))
            flow = next(v for k, v in p.probs.items() if k.endswith("/flow"))
            final = p.probs[f"fused {weight_label(fusion)}"] = fusion * rgb + (1 - fusion) * flow
        order = np.argsort(-final)[:top_k]
        p.top = [(classes[i], float(final[i])) for i in order]
    return out
