"""The dataset types: an indexable list of items with stable ids, labels and optional splits, and the
two kinds of storage (image files, in-memory arrays). See :mod:`deepfeat.data.datasets` for the readers.

Labels are ``targets``: an int64 vector of class indices for single-label data, or an
(n_items, n_classes) uint8 indicator matrix for multi-label data (with an optional ``difficult`` mask,
VOC style).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deepfeat.data.images import DEFAULT_MAX_PIXELS, DraftRule, load_image, printable, to_rgb
from deepfeat.errors import DataError
from deepfeat.report.wording import counted


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
            first: dict[str, int] = {}
            for i, item in enumerate(self.ids):
                if item in first:
                    raise DataError(
                        f"dataset {self.name!r}: item id {item!r} appears more than once "
                        f"(items {first[item]} and {i}); each item may appear once"
                    )
                first[item] = i
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
        classes = counted(len(self.classes), "class", "classes")
        parts = [f"{self.name}: {counted(len(self), 'item')}, {classes} ({kind})"]
        if self.splits is not None:
            names, counts = np.unique(self.splits.astype(str), return_counts=True)
            parts.append("splits " + ", ".join(f"{n}={c}" for n, c in zip(names, counts)))
        if self.ignored:
            parts.append(f"{counted(len(self.ignored), 'entry', 'entries')} ignored")
        return "; ".join(parts)


@dataclass
class FileDataset(ImageDataset):
    """Images stored as files; ``paths[i]`` is the file of item ``i``."""

    paths: list[Path] = field(default_factory=list)
    root: Path | None = None

    def source(self, index: int) -> str:
        return printable(self.paths[index])

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
        # File identity by id, size and modification time: cheap, and changes when a file is rewritten
        # in place; a same-size replacement that keeps the old time (cp -p, rsync -a) is not seen (README)
        for item_id, path in zip(self.ids, self.paths):
            try:
                st = path.stat()
                key = f"{item_id}\0{st.st_size}\0{st.st_mtime_ns}\n"
            except OSError:
                key = f"{item_id}\0missing\n"
            h.update(key.encode("utf-8", "surrogateescape"))


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


def labels_to_targets(labels: list) -> tuple[list[str], np.ndarray]:
    """(class names, targets) of raw labels, one per item: strings or numbers (classes sorted, numerically
    when every label is a whole number; targets are class indices), or lists of them (multi-label: an
    indicator matrix)."""
    multilabel = any(isinstance(v, list) for v in labels)
    flat = [x for v in labels for x in (v if isinstance(v, list) else [v])]
    texts = sorted({str(x) for x in flat})
    if all(re.fullmatch(r"-?\d+", t) for t in texts):
        texts = sorted(texts, key=int)
    index = {t: i for i, t in enumerate(texts)}
    if not multilabel:
        return texts, np.asarray([index[str(v)] for v in labels], dtype=np.int64)
    targets = np.zeros((len(labels), len(texts)), dtype=np.uint8)
    for row, v in enumerate(labels):
        for x in v if isinstance(v, list) else [v]:
            targets[row, index[str(x)]] = 1
    return texts, targets
