"""Labelled image collections: a class-per-folder tree, a manifest (CSV or JSON lines), in-memory arrays
and scikit-learn's bundled digits (the embedded default).

Every dataset is an indexable list of items with a stable id, its labels and, when the data defines one,
its split. Labels are ``targets``: an int64 vector of class indices for single-label data, or an
(n_items, n_classes) uint8 indicator matrix for multi-label data (with an optional ``difficult`` mask,
VOC style). Nothing is dropped silently: files that cannot belong to the dataset (hidden files, files
outside class folders) are listed in ``ignored`` with the reason, and files that fail to decode are
reported by the extraction run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deepfeat.data.images import DEFAULT_MAX_PIXELS, DraftRule, load_image, to_rgb
from deepfeat.errors import DataError

SPLIT_NAMES = ("train", "val", "valid", "validation", "test")
_LABEL_SEPARATORS = (";", "|")
_PATH_KEYS = ("path", "image", "file", "filename")


@dataclass
class ImageDataset:
    """Base class: ids, targets, classes and optional splits; subclasses know how to load item i."""

    name: str
    ids: list[str]
    classes: list[str]
    targets: np.ndarray
    splits: np.ndarray | None = None
    difficult: np.ndarray | None = None
    ignored: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets)
        n = len(self.ids)
        if n == 0:
            raise DataError(f"dataset {self.name!r} holds no items")
        if len(self.targets) != n:
            raise DataError(f"dataset {self.name!r}: {n} items but {len(self.targets)} targets")
        if len(set(self.ids)) != n:
            dup = next(i for i in self.ids if self.ids.count(i) > 1)
            raise DataError(f"dataset {self.name!r}: item id {dup!r} appears more than once")
        if self.splits is not None:
            self.splits = np.asarray(self.splits, dtype=object)

    @property
    def multilabel(self) -> bool:
        """True when targets is an indicator matrix (several labels per item)."""
        return self.targets.ndim == 2

    def __len__(self) -> int:
        return len(self.ids)

    def source(self, index: int) -> str:
        """Human-readable origin of item ``index`` (a file path for file datasets)."""
        return self.ids[index]

    def load(
        self, index: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: DraftRule | None = None
    ) -> Image.Image:
        """Decode item ``index`` as an upright RGB image; raises ImageError when it cannot."""
        raise NotImplementedError

    def image_size(self, index: int) -> tuple[int, int] | None:
        """(width, height) of item ``index`` as loaded, read cheaply where possible (None: unknown)."""
        return None

    def fingerprint(self) -> str:
        """sha256 over everything that identifies the items: ids, content keys, labels, splits."""
        h = hashlib.sha256()
        h.update(json.dumps(self.classes).encode())
        h.update(np.ascontiguousarray(self.targets).tobytes())
        if self.difficult is not None:
            h.update(np.ascontiguousarray(self.difficult).tobytes())
        if self.splits is not None:
            h.update("\0".join(map(str, self.splits)).encode())
        self._hash_content(h)
        return h.hexdigest()

    def _hash_content(self, h) -> None:
        raise NotImplementedError

    def index_record(self) -> dict:
        """Plain-JSON description of the items (ids, labels, classes, splits) kept with features."""
        return {
            "name": self.name,
            "ids": self.ids,
            "classes": self.classes,
            "multilabel": self.multilabel,
            "targets": self.targets.tolist(),
            "splits": None if self.splits is None else [str(s) for s in self.splits],
            "difficult": None if self.difficult is None else self.difficult.astype(int).tolist(),
        }

    def summary(self) -> str:
        """One line: size, classes, splits."""
        kind = "multi-label" if self.multilabel else "single-label"
        parts = [f"{self.name}: {len(self)} items, {len(self.classes)} classes ({kind})"]
        if self.splits is not None:
            names, counts = np.unique(self.splits.astype(str), return_counts=True)
            parts.append("splits " + ", ".join(f"{n}={c}" for n, c in zip(names, counts)))
        if self.ignored:
            parts.append(f"{len(self.ignored)} files ignored")
        return "; ".join(parts)


@dataclass
class FileDataset(ImageDataset):
    """Images stored as files; ``paths[i]`` is the file of item ``i``."""

    paths: list[Path] = field(default_factory=list)
    root: Path | None = None

    def source(self, index: int) -> str:
        return str(self.paths[index])

    def load(
        self, index: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: DraftRule | None = None
    ) -> Image.Image:
        return load_image(self.paths[index], max_pixels=max_pixels, draft=draft)

    def image_size(self, index: int) -> tuple[int, int] | None:
        """Size from the file header (EXIF rotations by 90 degrees swap it); None if unreadable."""
        try:
            with Image.open(self.paths[index]) as img:
                w, h = img.size
                orientation = img.getexif().get(0x0112, 1)
        except Exception:  # a bad file is reported when it is loaded
            return None
        return (h, w) if orientation in (5, 6, 7, 8) else (w, h)

    def _hash_content(self, h) -> None:
        # File identity by id, size and modification time: cheap, and changes whenever a file does.
        for item_id, path in zip(self.ids, self.paths):
            try:
                st = path.stat()
                key = f"{item_id}\0{st.st_size}\0{st.st_mtime_ns}\n"
            except OSError:
                key = f"{item_id}\0missing\n"
            h.update(key.encode())


@dataclass
class ArrayDataset(ImageDataset):
    """Images held in memory as a uint8 array of shape (N, H, W) or (N, H, W, 3|4)."""

    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.uint8))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
            raise DataError(
                f"dataset {self.name!r}: images must be uint8 (N, H, W) or (N, H, W, C), "
                f"got {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(self.ids):
            raise DataError(f"dataset {self.name!r}: {len(self.images)} images for {len(self.ids)} ids")

    def load(
        self, index: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: DraftRule | None = None
    ) -> Image.Image:
        return to_rgb(Image.fromarray(self.images[index]))

    def image_size(self, index: int) -> tuple[int, int] | None:
        return int(self.images.shape[2]), int(self.images.shape[1])

    def _hash_content(self, h) -> None:
        h.update(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())


def digits_dataset() -> ArrayDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), as 8-bit grayscale."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return ArrayDataset(
        name="digits",
        ids=[f"digits/{i:04d}" for i in range(len(images))],
        classes=[str(c) for c in bunch.target_names],
        targets=bunch.target.astype(np.int64),
        images=images,
    )


def folder_dataset(root: str | os.PathLike) -> FileDataset:
    """A class-per-folder tree ``root/<class>/<image>``, or ``root/<split>/<class>/<image>`` when every
    top-level folder is a split name (train, val, valid, validation, test).

    Every non-hidden file inside a class folder (at any depth) is an item: files that do not decode are
    reported when features are extracted, not dropped here.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a class-per-folder image tree)")
    ignored: list[tuple[str, str]] = []
    top = _subdirs(root, ignored)
    if not top:
        raise DataError(
            f"{root}: no class folders; expected {root}/<class>/<image> or {root}/<split>/<class>/<image>"
        )
    for entry in sorted(root.iterdir()):
        if entry.is_file() and not entry.name.startswith("."):
            ignored.append((str(entry), "file outside any class folder"))
    use_splits = all(d.name.lower() in SPLIT_NAMES for d in top)
    groups: list[tuple[str | None, Path]] = []
    if use_splits:
        for split_dir in top:
            class_dirs = _subdirs(split_dir, ignored)
            if not class_dirs:
                raise DataError(f"{split_dir}: split folder holds no class folders")
            for entry in sorted(split_dir.iterdir()):
                if entry.is_file() and not entry.name.startswith("."):
                    ignored.append((str(entry), "file outside any class folder"))
            groups += [(split_dir.name, d) for d in class_dirs]
    else:
        groups = [(None, d) for d in top]
    classes = sorted({d.name for _, d in groups})
    index = {c: i for i, c in enumerate(classes)}
    paths: list[Path] = []
    targets: list[int] = []
    splits: list[str | None] = []
    for split, class_dir in groups:
        files = _files_below(class_dir, ignored)
        if not files:
            raise DataError(f"{class_dir}: class folder holds no files; add images or remove it")
        paths += files
        targets += [index[class_dir.name]] * len(files)
        splits += [split] * len(files)
    return FileDataset(
        name=root.name or str(root),
        ids=[p.relative_to(root).as_posix() for p in paths],
        classes=classes,
        targets=np.asarray(targets, dtype=np.int64),
        splits=np.asarray(splits, dtype=object) if use_splits else None,
        ignored=ignored,
        paths=paths,
        root=root,
    )


