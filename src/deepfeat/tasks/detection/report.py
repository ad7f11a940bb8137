"""Files of a detection evaluation: ``results.json`` (every number with its provenance, through
:func:`deepfeat.report.writer.write_result`), ``report.md`` (per-class table, COCO-style metrics,
proposal recall, timings), precision-recall plots and example detections drawn on images."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from deepfeat.data.images import load_image
from deepfeat.errors import ImageError
from deepfeat.fileio import write_json
from deepfeat.report import plots
from deepfeat.report.document import Report
from deepfeat.report.writer import write_result
from deepfeat.tasks.detection.draw import draw_detections
from deepfeat.tasks.detection.evaluate import DetectionResult
from deepfeat.tasks.detection.voc_eval import COCO_STATS, Detections

VARIANT_NAMES = {"bbox": "R-CNN BB (with box regression)", "plain": "R-CNN (no box regression)"}


def file_stems(image_ids: Iterable[str]) -> dict[str, str]:
    """A distinct file name stem per image id (COCO ids of files that share a stem hold their folders,
    a/x -> a__x; a name taken already gets -2, -3, ...)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for image_id in image_ids:
        stem = image_id.replace("/", "__").replace("\\", "__")
        name, k = stem, 2
        while name in used:
            name, k = f"{stem}-{k}", k + 1
        used.add(name)
        out[image_id] = name
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def pr_curves(result: DetectionResult, path: Path) -> Path:
    """One panel per class: precision against recall, every variant."""
    fig, axes = plots.grid(len(result.classes), ncols=min(5, len(result.classes)))
    styles = dict(zip(result.variants, plots.LINESTYLES))
    for ax, cls in zip(axes, result.classes):
        for name in result.variants:
            a = result.ap(name)[cls]
            label = f"{name} AP {_pct(a.ap11)}"
            ax.plot(a.recall, a.precision, styles[name], label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(cls, fontsize=9)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return plots.save(fig, path, title="precision-recall (VOC07 11-point AP)")


def per_class_ap(result: DetectionResult, path: Path) -> Path:
    """Bars of the 11-point AP per class of the primary variant."""
    values = [result.ap()[c].ap11 for c in result.classes]
    return plots.per_class(
        values, result.classes, path, "AP, VOC07 11-point (%)", title=VARIANT_NAMES[result.primary]
    )


def example_images(
    result: DetectionResult, out: Path, n: int = 6, threshold: float | None = 0.0
) -> list[tuple[str, Path]]:
    """Detections of the primary variant drawn on the first ``n`` images that have any."""
    written = []
    dets = result.detections()
    stems = file_stems(t.image_id for t in result.dataset.images)
    for table in result.dataset.images:
        if len(written) >= n:
            break
        d = dets.get(table.image_id)
        if d is None or not len(d):
            continue
        try:
            image = load_image(table.path)
        except ImageError:
            continue
        path = out / "examples" / f"{stems[table.image_id]}.png"
        draw_detections(image, d, result.classes, path, ground_truth=table.boxes, threshold=threshold)
        written.append((table.image_id, path))
    return written


def build_report(result: DetectionResult, title: str, examples: list[tuple[str, Path]], out: Path) -> Report:
    prov = result.provenance
    doc = Report(title)
    doc.facts(
        {
            "data": f"{prov.get('data')} ({len(result.dataset)} images, {len(result.classes)} classes)",
            "backbone": f"{prov.get('backbone')} (weights {str(prov.get('weights_id'))[:23]})",
            "region features": f"{prov.get('region', {}).get('mode')} regions; "
            f"SVM on {prov.get('svm_features')}"
            + (f"; box regression on {prov['bbox_features']}" if prov.get("bbox_features") else ""),
            "proposals": f"selective search {prov.get('proposals', {}).get('mode')}, "
            f"{result.counts.get('proposals_per_image', 0):.0f} per image on average",
            "test": f"per-class NMS at IoU {prov.get('test', {}).get('nms_iou')}, "
            f"top {prov.get('test', {}).get('max_per_image')} per image",
            "headline": "VOC07 11-point AP at IoU 0.5 (difficult ignored, duplicates false positives); "
            "area AP beside it",
        }
    )
    names = list(result.variants)
    doc.heading("Average precision per class (%)")
    header = ["class"] + [f"{n}: 11-pt" for n in names] + [f"{n}: area" for n in names]
    rows = [
        [c] + [_pct(result.ap(n)[c].ap11) for n in names] + [_pct(result.ap(n)[c].ap_area) for n in names]
        for c in result.classes
    ]
    rows.append(
        ["**mAP**"]
        + [_pct(result.map(n, "ap11")) for n in names]
        + [_pct(result.map(n, "ap_area")) for n in names]
    )
    doc.table(header, rows)
    doc.text("; ".join(f"{n} = {VARIANT_NAMES[n]}" for n in names))
    doc.image("pr_curves.png", "precision-recall curves per class")
    doc.image("per_class_ap.png", "AP per class")
    doc.heading("COCO-style metrics (pycocotools, %)")
    doc.table(
        ["variant", *COCO_STATS],
        [[n] + [_pct(result.variants[n]["coco"].get(k)) for k in COCO_STATS] for n in names],
    )
    doc.heading("Proposal recall at IoU 0.5 (%)")
    doc.table(
        ["class", "recall", "boxes"], [[c, _pct(v["recall"]), v["boxes"]] for c, v in result.recall.items()]
    )
    doc.heading("Timings (s)")
    doc.table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in result.timings.items()])
    if result.failures:
        doc.heading("Images skipped")
        doc.table(["file", "reason"], [list(f) for f in result.failures[:50]])
    if examples:
        doc.heading("Example detections (score > 0, annotated boxes in white)")
        for image_id, path in examples:
            doc.image(path.relative_to(out).as_posix(), image_id)
    doc.text(
        "Every number above, with its provenance, is in `results.json`; detections in `detections.json`."
    )
    return doc


