"""Detection average precision, PASCAL VOC style, and COCO-style AP through pycocotools.

VOC (the devkit's ``VOCevaldet``): per class, detections over the whole test set are sorted by
score (highest first; ties keep their input order, as the devkit's stable sort does). Each is matched
to the annotated box of that class in its image with which it has the highest IoU; at IoU >= 0.5
it is a true positive if that box is not difficult and not yet matched, a false positive if the box
was already matched (a duplicate), and neither if the box is difficult; below 0.5 it is a false
positive. Recall counts the non-difficult boxes. AP is the 11-point interpolated AP of VOC 2007
(mean over recall levels 0, 0.1, ..., 1 of the best precision at recall >= that level) or the area
under the precision envelope (VOC 2010 and later). Boxes are in continuous coordinates, so the plain
IoU equals the devkit's +1 convention on its integer pixel boxes (see :mod:`deepfeat.data.detection`).

COCO: :func:`coco_ap` hands the same detections to ``pycocotools.cocoeval.COCOeval`` (AP averaged
over IoU 0.5:0.95, AP50, AP75, by object size; crowd boxes ignored).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from deepfeat.data.detection import DetectionDataset
from deepfeat.tasks.detection.boxes import iou


@dataclass
class Detections:
    """Detections of one image: ``boxes`` (M, 4), ``scores`` (M,), ``labels`` (M,) class indices."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self, classes: list[str]) -> list[dict]:
        return [
            {"class": classes[int(c)], "score": float(s), "box": [round(float(v), 2) for v in b]}
            for b, s, c in zip(self.boxes, self.scores, self.labels)
        ]


@dataclass
class ClassAP:
    """One class: AP by both summaries, the precision-recall curve, and counts."""

    ap11: float | None
    ap_area: float | None
    precision: np.ndarray
    recall: np.ndarray
    n_gt: int
    n_det: int


def ap_from_pr(
    precision: np.ndarray, recall: np.ndarray, tp: np.ndarray | None = None, n_pos: int | None = None
) -> tuple[float, float]:
    """(11-point AP, area AP) of a precision-recall curve walked in score order. With the cumulative
    true-positive counts ``tp`` and ``n_pos``, recall levels are compared exactly
    (``10 tp >= k n_pos``), so that a recall of exactly 3/10 counts for the level 0.3."""
    if len(recall) == 0:
        return 0.0, 0.0
    if tp is not None and n_pos:
        reached = [10 * np.asarray(tp) >= k * n_pos for k in range(11)]
    else:
        reached = [recall >= k / 10 for k in range(11)]
    ap11 = float(np.mean([precision[r].max(initial=0.0) for r in reached]))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return ap11, float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def class_ap(
    dataset: DetectionDataset, detections: dict[str, Detections], c: int, iou_threshold: float = 0.5
) -> ClassAP:
    """VOC AP of class ``c`` (see the module docstring)."""
    gt: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    n_gt = 0
    for t in dataset.images:
        sel = t.labels == c
        gt[t.image_id] = (t.boxes[sel], t.difficult[sel])
        n_gt += int((~t.difficult[sel]).sum())
    image_of, scores, boxes = [], [], []
    for image_id, det in detections.items():
        sel = det.labels == c
        image_of += [image_id] * int(sel.sum())
        scores.append(det.scores[sel])
        boxes.append(det.boxes[sel])
    scores = np.concatenate(scores) if scores else np.zeros(0)
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    matched = {k: np.zeros(len(v[0]), bool) for k, v in gt.items()}
    for d, k in enumerate(order):
        g_boxes, g_diff = gt.get(image_of[k], (np.zeros((0, 4)), np.zeros(0, bool)))
        if len(g_boxes) == 0:
            fp[d] = 1
            continue
        ov = iou(boxes[k : k + 1], g_boxes)[0]
        j = int(ov.argmax())
        if ov[j] >= iou_threshold:
            if g_diff[j]:
                continue
            if not matched[image_of[k]][j]:
                tp[d] = 1
                matched[image_of[k]][j] = True
            else:
                fp[d] = 1
        else:
            fp[d] = 1
    counted = (tp + fp) > 0
    ctp, cfp = np.cumsum(tp[counted]), np.cumsum(fp[counted])
    recall = ctp / n_gt if n_gt else np.zeros_like(ctp)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
    if n_gt == 0:
        return ClassAP(None, None, precision, recall, 0, len(order))
    ap11, area = ap_from_pr(precision, recall, ctp, n_gt)
    return ClassAP(ap11, area, precision, recall, n_gt, len(order))


def voc_ap(
    dataset: DetectionDataset, detections: dict[str, Detections], iou_threshold: float = 0.5
) -> dict[str, ClassAP]:
    """VOC AP of every class, keyed by class name."""
    return {name: class_ap(dataset, detections, c, iou_threshold) for c, name in enumerate(dataset.classes)}


def coco_ground_truth(dataset: DetectionDataset) -> dict:
    """The dataset as a COCO ground-truth dict (image ids 1..N unless the data has COCO ids; each
    object's area COCO's own where the data has one, else its box's)."""
    cat_ids = dataset.category_ids or list(range(1, len(dataset.classes) + 1))
    images, anns = [], []
    for n, t in enumerate(dataset.images):
        img_id = t.source_id if isinstance(t.source_id, int) else n + 1
        w, h = t.size or (
            int(np.ceil(t.boxes[:, 2].max(initial=1))),
            int(np.ceil(t.boxes[:, 3].max(initial=1))),
        )
        images.append({"id": img_id, "width": w, "height": h, "file_name": t.path.name})
        areas = np.full(len(t), np.nan) if t.areas is None else t.areas.astype(float)
        for b, c, d, a in zip(t.boxes.astype(float), t.labels, t.difficult, areas):
            bw, bh = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat_ids[int(c)],
                    "bbox": [b[0], b[1], bw, bh],
                    "area": float(a) if np.isfinite(a) else bw * bh,  # COCO's own area where given
                    "iscrowd": int(d),
                }
            )
    cats = [{"id": i, "name": n} for i, n in zip(cat_ids, dataset.classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_detections(dataset: DetectionDataset, detections: dict[str, Detections]) -> list[dict]:
    """Detections in COCO's results format, matching :func:`coco_ground_truth`."""
    cat_ids = dataset.category_ids or list(range(1, len(dataset.classes) + 1))
    out = []
    for n, t in enumerate(dataset.images):
        img_id = t.source_id if isinstance(t.source_id, int) else n + 1
        det = detections.get(t.image_id)
        if det is None:
            continue
        for b, s, c in zip(det.boxes.astype(float), det.scores, det.labels):
            out.append(
                {
                    "image_id": img_id,
                    "category_id": cat_ids[int(c)],
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": float(s),
                }
            )
    return out


COCO_STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100")


def coco_ap(dataset: DetectionDataset, detections: dict[str, Detections], max_dets: int = 100) -> dict:
    """COCO-style metrics from pycocotools (``COCO_STATS``, in [0, 1]; None without detections)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = coco_detections(dataset, detections)
    if not results:
        return dict.fromkeys(COCO_STATS)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_ground_truth(dataset)
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: (None if v < 0 else float(v)) for k, v in zip(COCO_STATS, ev.stats)}
