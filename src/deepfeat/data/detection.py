"""Object-detection data: one box table per image, read from a PASCAL VOC folder or a COCO instances
file.

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

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from deepfeat.data.images import DEFAULT_MAX_PIXELS, load_image, printable
from deepfeat.errors import ConfigError, DataError
from deepfeat.report.wording import counted

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


@dataclass
class DetectionDataset:
    """Images with their box tables, the class names, and what could not be read (``ignored``:
    (file, reason) pairs). ``category_ids``: the annotation file's id of every class (COCO)."""

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

    def with_classes(self, classes: Sequence[str]) -> tuple[DetectionDataset, int]:
        """The same images with only the boxes of ``classes`` (each among this dataset's, in that
        order, labels renumbered), and how many boxes of other classes were left out."""
        missing = [c for c in classes if c not in self.classes]
        if missing:
            raise DataError(f"{self.name}: no class {', '.join(map(repr, missing))} (it has {self.classes})")
        new = np.full(len(self.classes), -1, dtype=np.int64)
        new[[self.classes.index(c) for c in classes]] = np.arange(len(classes))
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
            try:
                st = t.path.stat()
                ident = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                ident = "missing"
            h.update(f"{t.image_id}\0{ident}\n".encode("utf-8", "surrogateescape"))
            h.update(t.boxes.tobytes() + t.labels.tobytes() + t.difficult.tobytes())
        return h.hexdigest()

    def summary(self) -> str:
        counts = self.class_counts(include_difficult=True)
        n_boxes = sum(counts.values())
        text = f"{self.name}: {len(self)} images, {n_boxes} boxes, {len(self.classes)} classes"
        if self.ignored:
            text += f"; {counted(len(self.ignored), 'entry', 'entries')} ignored"
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


# -- COCO ---------------------------------------------------------------------------------------
def _coco_size(img: dict) -> tuple[int, int] | None:
    try:
        return (int(img["width"]), int(img["height"]))
    except (KeyError, TypeError, ValueError):
        return None


def coco_dataset(annotations: str | os.PathLike, images: str | os.PathLike | None = None) -> DetectionDataset:
    """A COCO instances file; ``images`` is the image folder (default: the folder named after the
    file's split beside its ``annotations/`` folder, e.g. ``val2017/`` for ``instances_val2017.json``).
    Classes are the file's categories in id order; crowd boxes are flagged ``difficult``."""
    path = Path(annotations)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{printable(path)}: cannot read COCO instances JSON ({exc})") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DataError(
            f"{printable(path)}: not a COCO instances file (needs images, annotations, categories)"
        )
    if images is None:
        split = path.stem.split("_", 1)[-1]
        images = path.parent.parent / split
    img_dir = Path(images)
    if not img_dir.is_dir():
        raise DataError(f"{printable(img_dir)}: image folder not found; give it with images= / --images")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict = {img["id"]: [] for img in data["images"]}
    sizes = {img["id"]: _coco_size(img) for img in data["images"]}
    ignored: list[tuple[str, str]] = []
    for ann in data["annotations"]:
        where = f"{printable(path)} annotation {ann.get('id')}"
        bbox = ann.get("bbox")
        if ann.get("image_id") not in per_image or ann.get("category_id") not in cat_index:
            ignored.append((where, "unknown image or category id"))
            continue
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            ignored.append((where, f"unusable bbox {bbox!r}"))
            continue
        if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
            ignored.append((where, f"empty or invalid bbox {bbox!r}"))
            continue
        box, note = clip_box([x, y, x + w, y + h], sizes[ann["image_id"]])
        if note:
            ignored.append((where, note))
        if box is None:
            continue
        area = ann.get("area")
        area = float(area) if isinstance(area, (int, float)) and np.isfinite(area) and area > 0 else np.nan
        crowd = bool(ann.get("iscrowd", 0))
        per_image[ann["image_id"]].append((box, cat_index[ann["category_id"]], crowd, area))
    tables = []
    for img in sorted(data["images"], key=lambda i: i["id"]):
        file = img_dir / img["file_name"]
        if not file.is_file():
            ignored.append((printable(file), "image file missing; image left out"))
            continue
        objs = per_image[img["id"]]
        size = sizes[img["id"]]
        tables.append(
            BoxTable(
                image_id=Path(img["file_name"]).stem,
                path=file,
                boxes=np.array([o[0] for o in objs], dtype=np.float32).reshape(-1, 4),
                labels=np.array([o[1] for o in objs], dtype=np.int64),
                difficult=np.array([o[2] for o in objs], dtype=bool),
                size=size,
                source_id=int(img["id"]),
                areas=np.array([o[3] for o in objs], dtype=np.float32),
            )
        )
    if not tables:
        raise DataError(f"{printable(path)}: no usable image ({len(ignored)} ignored)")
    return DetectionDataset(
        name=path.stem,
        classes=[str(c["name"]) for c in cats],
        images=tables,
        ignored=ignored,
        category_ids=[int(c["id"]) for c in cats],
        kind="coco",
    )


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
