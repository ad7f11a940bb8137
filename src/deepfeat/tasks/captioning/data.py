"""Captioned images: an ``image,caption`` CSV (Flickr8k's Kaggle layout, one row per caption) or COCO
captions JSON files, read into one :class:`CaptionData`; seeded train / val / test splits of images,
written to and read from JSON.

Images are resolved relative to the CSV's folder (or its ``images/`` folder); for COCO files relative to
``<root>/<name>`` where ``captions_<name>.json`` lies in ``<root>/annotations/`` (COCO's layout), or an
``images`` folder given explicitly. A folder holding ``captions.csv`` stands for that file. Captions
that are empty after tokenisation are refused by line; images listed without captions are refused.
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

from deepfeat.data.base import FileDataset
from deepfeat.data.images import printable
from deepfeat.errors import ConfigError, DataError
from deepfeat.fileio import write_json
from deepfeat.tasks.text.tokenizer import tokenize

SPLITS = ("train", "val", "test")


@dataclass
class CaptionData:
    """Images with their captions: ``ids[i]`` (file name for CSV data, COCO image id otherwise),
    ``paths[i]`` and ``captions[i]`` (the raw reference captions, in file order)."""

    name: str
    ids: list[str]
    paths: list[Path]
    captions: list[list[str]]
    source: str = ""
    ignored: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ids:
            raise DataError(f"{self.name}: no captioned image")
        if not (len(self.ids) == len(self.paths) == len(self.captions)):
            raise DataError(f"{self.name}: ids, paths and captions differ in length")
        index: dict[str, int] = {}
        for i, item in enumerate(self.ids):
            if index.setdefault(item, i) != i:
                raise DataError(f"{self.name}: image {item!r} listed twice")
        self._index = index

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, item: str) -> int:
        return self._index[item]

    def tokens(self) -> list[list[list[str]]]:
        """The tokenised captions of every image (COCO evaluation tokenisation)."""
        return [[tokenize(c) for c in caps] for caps in self.captions]

    def subset(self, ids: Sequence[str], name: str | None = None) -> CaptionData:
        missing = [i for i in ids if i not in self._index]
        if missing:
            raise DataError(f"{self.name}: {len(missing)} images asked for are not listed ({missing[0]!r})")
        rows = [self._index[i] for i in ids]
        return CaptionData(
            name=name or self.name,
            ids=[self.ids[r] for r in rows],
            paths=[self.paths[r] for r in rows],
            captions=[list(self.captions[r]) for r in rows],
            source=self.source,
        )

    def image_dataset(self) -> FileDataset:
        """The images as a deepfeat dataset (one class), for the extraction pipeline and its store."""
        return FileDataset(
            name=self.name,
            ids=list(self.ids),
            classes=["unlabelled"],
            targets=np.zeros(len(self.ids), dtype=np.int64),
            paths=list(self.paths),
        )

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.ids, self.captions]).encode())
        return h.hexdigest()

    def summary(self) -> str:
        n = sum(len(c) for c in self.captions)
        return f"{self.name}: {len(self)} images, {n} captions ({n / len(self):.1f} per image)"


def read_captions(
    spec: str | os.PathLike | Sequence[str | os.PathLike], *, images: str | os.PathLike | None = None
) -> CaptionData:
    """Captioned images from a CSV file, a folder holding ``captions.csv``, or COCO captions JSON
    files (several are merged, e.g. train and val)."""
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    if not specs:
        raise ConfigError("no caption file given")
    parts = []
    for s in specs:
        path = Path(s)
        if path.is_dir() and (path / "captions.csv").is_file():
            path = path / "captions.csv"
        if not path.exists():
            raise DataError(f"{printable(path)}: caption file not found (give a .csv or COCO .json)")
        if path.suffix.lower() == ".csv":
            parts.append(_read_csv(path, images))
        elif path.suffix.lower() == ".json":
            parts.append(_read_coco(path, images))
        else:
            raise DataError(
                f"{printable(path)}: unknown caption file type {path.suffix!r}; valid: .csv (image,caption), "
                ".json (COCO captions), or a folder holding captions.csv"
            )
    if len(parts) == 1:
        return parts[0]
    name = "+".join(p.name for p in parts)
    return CaptionData(
        name=name,
        ids=[i for p in parts for i in p.ids],
        paths=[x for p in parts for x in p.paths],
        captions=[c for p in parts for c in p.captions],
        source=";".join(p.source for p in parts),
        ignored=[x for p in parts for x in p.ignored],
    )


def _resolve(name: str, bases: Sequence[Path]) -> Path:
    for base in bases:
        if (base / name).is_file():
            return base / name
    return bases[0] / name  # reported when it is loaded


def _check_caption(text: str, where: str) -> str:
    text = " ".join(str(text).split())
    if not tokenize(text):
        raise DataError(f"{where}: empty caption {text!r} (no word after tokenisation)")
    return text


def _read_csv(path: Path, images: str | os.PathLike | None) -> CaptionData:
    where = printable(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:  # (a BOM, as Excel writes one)
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "image" not in fields or "caption" not in fields:
                found = ", ".join(fields) or "none"
                raise DataError(f"{where}: needs the columns image,caption (found {found})")
            rows = [(i + 2, r) for i, r in enumerate(reader)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    bases = [Path(images)] if images else [path.parent, path.parent / "images"]
    order: list[str] = []
    caps: dict[str, list[str]] = {}
    for line, row in rows:
        image = (row.get("image") or "").strip()
        if not image:
            raise DataError(f"{where}, line {line}: empty image name")
        if image not in caps:
            order.append(image)
            caps[image] = []
        caps[image].append(_check_caption(row.get("caption") or "", f"{where}, line {line}"))
    return CaptionData(
        name=path.parent.name or path.stem,
        ids=order,
        paths=[_resolve(i, bases) for i in order],
        captions=[caps[i] for i in order],
        source=str(path),
    )


def _read_coco(path: Path, images: str | os.PathLike | None) -> CaptionData:
    where = printable(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        anns = [(int(a["image_id"]), str(a["caption"])) for a in data["annotations"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{where}: not a COCO captions file ({type(exc).__name__}: {exc})") from None
    stem = path.stem.removeprefix("captions_")
    if images:
        bases = [Path(images)]
    else:
        bases = [path.parent.parent / stem, path.parent / stem, path.parent, path.parent.parent / "images"]
    caps: dict[int, list[str]] = {}
    for n, (image_id, caption) in enumerate(anns):
        if image_id not in files:
            raise DataError(f"{where}: annotation {n} refers to image id {image_id}, which is not listed")
        caps.setdefault(image_id, []).append(_check_caption(caption, f"{where}, annotation {n}"))
    listed = sorted(files)
    without = [i for i in listed if i not in caps]
    ids = [i for i in listed if i in caps]
    return CaptionData(
        name=f"{path.parent.parent.name}/{stem}" if path.parent.name == "annotations" else stem,
        ids=[str(i) for i in ids],
        paths=[_resolve(files[i], bases) for i in ids],
        captions=[caps[i] for i in ids],
        source=str(path),
        ignored=[(files[i], "no caption") for i in without],
    )


# -- splits ------------------------------------------------------------------------------------------
def seeded_split(ids: Sequence[str], sizes: Sequence[int], seed: int = 0) -> dict[str, list[str]]:
    """Images shuffled by ``seed`` and cut into train / val / test of the given sizes (in file order
    within each split); the sizes may not exceed the number of images."""
    if len(sizes) != 3 or any(int(s) < 0 for s in sizes):
        raise ConfigError(f"split sizes are three counts (train, val, test), got {list(sizes)}")
    if sum(sizes) > len(ids):
        raise ConfigError(f"split sizes {list(sizes)} need {sum(sizes)} images; the data has {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    out, start = {}, 0
    position = {i: n for n, i in enumerate(ids)}
    for name, size in zip(SPLITS, sizes):
        chosen = [ids[j] for j in order[start : start + int(size)]]
        out[name] = sorted(chosen, key=position.__getitem__)
        start += int(size)
    return out


def default_sizes(n: int) -> tuple[int, int, int]:
    """80 / 10 / 10 per cent (at least one image in val and test when there are three or more)."""
    val = max(1, n // 10) if n >= 3 else 0
    test = max(1, n // 10) if n >= 3 else 0
    return n - val - test, val, test


def write_split(path: str | os.PathLike, split: dict[str, list[str]], **about) -> Path:
    """The split as JSON (``{"train": [...], "val": [...], "test": [...], "about": {...}}``)."""
    return write_json(path, {**{k: list(split[k]) for k in SPLITS}, "about": about})


def read_split(path: str | os.PathLike, data: CaptionData | None = None) -> dict[str, list[str]]:
    """A split written by :func:`write_split`; with ``data``, every image must be in it, and the parts
    may not overlap."""
    where = printable(path)
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        split = {k: [str(i) for i in raw[k]] for k in SPLITS}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{where}: not a split file (lists train, val, test of image ids): {exc}") from None
    seen: dict[str, str] = {}
    for name in SPLITS:
        for item in split[name]:
            if seen.setdefault(item, name) != name:
                raise DataError(f"{where}: image {item!r} is in both {seen[item]} and {name}")
    if data is not None:
        missing = [i for name in SPLITS for i in split[name] if i not in data._index]
        if missing:
            raise DataError(f"{where}: {len(missing)} images are not in {data.name} (first: {missing[0]!r})")
    return split
