"""Hugging Face ``datasets`` with an image column as deepfeat datasets (needs the ``hf`` extra:
``pip install "deepfeat[hf]"``).

Sources, all read from local files, never the network:

- a ``datasets.Dataset`` or ``DatasetDict`` object;
- a folder written by ``save_to_disk``;
- a dataset name (``org/name``) found in the local caches: the datasets cache (the arrow files
  ``load_dataset`` prepared, ``HF_DATASETS_CACHE`` or ``HF_HOME/datasets``) or the hub cache (the
  repository's parquet files, as ``huggingface-cli download --repo-type dataset`` leaves them).

On the command line: ``hf:PATH_OR_NAME`` (every split, with its split name, so ``--protocol fixed``
uses the dataset's own train / test split) or ``hf:PATH_OR_NAME:SPLIT``.

Columns: the image column is the one of type ``Image`` (else one named image, img, jpg or png); the
label column the ``ClassLabel`` one (else label, labels, class, target), with class names from the
``ClassLabel`` feature; a list of labels per row makes a multi-label dataset. Images are read undecoded
and decoded by deepfeat (:func:`~deepfeat.data.images.load_image_bytes`), so a bad image is reported by
its row like a bad file in a folder, and rows without a label are listed in ``ignored``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deepfeat.data.base import ImageDataset, labels_to_targets
from deepfeat.data.images import DEFAULT_MAX_PIXELS, DraftRule, load_image, load_image_bytes, to_rgb
from deepfeat.errors import ConfigError, DataError, ImageError

IMAGE_COLUMNS = ("image", "img", "jpg", "png")
LABEL_COLUMNS = ("label", "labels", "class", "target", "fine_label", "coarse_label")
SPLIT_WORDS = ("train", "validation", "valid", "val", "test")


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            'Hugging Face datasets need the datasets package: pip install "deepfeat[hf]"'
        ) from None
    return datasets


def parse_hf_spec(spec: str) -> tuple[str, str | None]:
    """(path or name, split) of ``hf:PATH_OR_NAME[:SPLIT]``."""
    body = spec[3:] if spec.startswith("hf:") else spec
    if not body:
        raise DataError("hf: names nothing; give hf:PATH_OR_NAME or hf:PATH_OR_NAME:SPLIT")
    head, sep, tail = body.rpartition(":")
    if sep and tail and "/" not in tail and head:
        return head, tail
    return body, None


def hf_cache_dirs() -> tuple[Path, Path]:
    """(datasets cache, hub cache) as the libraries resolve them from the environment now."""
    home = Path(
        os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    )
    home = home.expanduser()
    data = Path(os.environ.get("HF_DATASETS_CACHE") or home / "datasets").expanduser()
    hub = Path(os.environ.get("HF_HUB_CACHE") or home / "hub").expanduser()
    return data, hub


def hf_dataset(
    source: Any,
    split: str | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    name: str | None = None,
) -> HFImageDataset:
    """A dataset from a ``datasets`` object, a ``save_to_disk`` folder or a cached dataset name (see the
    module docstring); ``split`` picks one split (None: all, each row keeping its split name)."""
    ds = _datasets()
    splits = _open(source, ds)
    if split is not None:
        if split not in splits:
            raise DataError(f"{_label(source)}: no split {split!r}; valid: {', '.join(splits) or 'none'}")
        splits = {split: splits[split]}
    label = name or (f"{_label(source)}:{split}" if split else _label(source))
    return _build(label, splits, image_column, label_column, ds)


def _label(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return Path(source).name if Path(source).exists() else str(source)
    return type(source).__name__


def _open(source: Any, ds) -> dict[str, Any]:
    """{split name: datasets.Dataset} of any accepted source."""
    if isinstance(source, ds.DatasetDict):
        return dict(source)
    if isinstance(source, ds.Dataset):
        return {str(source.split or "data"): source}
    if not isinstance(source, str | os.PathLike):
        raise ConfigError(
            f"expected a datasets.Dataset, a folder or a dataset name, got {type(source).__name__}"
        )
    path = Path(source)
    if path.is_dir():
        try:
            loaded = ds.load_from_disk(str(path))
        except Exception as exc:
            raise DataError(
                f"{path}: not a folder written by save_to_disk ({str(exc).splitlines()[0]})"
            ) from None
        return _open(loaded, ds)
    found = _from_datasets_cache(str(source), ds) or _from_hub_cache(str(source), ds)
    if not found:
        data, hub = hf_cache_dirs()
        repo = hub / ("datasets--" + str(source).replace("/", "--"))
        raise DataError(
            f"{source}: no such save_to_disk folder, and not in the local caches (looked in "
            f"{data / _cache_name(str(source))} and {repo}); "
            "download it once (load_dataset, or huggingface-cli download --repo-type dataset) or save_to_disk"
        )
    return found


def _cache_name(name: str) -> str:
    return name.replace("/", "___")


def _split_of(filename: str) -> str | None:
    stem = Path(filename).name.lower()
    parts = [p.lower() for p in Path(filename).parts]
    for word in SPLIT_WORDS:
        if re.search(rf"(^|[-_.]){word}([-_.]|$)", stem) or word in parts:
            return word
    return None


def _from_datasets_cache(name: str, ds) -> dict[str, Any] | None:
    """Arrow files prepared by load_dataset: <cache>/<org>___<name>/<config>/<version>/<hash>/."""
    root = hf_cache_dirs()[0] / _cache_name(name)
    folders = [Path(p).parent for p in glob.glob(str(root / "*" / "*" / "*" / "dataset_info.json"))]
    if not folders:
        return None
    folder = max(folders, key=lambda p: p.stat().st_mtime)
    by_split: dict[str, list[str]] = {}
    for f in sorted(glob.glob(str(folder / "*.arrow"))):
        m = re.match(r"^.+?-(\w+?)(-\d{5}-of-\d{5})?\.arrow$", Path(f).name)
        if m:
            by_split.setdefault(m.group(1), []).append(f)
    if not by_split:
        return None
    return {
        s: ds.concatenate_datasets([ds.Dataset.from_file(f) for f in files]) for s, files in by_split.items()
    }


def _from_hub_cache(name: str, ds) -> dict[str, Any] | None:
    """Parquet files of a dataset repository in the hub cache (the snapshot refs/main names)."""
    repo = hf_cache_dirs()[1] / ("datasets--" + name.replace("/", "--"))
    ref = repo / "refs" / "main"
    snapshots = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
    if ref.is_file() and (repo / "snapshots" / ref.read_text().strip()).is_dir():
        snapshots = [repo / "snapshots" / ref.read_text().strip()]
    if len(snapshots) != 1:
        return None
    files = sorted(glob.glob(str(snapshots[0] / "**" / "*.parquet"), recursive=True))
    by_split: dict[str, list[str]] = {}
    for f in files:
        by_split.setdefault(_split_of(os.path.relpath(f, snapshots[0])) or "train", []).append(f)
    if not by_split:
        return None
    cache = str(hf_cache_dirs()[0])  # converted to arrow once, where load_dataset would put it
    return {s: ds.Dataset.from_parquet(fs, cache_dir=cache) for s, fs in by_split.items()}


def _column(features, wanted: str | None, names: tuple[str, ...], kind: str, what: str) -> str | None:
    cols = list(features)
    if wanted is not None:
        if wanted not in cols:
            raise DataError(f"no {what} column {wanted!r}; columns: {', '.join(cols)}")
        return wanted
    typed = [c for c in cols if type(features[c]).__name__ == kind]
    if typed:
        return typed[0]
    return next((c for c in names if c in cols), None)


def _build(label: str, splits: dict[str, Any], image_column, label_column, ds) -> HFImageDataset:
    first = next(iter(splits.values()))
    image_col = _column(first.features, image_column, IMAGE_COLUMNS, "Image", "image")
    if image_col is None:
        raise DataError(f"{label}: no image column (an Image feature, or {', '.join(IMAGE_COLUMNS)})")
    label_col = _column(first.features, label_column, LABEL_COLUMNS, "ClassLabel", "label")
    if label_col is None:
        raise DataError(f"{label}: no label column (a ClassLabel feature, or {', '.join(LABEL_COLUMNS)})")
    feature = first.features[label_col]
    names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    tables, rows, raw, ignored = [], [], [], []
    for t, (split, table) in enumerate(splits.items()):
        if image_col not in table.features or label_col not in table.features:
            raise DataError(f"{label}: split {split!r} lacks column {image_col!r} or {label_col!r}")
        values = table.select_columns([label_col])[label_col]
        for i, v in enumerate(values):
            if v is None or v == [] or (isinstance(v, int) and v < 0):  # ClassLabel -1: no label
                ignored.append((f"{label}[{split}/{i}]", "no label"))
                continue
            if names is not None:
                v = [names[x] for x in v] if isinstance(v, list) else names[v]
            tables.append(t)
            rows.append(i)
            raw.append(v)
    if not rows:
        raise DataError(f"{label}: no row with a label")
    classes, targets = labels_to_targets(raw)
    if names is not None and not any(isinstance(v, list) for v in raw):
        classes = [str(n) for n in names]
        index = {c: k for k, c in enumerate(classes)}
        targets = np.asarray([index[str(v)] for v in raw], dtype=np.int64)
    undecoded = [
        t.select_columns([image_col]).cast_column(image_col, ds.Image(decode=False)) for t in splits.values()
    ]
    split_names = list(splits)
    table_of = np.asarray(tables, dtype=np.int64)
    return HFImageDataset(
        name=label,
        ids=[f"{split_names[t]}/{r}" for t, r in zip(table_of, rows)],
        classes=classes,
        targets=targets,
        splits=np.asarray([split_names[t] for t in table_of], dtype=object) if len(splits) > 1 else None,
        ignored=ignored,
        tables=undecoded,
        table_of=table_of,
        rows=np.asarray(rows, dtype=np.int64),
        image_column=image_col,
        content_key=_content_key(splits),
    )


def _content_key(splits: dict[str, Any]) -> str:
    """Identity of the data: each split's datasets fingerprint and its files' size and time."""
    h = hashlib.sha256()
    for split, table in splits.items():
        h.update(f"{split}\0{getattr(table, '_fingerprint', '')}\0{len(table)}\n".encode())
        for f in getattr(table, "cache_files", []) or []:
            try:
                st = os.stat(f["filename"])
                h.update(f"{Path(f['filename']).name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(b"missing\n")
    return h.hexdigest()


@dataclass
class HFImageDataset(ImageDataset):
    """Rows of Hugging Face datasets: item i is row ``rows[i]`` of ``tables[table_of[i]]``."""

    tables: list[Any] = field(default_factory=list)
    table_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    image_column: str = "image"
    content_key: str = ""

    def source(self, index: int) -> str:
        return f"{self.name}[{self.ids[index]}]"

    def load(
        self, index: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: DraftRule | None = None
    ) -> Image.Image:
        where = self.source(index)
        try:
            cell = self.tables[self.table_of[index]][int(self.rows[index])][self.image_column]
        except Exception as exc:
            raise ImageError(where, f"cannot read the row ({type(exc).__name__}: {exc})") from exc
        if isinstance(cell, Image.Image):
            return to_rgb(cell)
        if not isinstance(cell, dict) or (cell.get("bytes") is None and not cell.get("path")):
            raise ImageError(where, "the image cell is empty")
        if cell.get("bytes") is not None:
            return load_image_bytes(cell["bytes"], where, max_pixels=max_pixels, draft=draft)
        return load_image(cell["path"], max_pixels=max_pixels, draft=draft)

    def _hash_content(self, h) -> None:
        h.update(self.content_key.encode())
        h.update("\n".join(self.ids).encode("utf-8", "surrogateescape"))
