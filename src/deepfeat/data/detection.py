"""Object-detection data: one box table per image, read from a PASCAL VOC folder or a COCO instances
file (:mod:`deepfeat.data.coco`); the tables themselves in :mod:`deepfeat.data.boxes`.

Boxes are float32 ``(x1, y1, x2, y2)`` in continuous pixel coordinates: pixel ``i`` covers
``[i, i + 1)``, so a box's width is ``x2 - x1``. VOC's 1-based inclusive pixel indices become
``(xmin - 1, ymin - 1, xmax, ymax)``, which makes the plain IoU of two boxes equal the devkit's
(that adds 1 to every width and height); COCO's ``[x, y, w, h]`` becomes ``(x, y, x + w, y + h)``.

Nothing is dropped silently: an annotation file that cannot be read, an image listed without its
file, an object with an empty or inverted box, are listed in ``ignored`` with the file and the reason.
Images whose pixels cannot be decoded are reported later, by the step that decodes them.

``difficult`` (VOC) and ``iscrowd`` (COCO) objects are kept and flagged: detection AP ignores them
(neither a hit nor a miss), as both benchmarks do.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepfeat.data.boxes import BoxTable, DetectionDataset, clip_box
from deepfeat.data.coco import coco_dataset
from deepfeat.data.images import printable
from deepfeat.errors import ConfigError, DataError

__all__ = [
    "VOC_CLASSES",
    "BoxTable",
    "DetectionDataset",
    "clip_box",
    "coco_dataset",
    "open_detection",
    "voc_dataset",
]

#: The 20 PASCAL VOC classes in the devkit's order.
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


# -- VOC ----------------------------------------------------------------------------------------
def _text(node: ET.Element | None, tag: str) -> str | None:
    child = None if node is None else node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _parse_voc_xml(path: Path) -> tuple[tuple[int, int] | None, list[tuple[str, list[float], bool]], list]:
    """(size, [(name, box, difficult)], problems) of one VOC annotation file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{printable(path)}: cannot read VOC annotation ({exc})") from None
    size = None
    w, h = _text(root.find("size"), "width"), _text(root.find("size"), "height")
    if w and h:
        try:
            size = (int(float(w)), int(float(h)))
        except ValueError:
            size = None
    objects, problems = [], []
    for k, obj in enumerate(root.iter("object")):
        name = _text(obj, "name")
        bnd = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(_text(bnd, t) or "nan") for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            xmin = ymin = xmax = ymax = float("nan")
        box = [xmin - 1.0, ymin - 1.0, xmax, ymax]
        where = f"{printable(path)} object {k}"
        if not name or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            problems.append((where, f"unusable object (name {name!r}, box {box})"))
            continue
        box, note = clip_box(box, size)
        if note:
            problems.append((where, f"{note} (name {name!r})"))
        if box is None:
            continue
        difficult = (_text(obj, "difficult") or "0") not in ("0", "", "false")
        objects.append((name, box, difficult))
    return size, objects, problems


def voc_dataset(
    root: str | os.PathLike, split: str | None = "trainval", classes: Sequence[str] | None = None
) -> DetectionDataset:
    """A PASCAL VOC folder (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``).

    ``split``: the image list to read (None: every annotation file). ``classes``: the classes to keep,
    in this order (objects of other classes are left out); default: every class named in the
    annotations, sorted (the 20 VOC classes in the devkit's order when all of them appear).
    """
    root = Path(root)
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    if not ann_dir.is_dir():
        raise DataError(f"{printable(root)}: not a VOC folder (no Annotations/ inside)")
    if split is None:
        ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
    else:
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            found = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
            raise DataError(
                f"{printable(listing)}: no such image list; splits available: {', '.join(found) or 'none'}"
            )
        ids = [line.split()[0] for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    ignored: list[tuple[str, str]] = []
    parsed = []
    for image_id in ids:
        xml = ann_dir / f"{image_id}.xml"
        if not xml.is_file():
            ignored.append((printable(xml), "annotation file missing; image left out"))
            continue
        try:
            size, objects, problems = _parse_voc_xml(xml)
        except DataError as exc:
            ignored.append((printable(xml), str(exc).split(": ", 1)[-1] + "; image left out"))
            continue
        ignored += problems
        image = img_dir / f"{image_id}.jpg"
        if not image.is_file():
            ignored.append((printable(image), "image file missing; image left out"))
            continue
        parsed.append((image_id, image, size, objects))
    names = sorted({name for *_, objects in parsed for name, _, _ in objects})
    if classes is None:
        classes = list(VOC_CLASSES) if set(VOC_CLASSES) <= set(names) else names
    classes = list(classes)
    if not classes:
        raise DataError(f"{printable(root)}: no object in the annotations of split {split!r}")
    index = {c: i for i, c in enumerate(classes)}
    tables = []
    for image_id, image, size, objects in parsed:
        kept = [(index[n], b, d) for n, b, d in objects if n in index]
        tables.append(
            BoxTable(
                image_id=image_id,
                path=image,
                boxes=np.array([b for _, b, _ in kept], dtype=np.float32).reshape(-1, 4),
                labels=np.array([c for c, _, _ in kept], dtype=np.int64),
                difficult=np.array([d for _, _, d in kept], dtype=bool),
                size=size,
                source_id=image_id,
            )
        )
    if not tables:
        raise DataError(f"{printable(root)}: no usable image in split {split!r} ({len(ignored)} ignored)")
    name = f"{root.name}/{split}" if split else root.name
    return DetectionDataset(name=name, classes=classes, images=tables, ignored=ignored, kind="voc")


def open_detection(
    source: str | os.PathLike, split: str | None = None, images: str | os.PathLike | None = None
) -> DetectionDataset:
    """Detection data from its spelling: a VOC folder (``split``: the ImageSets list, default
    trainval), a COCO instances ``.json`` file, or a COCO folder holding ``annotations/`` (``split``:
    e.g. ``train`` or ``val`` picks ``annotations/instances_<split>*.json``)."""
    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        if split is not None:
            raise ConfigError(
                f"{printable(path)} is one COCO split already; split {split!r} applies to a VOC folder or "
                "a COCO folder with annotations/ (give the folder, or leave --split out)"
            )
        return coco_dataset(path, images)
    if (path / "Annotations").is_dir():
        return voc_dataset(path, split="trainval" if split is None else split)
    if (path / "annotations").is_dir():
        found = sorted((path / "annotations").glob(f"instances_{split or ''}*.json"))
        if len(found) != 1:
            names = sorted(p.name for p in (path / "annotations").glob("instances_*.json"))
            raise DataError(
                f"{printable(path)}: split {split!r} names {len(found)} instances files; "
                f"give --split matching one of: {', '.join(names) or 'none'}"
            )
        return coco_dataset(found[0], images)
    raise DataError(
        f"{printable(path)}: not detection data; give a VOC folder (Annotations/, JPEGImages/), a COCO "
        "instances .json file, or a COCO folder with annotations/"
    )
