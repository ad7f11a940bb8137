"""VOC detection AP against an independent devkit-style reference, pycocotools and torchmetrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepfeat.data.detection import BoxTable, DetectionDataset
from deepfeat.tasks.detection.voc_eval import Detections, ap_from_pr, coco_ap, voc_ap


# -- an independent reference written like the VOC2007 devkit (VOCevaldet.m / VOCap.m) ----------------
def devkit_ap(gt: dict, dets: list[tuple], minoverlap: float = 0.5) -> tuple[float, float]:
    """``gt``: image -> list of (bbox 1-based inclusive ints, difficult); ``dets``: (image, score, bbox).
    Returns (11-point AP, VOCap area AP), computed as the MATLAB devkit does."""
    npos = sum(1 for objs in gt.values() for _, diff in objs if not diff)
    detected = {k: [False] * len(v) for k, v in gt.items()}
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])  # stable, like MATLAB's sort
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for d, i in enumerate(order):
        image, _, bb = dets[i]
        ovmax, jmax = -np.inf, -1
        for j, (bbgt, _) in enumerate(gt.get(image, [])):
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = (
                    (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                    + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1)
                    - iw * ih
                )
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= minoverlap:
            if not gt[image][jmax][1]:
                if not detected[image][jmax]:
                    tp[d] = 1
                    detected[image][jmax] = True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / npos
    with np.errstate(invalid="ignore"):
        prec = tp / (fp + tp)
    ap11 = 0.0
    for t in np.arange(0, 1.1, 0.1):
        p = prec[rec >= t - 1e-12]
        p = p[~np.isnan(p)]
        ap11 += (p.max() if p.size else 0.0) / 11
    mrec = np.concatenate([[0], rec, [1]])
    mpre = np.concatenate([[0], np.nan_to_num(prec), [0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return ap11, float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx]))


def _scene(seed: int, n_images: int = 12, n_classes: int = 3, difficult: bool = True, spaced: bool = False):
    """Random integer GT boxes and detections (jittered hits, duplicates, background)."""
    rng = np.random.default_rng(seed)
    gt_raw, dets_raw = {}, []
    for i in range(n_images):
        objs = []
        for k in range(int(rng.integers(0, 5))):
            c = int(rng.integers(n_classes))
            if spaced:  # on a grid, far apart: no detection can reach two boxes at IoU 0.5
                x1, y1 = 1 + 120 * k, 1 + 120 * (k % 2)
                w, h = int(rng.integers(30, 60)), int(rng.integers(30, 60))
            else:
                x1, y1 = int(rng.integers(1, 150)), int(rng.integers(1, 150))
                w, h = int(rng.integers(10, 80)), int(rng.integers(10, 80))
            objs.append((c, [x1, y1, x1 + w - 1, y1 + h - 1], bool(difficult and rng.random() < 0.15)))
        gt_raw[f"im{i}"] = objs
        for c, box, _ in objs:
            for _ in range(int(rng.integers(0, 3))):  # hits, near misses, duplicates
                jit = rng.integers(-8, 9, 4)
                b = [
                    box[0] + jit[0],
                    box[1] + jit[1],
                    max(box[0] + jit[0] + 2, box[2] + jit[2]),
                    max(box[1] + jit[1] + 2, box[3] + jit[3]),
                ]
                dets_raw.append((f"im{i}", c if rng.random() < 0.85 else int(rng.integers(n_classes)), b))
        for _ in range(int(rng.integers(0, 4))):
            x1, y1 = int(rng.integers(1, 300)), int(rng.integers(1, 300))
            dets_raw.append((f"im{i}", int(rng.integers(n_classes)), [x1, y1, x1 + 20, y1 + 25]))
    scores = rng.permutation(len(dets_raw)) / len(dets_raw) + rng.normal(0, 1e-3, len(dets_raw))
    tables = [
        BoxTable(
            image_id=k,
            path=Path(f"{k}.jpg"),
            boxes=np.array([[b[0] - 1, b[1] - 1, b[2], b[3]] for _, b, _ in v], np.float32).reshape(-1, 4),
            labels=np.array([c for c, _, _ in v], np.int64),
            difficult=np.array([d for _, _, d in v], bool),
            size=(400, 400),
        )
        for k, v in gt_raw.items()
    ]
    ds = DetectionDataset("scene", [f"c{k}" for k in range(n_classes)], tables)
    dets = {}
    for k in gt_raw:
        sel = [j for j, d in enumerate(dets_raw) if d[0] == k]
        dets[k] = Detections(
            np.array(
                [
                    [dets_raw[j][2][0] - 1, dets_raw[j][2][1] - 1, dets_raw[j][2][2], dets_raw[j][2][3]]
                    for j in sel
                ],
                np.float32,
            ).reshape(-1, 4),
            scores[sel].astype(np.float32),
            np.array([dets_raw[j][1] for j in sel], np.int64),
        )
    return ds, dets, gt_raw, dets_raw, scores


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_voc_ap_equals_the_devkit_reference(seed):
    ds, dets, gt_raw, dets_raw, scores = _scene(seed)
    got = voc_ap(ds, dets)
    for c, name in enumerate(ds.classes):
        gt_c = {k: [(b, d) for cc, b, d in v if cc == c] for k, v in gt_raw.items()}
        dets_c = [(im, float(s), b) for (im, cc, b), s in zip(dets_raw, scores) if cc == c]
        if not any(not d for v in gt_c.values() for _, d in v):
            assert got[name].ap11 is None
            continue
        ap11, area = devkit_ap(gt_c, dets_c)
        assert got[name].ap11 == pytest.approx(ap11, abs=1e-9)
        assert got[name].ap_area == pytest.approx(area, abs=1e-9)


def test_ap_from_pr_hand_example():
    # 3 positives; detections: TP, FP, TP, FP, TP
    prec = np.array([1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    rec = np.array([1, 1, 2, 2, 3]) / 3
    ap11, area = ap_from_pr(prec, rec)
    # envelope: 1 up to recall 1/3, 2/3 up to 2/3, 3/5 up to 1
    assert area == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 5)
    assert ap11 == pytest.approx((4 * 1 + 3 * 2 / 3 + 4 * 3 / 5) / 11)


#: The 11 recall levels, nudged below k/10: pycocotools compares float recalls with float levels, so an
#: exact recall of 3/10 misses the level 0.3 there (0.1 * 3 > 0.3 in floating point); deepfeat, like
#: the devkit reference above, compares exactly. Nudging makes the definitions coincide.
RECALL_LEVELS = np.linspace(0, 1, 11) - 1e-9


def _pycocotools_ap11(ds, dets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from deepfeat.tasks.detection.voc_eval import coco_detections, coco_ground_truth

    gt = COCO()
    gt.dataset = coco_ground_truth(ds)
    gt.createIndex()
    dt = gt.loadRes(coco_detections(ds, dets))
    ev = COCOeval(gt, dt, iouType="bbox")
    ev.params.iouThrs = np.array([0.5])
    ev.params.recThrs = RECALL_LEVELS
    ev.params.maxDets = [1000]
    ev.params.areaRng = [[0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, 0]  # recall thresholds x classes
    return [None if (p < 0).all() else float(p.mean()) for p in prec.T]


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_voc07_ap_equals_pycocotools_where_definitions_coincide(seed, capsys):
    # no difficult/crowd boxes, boxes far apart (greedy matching identical), 11 recall levels
    # compared exactly, IoU 0.5, no per-image cap: COCOeval's AP is then the VOC07 11-point AP
    ds, dets, *_ = _scene(seed, difficult=False, spaced=True)
    got = voc_ap(ds, dets)
    ref = _pycocotools_ap11(ds, dets)
    for name, want in zip(ds.classes, ref):
        assert (got[name].ap11 is None) == (want is None)
        if want is not None:
            assert got[name].ap11 == pytest.approx(want, abs=1e-9)


def test_voc07_ap_equals_torchmetrics_where_definitions_coincide():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.detection")
    ds, dets, *_ = _scene(6, difficult=False, spaced=True)
    metric = tm.MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        iou_thresholds=[0.5],
        rec_thresholds=RECALL_LEVELS.tolist(),
        max_detection_thresholds=[1, 10, 100],
        class_metrics=True,
        backend="pycocotools",
    )
    for t in ds.images:
        d = dets[t.image_id]
        metric.update(
            [
                {
                    "boxes": torch.from_numpy(d.boxes),
                    "scores": torch.from_numpy(d.scores),
                    "labels": torch.from_numpy(d.labels),
                }
            ],
            [{"boxes": torch.from_numpy(t.boxes), "labels": torch.from_numpy(t.labels)}],
        )
    out = metric.compute()
    got = voc_ap(ds, dets)
    per_class = dict(zip(out["classes"].tolist(), out["map_per_class"].tolist()))
    for c, name in enumerate(ds.classes):
        if got[name].ap11 is not None:
            assert per_class[c] == pytest.approx(got[name].ap11, abs=1e-6)
    assert float(out["map"]) == pytest.approx(
        np.mean([a.ap11 for a in got.values() if a.ap11 is not None]), abs=1e-6
    )


def test_coco_ap_runs_and_is_perfect_on_ground_truth():
    ds, _, *_ = _scene(7, difficult=False, spaced=True)
    perfect = {
        t.image_id: Detections(t.boxes, np.linspace(1, 0.5, len(t)).astype(np.float32), t.labels)
        for t in ds.images
    }
    stats = coco_ap(ds, perfect)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert all(a.ap11 in (None, 1.0) for a in voc_ap(ds, perfect).values())


def test_difficult_detections_count_neither_way():
    t = BoxTable("a", Path("a.jpg"), [[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], [False, True])
    ds = DetectionDataset("d", ["x"], [t])
    dets = {
        "a": Detections(
            np.array([[50, 50, 60, 60], [0, 0, 10, 10]], np.float32),
            np.array([0.9, 0.8], np.float32),
            np.array([0, 0]),
        )
    }
    ap = voc_ap(ds, dets)["x"]
    assert ap.n_gt == 1 and ap.ap11 == pytest.approx(1.0)  # the hit on the difficult box is ignored


def test_coco_metrics_equal_pycocotools_on_the_annotation_file_itself(tmp_path):
    """COCO's size ranges use each object's own ``area`` (its segmentation's), not its box's: the
    scores of a COCO file equal COCOeval's on that very file."""
    import json

    from PIL import Image
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from deepfeat.data.coco import coco_dataset
    from deepfeat.tasks.detection.voc_eval import COCO_STATS, coco_detections

    rng = np.random.default_rng(0)
    (tmp_path / "val").mkdir()
    images, anns, results = [], [], []
    for i in range(1, 7):
        Image.new("RGB", (400, 300)).save(tmp_path / "val" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 400, "height": 300})
        for _ in range(4):
            w, h = rng.uniform(12, 200, 2)
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 300 - h)
            # a segmentation area well under the box's: many objects change size range
            area = float(w * h * rng.uniform(0.2, 0.9))
            cat = int(rng.integers(1, 3))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": area,
                    "iscrowd": 0,
                }
            )
            jitter = rng.normal(0, 4, 4)
            results.append(
                {
                    "image_id": i,
                    "category_id": cat,
                    "score": float(rng.uniform()),
                    "bbox": [float(x + jitter[0]), float(y + jitter[1]), float(w), float(h)],
                }
            )
    data = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(data))

    def size_range(a):
        return int(a >= 32**2) + int(a >= 96**2)

    assert any(size_range(a["area"]) != size_range(a["bbox"][2] * a["bbox"][3]) for a in anns)

    ds = coco_dataset(path, tmp_path / "val")
    dets = {}
    for t in ds.images:
        mine = [r for r in results if r["image_id"] == t.source_id]
        dets[t.image_id] = Detections(
            np.array(
                [
                    [r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]
                    for r in mine
                ],
                np.float32,
            ),
            np.array([r["score"] for r in mine], np.float32),
            np.array([r["category_id"] - 1 for r in mine], np.int64),
        )
    got = coco_ap(ds, dets)

    gt = COCO(str(path))
    ev = COCOeval(gt, gt.loadRes(coco_detections(ds, dets)), iouType="bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert all(v >= 0 for v in ev.stats)  # every size range holds objects
    for key, want in zip(COCO_STATS, ev.stats):
        assert got[key] == pytest.approx(want, abs=1e-9), key


def test_report_file_names_are_distinct_for_ids_that_flatten_alike():
    from deepfeat.tasks.detection.report import file_stems

    stems = file_stems(["a/x", "a__x", "b/x", "a/x"[:1]])
    assert stems == {"a/x": "a__x", "a__x": "a__x-2", "b/x": "b__x", "a": "a"}
