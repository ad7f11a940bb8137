"""Evaluation per video (thesis Section 4.3): every trained classifier scores each test video by
averaging its clip predictions (LRCN: 16-frame clips with a stride of 8; single frame: every frame),
the RGB and flow classifiers of one kind are fused by a weighted average of their video probabilities
(weights of RGB, e.g. 1/2 and 1/3 as in Table 4.1), and each row is scored by accuracy and mean
per-class accuracy, with per-class accuracies and a confusion matrix.

Features come from the store, computed once per stream and frame-feature setting (a single-frame and
an LRCN model of the same stream share them). Videos that a model cannot read are reported by path;
all rows are scored on the videos every model could read, so that rows compare like with like.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from deepfeat.backbones.registry import load_backbone
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.data.videosets import VideoDataset, open_videos
from deepfeat.errors import ConfigError, DataError
from deepfeat.features.pipeline import ON_ERROR
from deepfeat.features.store import FeatureStore
from deepfeat.fileio import check_output_dir
from deepfeat.metrics import per_class_accuracy
from deepfeat.report.provenance import environment
from deepfeat.tasks.video.features import (
    FrameFeatures,
    GridPooled,
    StreamFeatures,
    check_device,
    stream_features,
)
from deepfeat.tasks.video.models import VideoClassifier
from deepfeat.tasks.video.training import load_classifier
from deepfeat.validation import check_choice, check_float, check_int

log = logging.getLogger(__name__)

#: Weights of the RGB stream in the fused rows (flow gets the rest): the thesis' 1/2 and 1/3.
FUSION_WEIGHTS = (0.5, 1 / 3)
MODEL_LABELS = {"single": "Single frame", "lrcn": "LRCN"}


def weight_label(w: float) -> str:
    """``1/3, 2/3`` for an RGB weight of 1/3 (RGB first, then flow)."""
    a, b = Fraction(w).limit_denominator(12), Fraction(1 - w).limit_denominator(12)
    return f"{a}, {b}" if abs(float(a) - w) < 1e-6 else f"{w:.2f}, {1 - w:.2f}"


@dataclass
class EvaluateJob:
    """Score trained classifiers on the test videos of ``data`` (all videos when it has no split).

    ``models``: classifiers or their folders / ``model.pt`` files (each a distinct model and stream);
    ``fusion``: RGB weights of the fused rows; ``store``: the feature store (default ``out/store``);
    extraction: ``batch_size``, ``workers``, ``on_bad_frame``, ``max_pixels``, ``device``.
    """

    data: VideoDataset | str | os.PathLike
    models: Sequence[VideoClassifier | str | os.PathLike]
    fusion: Sequence[float] = FUSION_WEIGHTS
    split: int = 1
    lists: str | os.PathLike | None = None
    store: FeatureStore | str | os.PathLike | None = None
    out: str | os.PathLike | None = None
    batch_size: int = 32
    workers: int = 2
    on_bad_frame: str = "skip"
    max_pixels: int = DEFAULT_MAX_PIXELS
    device: str | None = None

    def validate(self) -> None:
        if not self.models:
            raise ConfigError("no model given; name at least one trained model folder")
        for w in self.fusion:
            check_float("fusion weight (of RGB)", w, 0, 1)
        check_int("split", self.split, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("workers", self.workers, 0)
        check_choice("on_bad_frame", self.on_bad_frame, ON_ERROR)
        check_int("max_pixels", self.max_pixels, 1)
        check_device(self.device)


@dataclass
class VideoEvaluation:
    """Video probabilities of every row, their scores and what could not be scored.

    ``probs``: {row name: (n_videos, C)}, names ``<model>/<rgb|flow>`` and
    ``<model>/fused <w_rgb, w_flow>``; ``scores``: per row accuracy, mean per-class accuracy,
    per-class accuracies and the confusion matrix (true class down, predicted across).
    """

    classes: list[str]
    video_ids: list[str]
    targets: np.ndarray
    probs: dict[str, np.ndarray]
    scores: dict[str, dict] = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)
    unscored: list[tuple[str, str]] = field(default_factory=list)
    failures: dict[str, list] = field(default_factory=dict)
    fusion: list[float] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def table(self, metric: str = "accuracy") -> tuple[list[str], list[list[str]]]:
        """Table 4.1's layout: model kinds down; RGB, flow and each fusion weight across (in %)."""
        kinds = [k for k in MODEL_LABELS if any(n.startswith(f"{k}/") for n in self.probs)]
        cols = [("RGB", "rgb"), ("Flow", "flow")] + [
            (weight_label(w), f"fused {weight_label(w)}") for w in self.fusion
        ]
        cols = [(label, key) for label, key in cols if any(f"{k}/{key}" in self.scores for k in kinds)]
        rows = []
        for k in kinds:
            row = [MODEL_LABELS[k]]
            for _, key in cols:
                s = self.scores.get(f"{k}/{key}")
                row.append("-" if s is None else f"{100 * s[metric]:.2f}")
            rows.append(row)
        return ["model"] + [label for label, _ in cols], rows

    def best(self) -> str:
        """The row with the highest accuracy (ties: the first)."""
        return max(self.scores, key=lambda n: self.scores[n]["accuracy"])

    def delta(self, a: str, b: str) -> list[tuple[str, float]]:
        """Per-class accuracy of row ``a`` minus row ``b``, largest first (classes without test videos
        left out), as Tables 4.2 and 4.3 list them."""
        pa, pb = self.scores[a]["per_class"], self.scores[b]["per_class"]
        diffs = [(c, x - y) for c, x, y in zip(self.classes, pa, pb) if x is not None and y is not None]
        return sorted(diffs, key=lambda t: -t[1])

    def to_dict(self) -> dict:
        return {
            "classes": self.classes,
            "fusion_rgb_weights": self.fusion,
            "table_header": self.table()[0],
            "table_rows": self.table()[1],
            "scores": self.scores,
            "models": self.models,
            "videos": self.video_ids,
            "targets": self.targets.tolist(),
            "probabilities": {k: v.tolist() for k, v in self.probs.items()},
            "unscored": [list(u) for u in self.unscored],
            "failures": {k: [list(f) for f in v] for k, v in self.failures.items()},
        }


