"""A trained R-CNN detector: class SVMs, box regressors and every setting needed to run it, saved as
one :mod:`deepfeat.checkpoint` (kind ``"rcnn-detector"``: tensors and plain JSON, read back without
running any code from the file), and test-time detection (thesis section 3.1.2): score every
proposal, regress its box per class, per-class greedy non-maximum suppression at IoU 0.3
(``torchvision.ops.batched_nms``), keep the top detections.

A fine-tuned backbone travels with the model as ``backbone.pt`` (a fine-tuning checkpoint, loadable
on its own by ``load_backbone(name, weights=...)``); otherwise the model names the backbone and the
weights id it was trained with, and loading checks that the same weights are found.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import batched_nms

from deepfeat.backbones import Backbone, load_backbone
from deepfeat.checkpoint import load_checkpoint, save_checkpoint
from deepfeat.errors import CheckpointError, ConfigError
from deepfeat.tasks.detection.bbox import BoxRegressor
from deepfeat.tasks.detection.boxes import clip
from deepfeat.tasks.detection.proposals import ProposalOptions
from deepfeat.tasks.detection.regions import RegionOptions
from deepfeat.tasks.detection.svm import SVMResult
from deepfeat.tasks.detection.voc_eval import Detections
from deepfeat.validation import check_float, check_int

KIND = "rcnn-detector"
MODEL_FILE = "model.pt"
BACKBONE_FILE = "backbone.pt"


@dataclass(frozen=True)
class TestOptions:
    """Test-time settings: ``nms_iou`` (greedy NMS threshold, per class), ``pre_nms`` (best regions
    per class kept before NMS, as the reference's 100 per image), ``max_per_image`` (detections kept
    after NMS, over all classes) and ``score_threshold`` (SVM score below which nothing is kept;
    None: no threshold, as for AP, which more low-scored detections never lower)."""

    nms_iou: float = 0.3
    pre_nms: int = 100
    max_per_image: int = 100
    score_threshold: float | None = None

    def validate(self) -> None:
        check_float("nms_iou", self.nms_iou, 0, 1)
        check_int("pre_nms", self.pre_nms, 1)
        check_int("max_per_image", self.max_per_image, 1)
        if self.score_threshold is not None:
            check_float("score_threshold", self.score_threshold)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DetectorModel:
    """Everything a trained detector is: classes, the features it reads (``svm_key``, ``bbox_key``:
    'layer/pool'), region, proposal and test settings, the SVMs and the optional regressors, and the
    backbone (name, weights id, and a fine-tuned weights file when there is one)."""

    classes: list[str]
    backbone: str
    weights_id: str
    svm_key: str
    region: RegionOptions
    proposals: ProposalOptions
    svm: SVMResult
    regressor: BoxRegressor | None = None
    bbox_key: str | None = None
    test: TestOptions = field(default_factory=TestOptions)
    weights_file: str | None = None
    settings: dict = field(default_factory=dict)  # training settings, for the record
    category_ids: list[int] | None = None

    @property
    def outputs(self) -> list[str]:
        keys = [self.svm_key]
        if self.regressor is not None and self.bbox_key and self.bbox_key not in keys:
            keys.append(self.bbox_key)
        return keys

    def load_backbone(self, folder: str | os.PathLike | None = None) -> Backbone:
        """The backbone the detector was trained on (its fine-tuned weights from ``folder``)."""
        weights = None
        if self.weights_file is not None:
            weights = Path(folder or ".") / self.weights_file
        backbone = load_backbone(self.backbone, weights=weights)
        if self.weights_file is None and backbone.weights_id != self.weights_id:
            raise CheckpointError(
                f"the detector was trained on {self.backbone} weights {self.weights_id[:23]}, "
                f"but the backbone loads {backbone.weights_id[:23]}"
            )
        return backbone

    # -- test time ------------------------------------------------------------------------------
    def detect(
        self, boxes: np.ndarray, features: dict[str, np.ndarray], width: float, height: float
    ) -> Detections:
        """Detections of one image from its proposals (N, 4) and their raw features by key."""
        if len(boxes) == 0:
            return Detections.empty()
        scores = self.svm.scores(features[self.svm_key])  # (N, K)
        if self.regressor is not None:
            per_class = self.regressor.predict(boxes, features[self.bbox_key])  # (N, K, 4)
        else:
            per_class = np.repeat(np.asarray(boxes, np.float32)[:, None], len(self.classes), axis=1)
        t = self.test
        cand_boxes, cand_scores, cand_labels = [], [], []
        for c in np.flatnonzero(self.svm.trained):
            s = scores[:, c]
            top = np.argsort(-s, kind="stable")[: t.pre_nms]
            if t.score_threshold is not None:
                top = top[s[top] > t.score_threshold]
            if len(top):
                cand_boxes.append(clip(per_class[top, c], width, height))
                cand_scores.append(s[top])
                cand_labels.append(np.full(len(top), c))
        if not cand_boxes:
            return Detections.empty()
        b = np.concatenate(cand_boxes).astype(np.float32)
        s = np.concatenate(cand_scores).astype(np.float32)
        lab = np.concatenate(cand_labels).astype(np.int64)
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, s, lab = b[ok], s[ok], lab[ok]
        keep = batched_nms(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(lab), t.nms_iou)
        keep = keep.numpy()[: t.max_per_image]
        return Detections(b[keep], s[keep], lab[keep])

    # -- files -----------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, backbone_weights: str | os.PathLike | None = None) -> Path:
        """Write ``folder/model.pt`` (and copy a fine-tuned backbone's weights to ``backbone.pt``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if backbone_weights is not None:
            target = folder / BACKBONE_FILE
            if Path(backbone_weights).resolve() != target.resolve():
                shutil.copyfile(backbone_weights, target)
            self.weights_file = BACKBONE_FILE
        state = {
            "svm": {
                "weights": torch.from_numpy(np.ascontiguousarray(self.svm.weights)),
                "biases": torch.from_numpy(np.ascontiguousarray(self.svm.biases)),
                "trained": torch.from_numpy(self.svm.trained.astype(np.uint8)),
            }
        }
        if self.regressor is not None:
            r = self.regressor
            state["bbox"] = {
                "weights": torch.from_numpy(np.ascontiguousarray(r.weights)),
                "means": torch.from_numpy(np.ascontiguousarray(r.means)),
                "trained": torch.from_numpy(r.trained.astype(np.uint8)),
                "counts": torch.from_numpy(np.asarray(r.counts, np.int64)),
            }
        meta = {
            "classes": self.classes,
            "category_ids": self.category_ids,
            "backbone": self.backbone,
            "weights_id": self.weights_id,
            "weights_file": self.weights_file,
            "svm_key": self.svm_key,
            "bbox_key": self.bbox_key,
            "svm_scale": self.svm.scale,
            "bbox_scale": None if self.regressor is None else self.regressor.scale,
            "svm_history": self.svm.history,
            "region": self.region.to_dict(),
            "proposals": self.proposals.to_dict(),
            "test": self.test.to_dict(),
            "settings": self.settings,
        }
        return save_checkpoint(folder / MODEL_FILE, state, kind=KIND, meta=meta, rng=False)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> DetectorModel:
        """Read a model folder written by :meth:`save` (no code from the file is run)."""
        folder = Path(folder)
        path = folder / MODEL_FILE if folder.is_dir() else folder
        if not path.is_file():
            raise ConfigError(f"{folder}: no detector model here (expected {MODEL_FILE}; train one first)")
        ck = load_checkpoint(path, kind=KIND)
        m, st = ck.meta, ck.state
        try:
            svm = SVMResult(
                weights=st["svm"]["weights"].numpy(),
                biases=st["svm"]["biases"].numpy(),
                scale=float(m["svm_scale"]),
                trained=st["svm"]["trained"].numpy().astype(bool),
                history=m.get("svm_history") or {},
            )
            regressor = None
            if "bbox" in st:
                regressor = BoxRegressor(
                    weights=st["bbox"]["weights"].numpy(),
                    means=st["bbox"]["means"].numpy(),
                    trained=st["bbox"]["trained"].numpy().astype(bool),
                    scale=float(m["bbox_scale"]),
                    counts=st["bbox"]["counts"].numpy(),
                )
            return cls(
                classes=list(m["classes"]),
                backbone=m["backbone"],
                weights_id=m["weights_id"],
                svm_key=m["svm_key"],
                region=RegionOptions(**m["region"]),
                proposals=ProposalOptions(**m["proposals"]),
                svm=svm,
                regressor=regressor,
                bbox_key=m.get("bbox_key"),
                test=TestOptions(**m["test"]),
                weights_file=m.get("weights_file"),
                settings=m.get("settings") or {},
                category_ids=m.get("category_ids"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: damaged detector model ({exc})") from None