def manifest_dataset(path: str | os.PathLike) -> FileDataset:
    """Items listed in a CSV file (header row) or a JSON-lines file, one image per row.

    Columns / keys: ``path`` (relative to the manifest's folder unless absolute) and either ``label``
    (one class per image) or ``labels`` (any number, for multi-label data; in CSV separated by ``;``
    or ``|``). Optional: ``split`` (train / val / test ...) and, with ``labels``, ``difficult`` (labels
    present but marked difficult, excluded from scoring as the VOC devkit does).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        rows = _read_jsonl(path)
    else:
        raise DataError(f"{path}: unknown manifest type {suffix!r}; valid: .csv, .jsonl, .ndjson, .json")
    if not rows:
        raise DataError(f"{path}: manifest lists no images")
    keys = set().union(*(r.keys() for _, r in rows))
    path_key = next((k for k in _PATH_KEYS if k in keys), None)
    if path_key is None:
        raise DataError(f"{path}: no image path column; valid names: {', '.join(_PATH_KEYS)}")
    if "labels" in keys:
        label_key, multilabel = "labels", True
    elif "label" in keys:
        label_key, multilabel = "label", False
    else:
        raise DataError(f"{path}: no label column; valid names: label (one per image), labels (several)")
    base = path.parent
    paths: list[Path] = []
    ids: list[str] = []
    labels: list[list[str]] = []
    hard: list[list[str]] = []
    splits: list[str | None] = []
    for line, row in rows:
        raw_path = row.get(path_key)
        if raw_path in (None, ""):
            raise DataError(f"{path}, line {line}: empty {path_key!r}")
        p = Path(str(raw_path))
        paths.append(p if p.is_absolute() else base / p)
        ids.append(str(raw_path))
        item_labels = _as_label_list(row.get(label_key))
        if not item_labels and not multilabel:
            raise DataError(f"{path}, line {line}: empty label")
        if not multilabel and len(item_labels) != 1:
            raise DataError(f"{path}, line {line}: column 'label' takes one class; use 'labels' for several")
        labels.append(item_labels)
        hard.append(_as_label_list(row.get("difficult")))
        splits.append(None if row.get("split") in (None, "") else str(row["split"]))
    classes = sorted({c for item in labels + hard for c in item})
    if not classes:
        raise DataError(f"{path}: no image has a label")
    index = {c: i for i, c in enumerate(classes)}
    if multilabel:
        targets = np.zeros((len(ids), len(classes)), dtype=np.uint8)
        difficult = np.zeros((len(ids), len(classes)), dtype=bool)
        for i, (item, item_hard) in enumerate(zip(labels, hard)):
            targets[i, [index[c] for c in item]] = 1
            difficult[i, [index[c] for c in item_hard]] = True
        difficult_or_none = difficult if difficult.any() else None
    else:
        targets = np.asarray([index[item[0]] for item in labels], dtype=np.int64)
        difficult_or_none = None
    has_splits = any(s is not None for s in splits)
    if has_splits and any(s is None for s in splits):
        line = rows[splits.index(None)][0]
        raise DataError(f"{path}, line {line}: 'split' is empty here but set on other rows")
    return FileDataset(
        name=path.stem,
        ids=ids,
        classes=classes,
        targets=targets,
        splits=np.asarray(splits, dtype=object) if has_splits else None,
        difficult=difficult_or_none,
        paths=paths,
        root=base,
    )


def open_dataset(spec: str | os.PathLike) -> ImageDataset:
    """``"digits"`` (embedded), a folder tree, or a manifest file (.csv / .jsonl)."""
    if str(spec) == "digits":
        return digits_dataset()
    path = Path(spec)
    if path.is_dir():
        return folder_dataset(path)
    if path.is_file():
        return manifest_dataset(path)
    raise DataError(
        f"{spec}: no such folder or manifest; valid: 'digits', a class-per-folder tree, "
        "a .csv or .jsonl manifest"
    )


def _subdirs(folder: Path, ignored: list[tuple[str, str]]) -> list[Path]:
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            ignored.append((str(entry), "hidden"))
        elif entry.is_dir():
            out.append(entry)
    return out


def _files_below(folder: Path, ignored: list[tuple[str, str]]) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in sorted(dirnames):
            if d.startswith("."):
                ignored.append((os.path.join(dirpath, d), "hidden"))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if name.startswith("."):
                ignored.append((str(full), "hidden"))
            else:
                files.append(full)
    return files


def _as_label_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    for sep in _LABEL_SEPARATORS:
        if sep in text:
            return [t.strip() for t in text.split(sep) if t.strip()]
    return [text] if text else []


def _read_csv(path: Path) -> list[tuple[int, dict]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return []
        return [(i + 2, {k.strip().lower(): v for k, v in row.items() if k}) for i, row in enumerate(reader)]


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {i}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {i}: expected a JSON object with 'path' and 'label(s)'")
            rows.append((i, {str(k).lower(): v for k, v in row.items()}))
    return rows


def dataset_from_paths(paths: Sequence[str | os.PathLike], labels: Sequence | None = None) -> FileDataset:
    """A dataset of the given image files (labels optional: all items get class ``"unlabelled"``)."""
    paths = [Path(p) for p in paths]
    if labels is None:
        classes, targets = ["unlabelled"], np.zeros(len(paths), dtype=np.int64)
    else:
        if len(labels) != len(paths):
            raise DataError(f"{len(paths)} paths but {len(labels)} labels")
        classes = sorted({str(v) for v in labels})
        index = {c: i for i, c in enumerate(classes)}
        targets = np.asarray([index[str(v)] for v in labels], dtype=np.int64)
    return FileDataset(
        name="files", ids=[str(p) for p in paths], classes=classes, targets=targets, paths=paths
    )