def score(probs: np.ndarray, targets: np.ndarray, n_classes: int) -> dict:
    """Accuracy, mean per-class accuracy, per-class accuracies (None: no video) and confusion."""
    pred = probs.argmax(1)
    per_class = per_class_accuracy(targets, pred, n_classes)
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (targets, pred), 1)
    present = np.bincount(targets, minlength=n_classes) > 0
    return {
        "accuracy": float((pred == targets).mean()),
        "mean_class_accuracy": float(np.nanmean(per_class[present])),
        "per_class": [float(v) if p else None for v, p in zip(per_class, present)],
        "confusion": confusion.tolist(),
        "n_videos": len(targets),
    }


def _aligned(classifier: VideoClassifier, classes: list[str]) -> np.ndarray:
    """Column order taking the classifier's probabilities to the data's classes."""
    if set(classifier.classes) != set(classes):
        missing = sorted(set(classes) - set(classifier.classes))
        extra = sorted(set(classifier.classes) - set(classes))
        raise ConfigError(
            f"model {classifier.name} knows other classes than the data (missing {missing[:5]}, "
            f"extra {extra[:5]}); evaluate on data with the classes it was trained on"
        )
    index = {c: i for i, c in enumerate(classifier.classes)}
    return np.asarray([index[c] for c in classes])


def classifier_features(
    classifier: VideoClassifier,
    videos: VideoDataset,
    *,
    store,
    extraction: dict,
    backbones: dict,
    cache: dict,
    progress: bool,
) -> StreamFeatures:
    """The frame features ``classifier`` reads, for ``videos`` (computed once per setting)."""
    config = classifier.config
    spec = replace(FrameFeatures.from_dict(config["features"]), **extraction)
    key_bb = (spec.backbone, spec.weights)
    if key_bb not in backbones:
        backbones[key_bb] = load_backbone(spec.backbone, weights=spec.weights)
    backbone = backbones[key_bb]
    want = config.get("backbone", {}).get("weights_id")
    if want and want != backbone.weights_id:
        raise ConfigError(
            f"model {classifier.name} was trained on features of {spec.backbone} weights {want[:23]}; "
            f"{spec.weights or 'the default weights'} are now {backbone.weights_id[:23]}"
        )
    method = GridPooled(config["top"], 0) if config.get("top") else GridPooled(spec.layer, spec.grid)
    key = (classifier.stream, repr(sorted(spec.to_dict().items())), repr(method.outputs(backbone)[0].params))
    if key not in cache:
        cache[key] = stream_features(
            videos, classifier.stream, spec, backbone, method=method, store=store, progress=progress
        )
    return cache[key]


