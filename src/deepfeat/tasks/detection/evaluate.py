"""Running a trained detector: on annotated data with VOC and COCO-style AP (:func:`evaluate`), or on
any images (:func:`predict`). Proposals and region features go through the same store as training,
so a rerun reads them back instead of recomputing.

When the model has box regressors, the detections without regression come for free from the same
features: the result holds both (``result.variants``: ``"bbox"`` and ``"plain"``), the thesis'
"R-CNN" and "R-CNN BB" rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from deepfeat.data.detection import BoxTable, DetectionDataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS, printable
from deepfeat.errors import DataError
from deepfeat.features.store import FeatureStore
from deepfeat.report.provenance import environment
from deepfeat.report.wording import counted, listed
from deepfeat.tasks.detection.extract import RegionSet, extract_regions
from deepfeat.tasks.detection.model import DetectorModel
from deepfeat.tasks.detection.proposals import compute_proposals, proposal_recall
from deepfeat.tasks.detection.regions import RegionEncoder, parse_output
from deepfeat.tasks.detection.voc_eval import ClassAP, Detections, coco_ap, voc_ap


@dataclass
class DetectionResult:
    """Detections and scores of a detector on one dataset.

    ``variants``: {"bbox" | "plain": {"detections": {image id: Detections}, "ap": {class: ClassAP},
    "coco": {...}}}; ``primary`` names the variant reported first (with regression when trained).
    """

    classes: list[str]
    dataset: DetectionDataset
    variants: dict[str, dict]
    primary: str
    recall: dict
    timings: dict
    failures: list[tuple[str, str]]
    provenance: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def ap(self, variant: str | None = None) -> dict[str, ClassAP]:
        return self.variants[variant or self.primary]["ap"]

    def map(self, variant: str | None = None, kind: str = "ap11") -> float | None:
        """Mean over classes with annotated boxes of the 11-point (``ap11``) or area AP."""
        values = [getattr(a, kind) for a in self.ap(variant).values() if getattr(a, kind) is not None]
        return float(np.mean(values)) if values else None

    def detections(self, variant: str | None = None) -> dict[str, Detections]:
        return self.variants[variant or self.primary]["detections"]

    def to_dict(self) -> dict:
        out = {
            "classes": self.classes,
            "primary": self.primary,
            "proposal_recall": self.recall,
            "timings": self.timings,
            "counts": self.counts,
            "failures": [list(f) for f in self.failures],
            "variants": {},
        }
        for name, v in self.variants.items():
            out["variants"][name] = {
                "map_voc07": self.map(name, "ap11"),
                "map_area": self.map(name, "ap_area"),
                "per_class": {
                    c: {"ap_voc07": a.ap11, "ap_area": a.ap_area, "n_gt": a.n_gt, "n_det": a.n_det}
                    for c, a in v["ap"].items()
                },
                "coco": v.get("coco"),
            }
        return out


def image_size(table: BoxTable) -> tuple[int, int] | None:
    """(width, height) from the annotation or the file header; None when unreadable."""
    if table.size is not None:
        return table.size
    try:
        with Image.open(table.path) as img:
            return img.size
    except Exception:
        return None


def _features(model, folder, dataset, *, store, workers, batch_size, device, max_pixels, progress, echo):
    backbone = model.load_backbone(folder)
    proposals = compute_proposals(
        dataset, model.proposals, store=store.root, workers=workers, max_pixels=max_pixels, progress=progress
    )
    regions = RegionSet.build(dataset, proposals, with_gt=False)
    encoder = RegionEncoder(
        backbone, [parse_output(k) for k in model.outputs], model.region, device=device, batch_size=batch_size
    )
    extraction = extract_regions(
        dataset, regions, encoder, store=store, max_pixels=max_pixels, progress=progress
    )
    for path, reason in proposals.failures + extraction.failures:
        echo(f"skipped {path}: {reason}")
    return backbone, proposals, regions, extraction


def detect_all(model: DetectorModel, dataset: DetectionDataset, regions: RegionSet, extraction) -> dict:
    """{variant: {image id: Detections}} for every image with features."""
    variants = (
        {"bbox": model, "plain": replace(model, regressor=None)} if model.regressor else {"plain": model}
    )
    out: dict[str, dict[str, Detections]] = {name: {} for name in variants}
    feats = extraction.features
    for i, table in enumerate(dataset.images):
        if not feats[model.svm_key].image_valid(i):
            continue
        size = image_size(table)
        if size is None:
            continue
        rows = {k: f.image_rows(i) for k, f in feats.items()}
        for name, m in variants.items():
            out[name][table.image_id] = m.detect(regions.boxes[i], rows, *size)
    return out


def evaluate(
    model: DetectorModel | str | os.PathLike,
    dataset: DetectionDataset,
    *,
    folder: str | os.PathLike | None = None,
    store: str | os.PathLike | None = None,
    workers: int = 2,
    batch_size: int = 64,
    device: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> DetectionResult:
    """Detect on ``dataset`` and score: VOC AP (11-point and area) per class and COCO-style AP.
    ``model``: a DetectorModel or its folder; ``store``: default ``<model folder>/store``."""
    echo = echo or (lambda _msg: None)
    if not isinstance(model, DetectorModel):
        folder = Path(model)
        model = DetectorModel.load(folder)
    folder = Path(folder or ".")
    if list(dataset.classes) != list(model.classes):
        absent = [c for c in model.classes if c not in dataset.classes]
        # a VOC folder's files annotate every class of the set, and its reader lists the classes
        # its images hold: a class without a box in this list is one of no box here (AP undefined,
        # its detections false positives); COCO files name their categories, and other data may not
        # be annotated for the model's classes at all
        if absent and (dataset.kind != "voc" or len(absent) == len(model.classes)):
            raise DataError(
                f"{dataset.name}: the model's classes {listed(absent, 8)} are not among the data's "
                f"{listed(dataset.classes, 8)}; evaluate on data annotated for every class the detector "
                "was trained for"
            )
        if absent:
            echo(
                f"{dataset.name}: no box of the model's {listed(absent, 8)} in these images (VOC "
                "annotates every class: their AP is undefined, their detections count as false positives)"
            )
        # test data annotated for more classes (or in another order): the model's classes are scored
        dataset, dropped = dataset.with_classes(model.classes, absent=True)
        echo(
            f"{dataset.name}: scoring the model's {counted(len(model.classes), 'class', 'classes')}; "
            f"{counted(dropped, 'box', 'boxes')} of other classes left out"
        )
    store = FeatureStore(store or folder / "store")
    echo(dataset.summary())
    start = time.perf_counter()
    backbone, proposals, regions, extraction = _features(
        model,
        folder,
        dataset,
        store=store,
        workers=workers,
        batch_size=batch_size,
        device=device,
        max_pixels=max_pixels,
        progress=progress,
        echo=echo,
    )
    t = time.perf_counter()
    detections = detect_all(model, dataset, regions, extraction)
    variants = {}
    for name, dets in detections.items():
        variants[name] = {"detections": dets, "ap": voc_ap(dataset, dets), "coco": coco_ap(dataset, dets)}
    timings = {
        "proposals": proposals.seconds,
        "features": extraction.seconds,
        "detect_and_score": time.perf_counter() - t,
        "total": time.perf_counter() - start,
    }
    provenance = {
        **environment(device),
        "data": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "n_images": len(dataset),
        "backbone": backbone.name,
        "weights_id": backbone.weights_id,
        "model": str(folder),
        "svm_features": model.svm_key,
        "bbox_features": model.bbox_key if model.regressor is not None else None,
        "region": model.region.to_dict(),
        "proposals": model.proposals.to_dict(),
        "test": model.test.to_dict(),
        "store": str(store.root),
    }
    counts = {
        "images": len(dataset),
        "regions": len(regions),
        "proposals_per_image": proposals.mean_count(),
        "regions_computed": extraction.n_computed,
        "regions_per_second": extraction.n_computed / extraction.network_seconds
        if extraction.network_seconds
        else None,
    }
    return DetectionResult(
        classes=list(model.classes),
        dataset=dataset,
        variants=variants,
        primary="bbox" if "bbox" in variants else "plain",
        recall=proposal_recall(dataset, proposals),
        timings=timings,
        failures=proposals.failures + extraction.failures,
        provenance=provenance,
        counts=counts,
    )


def images_dataset(paths: Sequence[str | os.PathLike], classes: list[str]) -> DetectionDataset:
    """Unannotated images as a DetectionDataset (ids from the file names, made unique)."""
    tables, seen = [], {}
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise DataError(f"{printable(path)}: no such image file")
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        image_id = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
        tables.append(BoxTable(image_id, path, np.zeros((0, 4)), np.zeros(0), np.zeros(0)))
    if not tables:
        raise DataError("no image given")
    return DetectionDataset(name="images", classes=classes, images=tables)


def predict(
    model: DetectorModel | str | os.PathLike,
    images: Sequence[str | os.PathLike],
    *,
    folder: str | os.PathLike | None = None,
    store: str | os.PathLike | None = None,
    workers: int = 2,
    batch_size: int = 64,
    device: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> tuple[DetectionDataset, dict[str, Detections], list[tuple[str, str]]]:
    """Detections of every image (with box regression when the model has it): (the images as a
    dataset, {image id: Detections}, failures)."""
    echo = echo or (lambda _msg: None)
    if not isinstance(model, DetectorModel):
        folder = Path(model)
        model = DetectorModel.load(folder)
    folder = Path(folder or ".")
    dataset = images_dataset(images, list(model.classes))
    store = FeatureStore(store or folder / "store")
    _, proposals, regions, extraction = _features(
        model,
        folder,
        dataset,
        store=store,
        workers=workers,
        batch_size=batch_size,
        device=device,
        max_pixels=max_pixels,
        progress=progress,
        echo=echo,
    )
    dets = detect_all(model, dataset, regions, extraction)
    return (
        dataset,
        dets["bbox" if model.regressor is not None else "plain"],
        proposals.failures + extraction.failures,
    )
