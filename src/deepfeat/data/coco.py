"""COCO instances files (``instances_<split>.json``) as :class:`~deepfeat.data.detection.DetectionDataset`:
boxes clipped to their image (and reported), ``iscrowd`` objects flagged as difficult, each object's
own ``area`` kept (COCO's size ranges use it), category ids kept for scoring with pycocotools."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from deepfeat.data.boxes import BoxTable, DetectionDataset, clip_box
from deepfeat.data.images import printable
from deepfeat.errors import DataError


def _coco_size(img: dict) -> tuple[int, int] | None:
    try:
        return (int(img["width"]), int(img["height"]))
    except (KeyError, TypeError, ValueError):
        return None


def _image_ids(file_names: list[str]) -> list[str]:
    """Image ids: the file stems, unless two files share one (a/x.jpg, b/x.jpg: the paths without
    suffix; x.jpg, x.png: the file names)."""
    for form in (lambda n: Path(n).stem, lambda n: str(Path(n).with_suffix("")), str):
        ids = [form(n) for n in file_names]
        if len(set(ids)) == len(ids):
            return ids
    return file_names  # the same file twice: refused by the dataset, naming the id


def _check_entries(path: Path, data: dict) -> None:
    """Images and categories as COCO has them: objects with the keys everything else relies on."""
    where = printable(path)
    for field, keys in (("images", ("id", "file_name")), ("categories", ("id", "name"))):
        if not isinstance(data[field], list):
            raise DataError(f"{where}: {field} must be a list, got {type(data[field]).__name__}")
        for k, item in enumerate(data[field]):
            missing = [key for key in keys if not isinstance(item, dict) or key not in item]
            if missing:
                raise DataError(
                    f"{where}: {field}[{k}] ({str(item)[:60]}) has no {' or '.join(missing)}; every entry of "
                    f"{field} needs {', '.join(keys)}"
                )
    if not isinstance(data["annotations"], list):
        raise DataError(f"{where}: annotations must be a list, got {type(data['annotations']).__name__}")
    for field in ("images", "categories"):
        seen = set()
        for item in data[field]:
            if item["id"] in seen:
                raise DataError(f"{where}: {field} id {item['id']!r} appears more than once")
            seen.add(item["id"])


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
    _check_entries(path, data)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict = {img["id"]: [] for img in data["images"]}
    sizes = {img["id"]: _coco_size(img) for img in data["images"]}
    ignored: list[tuple[str, str]] = []
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            ignored.append((f"{printable(path)} annotation #{k}", f"not an object ({type(ann).__name__})"))
            continue
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
    names = _image_ids([str(img["file_name"]) for img in data["images"]])
    image_ids = {img["id"]: name for img, name in zip(data["images"], names)}
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
                image_id=image_ids[img["id"]],
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
