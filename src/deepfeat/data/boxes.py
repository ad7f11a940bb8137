"""Object-detection tables: the annotated boxes of one image (:class:`BoxTable`) and a dataset of
them (:class:`DetectionDataset`), read by :mod:`deepfeat.data.detection` (VOC) and
:mod:`deepfeat.data.coco`; boxes are float32 ``(x1, y1, x2, y2)`` in continuous pixel coordinates."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from deepfeat.data.images import DEFAULT_MAX_PIXELS, load_image
from deepfeat.errors import DataError
from deepfeat.report.wording import counted


@dataclass(frozen=True)
class BoxTable:
    """The annotated boxes of one image: ``boxes`` (N, 4) float32, ``labels`` (N,) class indices,
    ``difficult`` (N,) bool; ``size`` is (width, height) when the annotation gives it;
    ``source_id`` is the image's id in its annotation file (COCO's integer id); ``areas`` (N,)
    float32: each object's own area where the annotation gives one (COCO's segmentation area, which
    COCO's small / medium / large ranges use; NaN where absent), else None."""

    image_id: str
    path: Path
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    size: tuple[int, int] | None = None
    source_id: int | str | None = None
    areas: np.ndarray | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not len(boxes) == len(labels) == len(difficult):
            raise DataError(
                f"{self.image_id}: {len(boxes)} boxes, {len(labels)} labels, {len(difficult)} difficult flags"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "difficult", difficult)
        if self.areas is not None:
            areas = np.asarray(self.areas, dtype=np.float32).reshape(-1)
            if len(areas) != len(boxes):
                raise DataError(f"{self.image_id}: {len(boxes)} boxes, {len(areas)} areas")
            object.__setattr__(self, "areas", areas)

    def __len__(self) -> int:
        return len(self.boxes)

    def file_identity(self) -> bytes:
        """The image's id and its file's size and modification time ("missing" where it has none),
        as fingerprints hash them."""
        try:
            st = self.path.stat()
            ident = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            ident = "missing"
        return f"{self.image_id}\0{ident}\n".encode("utf-8", "surrogateescape")


@dataclass
class DetectionDataset:
    """Images with their box tables, the class names, and what could not be read or was changed
    (``ignored``: (file, reason) pairs; boxes clipped to their image are kept and listed there too).
    ``category_ids``: the annotation file's id of every class (COCO)."""

    name: str
    classes: list[str]
    images: list[BoxTable]
    ignored: list[tuple[str, str]] = field(default_factory=list)
    category_ids: list[int] | None = None
    kind: str = "voc"

    def __post_init__(self) -> None:
        if not self.classes:
            raise DataError(f"detection data {self.name!r} has no classes")
        seen: set[str] = set()
        for table in self.images:
            if table.image_id in seen:
                raise DataError(f"{self.name}: image id {table.image_id!r} appears more than once")
            seen.add(table.image_id)
            if len(table) and (table.labels.min() < 0 or table.labels.max() >= len(self.classes)):
                raise DataError(
                    f"{self.name}: {table.image_id} has a label outside 0..{len(self.classes) - 1}"
                )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> BoxTable:
        return self.images[index]

    @property
    def ids(self) -> list[str]:
        return [t.image_id for t in self.images]

    def load(self, index: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Decode image ``index`` as upright RGB (an ImageError naming the file if it cannot)."""
        return load_image(self.images[index].path, max_pixels=max_pixels)

    def subset(self, indices: Sequence[int], name: str | None = None) -> DetectionDataset:
        """The images at ``indices`` (in that order), same classes."""
        return replace(self, name=name or self.name, images=[self.images[i] for i in indices], ignored=[])

    def with_classes(self, classes: Sequence[str], absent: bool = False) -> tuple[DetectionDataset, int]:
        """The same images with only the boxes of ``classes`` (in that order, labels renumbered), and
        how many boxes of other classes were left out. Each class must be among this dataset's;
        with ``absent``, one that is not has no box (VOC lists only the classes its images hold,
        and its files annotate every class of the set: a test list may hold none of some class)."""
        missing = [c for c in classes if c not in self.classes]
        if missing and not (absent and self.category_ids is None):
            raise DataError(f"{self.name}: no class {', '.join(map(repr, missing))} (it has {self.classes})")
        new = np.full(len(self.classes), -1, dtype=np.int64)
        for i, c in enumerate(classes):
            if c in self.classes:
                new[self.classes.index(c)] = i
        tables, dropped = [], 0
        for t in self.images:
            keep = new[t.labels] >= 0
            dropped += int((~keep).sum())
            areas = None if t.areas is None else t.areas[keep]
            boxes, labels, difficult = t.boxes[keep], new[t.labels[keep]], t.difficult[keep]
            tables.append(replace(t, boxes=boxes, labels=labels, difficult=difficult, areas=areas))
        ids = (
            None if self.category_ids is None else [self.category_ids[self.classes.index(c)] for c in classes]
        )
        return replace(self, classes=list(classes), images=tables, category_ids=ids), dropped

    def class_counts(self, include_difficult: bool = False) -> dict[str, int]:
        """Number of annotated boxes per class."""
        counts = np.zeros(len(self.classes), dtype=np.int64)
        for t in self.images:
            keep = np.ones(len(t), bool) if include_difficult else ~t.difficult
            counts += np.bincount(t.labels[keep], minlength=len(self.classes))
        return dict(zip(self.classes, counts.tolist()))

    def fingerprint(self) -> str:
        """sha256 over the classes, every image's id, file identity (size, mtime) and boxes."""
        h = hashlib.sha256(json.dumps(self.classes).encode())
        for t in self.images:
            h.update(t.file_identity())
            h.update(t.boxes.tobytes() + t.labels.tobytes() + t.difficult.tobytes())
        return h.hexdigest()

    def summary(self) -> str:
        counts = self.class_counts(include_difficult=True)
        n_boxes = sum(counts.values())
        text = f"{self.name}: {len(self)} images, {n_boxes} boxes, {len(self.classes)} classes"
        clipped = sum("clipped to" in reason for _, reason in self.ignored)  # kept, and reported
        if len(self.ignored) > clipped:
            text += f"; {counted(len(self.ignored) - clipped, 'entry', 'entries')} ignored"
        if clipped:
            text += f"; {counted(clipped, 'box', 'boxes')} clipped to their image"
        return text


def clip_box(box: list[float], size: tuple[int, int] | None) -> tuple[list[float] | None, str | None]:
    """``box`` (x0, y0, x1, y1) clipped to an image of ``size`` (width, height; None: unknown, kept as
    it is), and a note when it was clipped, or dropped (None) for lying outside the image."""
    if size is None:
        return box, None
    w, h = size
    clipped = [max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(w)), min(box[3], float(h))]
    if clipped == box:
        return box, None
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, f"box {box} lies outside the {w} x {h} image; object left out"
    return clipped, f"box {box} reaches outside the {w} x {h} image; clipped to {clipped}"