def evaluate(
    job: EvaluateJob, *, progress: bool = True, echo: Callable[[str], None] | None = None
) -> VideoEvaluation:
    """Run ``job`` (see the module docstring); the result is in memory (write it with
    :func:`deepfeat.tasks.video.report.write_report`)."""
    echo = echo or log.info
    job.validate()
    classifiers = [m if isinstance(m, VideoClassifier) else load_classifier(m) for m in job.models]
    names = [c.name for c in classifiers]
    if len(set(names)) != len(names):
        raise ConfigError(f"two models of the same kind and stream ({', '.join(names)}); give one of each")
    out = None if job.out is None else check_output_dir(job.out, "out")  # after the checks: no empty folder
    store = job.store if job.store is not None or out is None else out / "store"
    if isinstance(store, str | os.PathLike):
        store = FeatureStore(store)
    videos = job.data if isinstance(job.data, VideoDataset) else open_videos(job.data, job.split, job.lists)
    videos = videos.split("test")
    echo(videos.summary())
    for where, why in videos.ignored:
        echo(f"ignored {where}: {why}")
    extraction = {
        "batch_size": job.batch_size,
        "workers": job.workers,
        "on_bad_frame": job.on_bad_frame,
        "max_pixels": job.max_pixels,
        "device": job.device,
    }
    backbones: dict = {}
    cache: dict = {}
    n, n_classes = len(videos), len(videos.classes)
    probs: dict[str, np.ndarray] = {}
    failures: dict[str, list] = {}
    unscored: dict[int, str] = {}
    for clf in classifiers:
        columns = _aligned(clf, videos.classes)
        feats = classifier_features(
            clf,
            videos,
            store=store,
            extraction=extraction,
            backbones=backbones,
            cache=cache,
            progress=progress,
        )
        clf.to(check_device(job.device))
        full = np.full((n, n_classes), np.nan)
        full[feats.rows] = clf.predict_proba(feats.sequences)[:, columns]
        probs[clf.name] = full
        failures[clf.stream] = feats.failures
        missing = np.setdiff1d(np.arange(n), feats.rows)
        reasons = dict(feats.failed_videos)
        for r in missing.tolist():
            unscored.setdefault(r, f"{clf.stream}: {reasons.get(videos.source(r), 'no usable frame')}")
    keep = np.asarray(sorted(set(range(n)) - set(unscored)), dtype=np.int64)
    if keep.size == 0:
        raise DataError(f"{videos.name}: no test video could be read by every model")
    for kind in MODEL_LABELS:
        rgb, flow = probs.get(f"{kind}/rgb"), probs.get(f"{kind}/flow")
        if rgb is not None and flow is not None:
            for w in job.fusion:
                probs[f"{kind}/fused {weight_label(w)}"] = w * rgb + (1 - w) * flow
    streams = {stream: {k for k in MODEL_LABELS if f"{k}/{stream}" in probs} for stream in ("rgb", "flow")}
    if job.fusion and streams["rgb"] and streams["flow"] and not streams["rgb"] & streams["flow"]:
        echo(
            f"no fused rows: fusion pairs an RGB and a flow model of one kind, and these are RGB "
            f"{', '.join(sorted(streams['rgb']))} and flow {', '.join(sorted(streams['flow']))}"
        )
    probs = {k: v[keep] for k, v in probs.items()}
    targets = videos.targets[keep]
    result = VideoEvaluation(
        classes=list(videos.classes),
        video_ids=[videos.ids[r] for r in keep],
        targets=targets,
        probs=probs,
        scores={k: score(v, targets, n_classes) for k, v in probs.items()},
        models={c.name: c.config for c in classifiers},
        unscored=[(videos.source(r), why) for r, why in sorted(unscored.items())],
        failures=failures,
        fusion=[float(w) for w in job.fusion],
    )
    result.provenance = {
        **environment(job.device),
        "data": videos.name,
        "videos_fingerprint": videos.fingerprint(),
        "n_videos": n,
        "n_scored": int(keep.size),
        "store": None if store is None else str(store.root),
    }
    return result