def detections_json(result_dets: dict[str, Detections], classes: list[str]) -> dict:
    return {image_id: d.to_dict(classes) for image_id, d in result_dets.items()}


def write_report(
    result: DetectionResult, out: str | os.PathLike, *, title: str | None = None, n_examples: int = 6
) -> dict[str, Path]:
    """Write results.json, detections.json, report.md, the plots and example images into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    examples = example_images(result, out, n=n_examples)
    drawings = {
        "pr_curves": lambda p: pr_curves(result, p),
        "per_class_ap": lambda p: per_class_ap(result, p),
    }
    body = result.to_dict()
    body["examples"] = [p.relative_to(out).as_posix() for _, p in examples]
    paths = write_result(
        out,
        "results",
        body,
        kind="detection",
        provenance=result.provenance,
        plots=drawings,
        plot_prefix="",
        device=result.provenance.get("device"),
    )
    paths["results"] = paths.pop("json")
    paths["detections"] = write_json(
        out / "detections.json", detections_json(result.detections(), result.classes)
    )
    title = title or f"R-CNN detection: {result.provenance.get('data')}"
    paths["report"] = build_report(result, title, examples, out).write(out / "report.md")
    return paths


def summary_lines(result: DetectionResult) -> list[str]:
    """Plain-text table lines (class, AP per variant) for the terminal."""
    from deepfeat.report.tables import text_table

    names = list(result.variants)
    rows = [[c] + [_pct(result.ap(n)[c].ap11) for n in names] for c in result.classes]
    rows.append(["mAP"] + [_pct(result.map(n)) for n in names])
    return text_table(rows, ["class"] + [f"{n} AP (11-pt, %)" for n in names]).splitlines()


def write_predictions(
    dataset,
    detections: dict[str, Detections],
    classes: list[str],
    out: str | os.PathLike,
    *,
    threshold: float | None = 0.0,
    provenance: dict | None = None,
) -> dict[str, Path]:
    """``<out>/<image id>.png`` with the detections above ``threshold`` drawn, and ``predictions.json``
    (every detection of every image, through the one result writer)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pictures = {}
    stems = file_stems(t.image_id for t in dataset.images)
    for table in dataset.images:
        det = detections.get(table.image_id)
        if det is None:
            continue
        try:
            image = load_image(table.path)
        except ImageError:
            continue
        pictures[table.image_id] = draw_detections(
            image, det, classes, out / f"{stems[table.image_id]}.png", threshold=threshold
        )
    body = {
        "classes": classes,
        "threshold_drawn": threshold,
        "images": {
            t.image_id: {
                "file": str(t.path),
                "png": pictures[t.image_id].name if t.image_id in pictures else None,
                "detections": detections[t.image_id].to_dict(classes) if t.image_id in detections else None,
            }
            for t in dataset.images
        },
    }
    paths = write_result(out, "predictions", body, kind="detection-predict", provenance=provenance or {})
    paths["predictions"] = paths.pop("json")
    return {**paths, **pictures}
