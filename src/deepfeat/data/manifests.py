"""Manifests: image lists in a CSV file (header row) or a JSON-lines file, one image per row.

CSV follows the csv module's rules: a value holding a comma must be quoted (``"tabby, striped"``);
a row with more or fewer fields than the header is refused with its line number, as is a file that is
not UTF-8. Paths are resolved (``..``, ``.``, symbolic links, hard links): the same image listed twice,
however it is written, is refused with both line numbers, since it could land in train and test.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from deepfeat.data.base import FileDataset
from deepfeat.data.images import printable
from deepfeat.errors import DataError

_LABEL_SEPARATORS = (";", "|")
_PATH_KEYS = ("path", "image", "file", "filename")


def manifest_dataset(path: str | os.PathLike) -> FileDataset:
    """Items listed in a CSV file (header row) or a JSON-lines file, one image per row.

    Columns / keys: ``path`` (relative to the manifest's folder unless absolute) and either ``label``
    (one class per image) or ``labels`` (any number, for multi-label data; in CSV separated by ``;``
    or ``|``). Optional: ``split`` (train / val / test ...) and, with ``labels``, ``difficult`` (labels
    present but marked difficult, excluded from scoring as the VOC devkit does).
    """
    path = Path(path)
    where = printable(path)
    if not path.is_file():
        raise DataError(f"{where}: manifest file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        rows = _read_jsonl(path)
    elif path.name.lower().endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")):
        raise DataError(
            f"{where}: compressed tar shards are not read (images are read from the shard by offset); "
            "decompress them to .tar first"
        )
    else:
        raise DataError(
            f"{where}: unknown manifest type {suffix!r}; valid: .csv, .jsonl, .ndjson, .json, or .tar shards"
        )
    if not rows:
        raise DataError(f"{where}: manifest lists no images")
    keys = set().union(*(r.keys() for _, r in rows))
    path_key = next((k for k in _PATH_KEYS if k in keys), None)
    if path_key is None:
        raise DataError(f"{where}: no image path column; valid names: {', '.join(_PATH_KEYS)}")
    if "labels" in keys:
        label_key, multilabel = "labels", True
    elif "label" in keys:
        label_key, multilabel = "label", False
    else:
        raise DataError(f"{where}: no label column; valid names: label (one per image), labels (several)")
    base = path.parent
    paths: list[Path] = []
    ids: list[str] = []
    labels: list[list[str]] = []
    hard: list[list[str]] = []
    splits: list[str | None] = []
    seen: dict[tuple, tuple[int, str]] = {}
    for line, row in rows:
        raw_path = row.get(path_key)
        if raw_path in (None, ""):
            raise DataError(f"{where}, line {line}: empty {path_key!r}")
        p = Path(str(raw_path))
        p = p if p.is_absolute() else base / p
        first = seen.setdefault(_identity(p), (line, str(raw_path)))
        if first[0] != line:
            raise DataError(
                f"{where}, line {line}: {str(raw_path)!r} is the same file as {first[1]!r} on line "
                f"{first[0]}; list each image once (it could land in train and test)"
            )
        paths.append(p)
        ids.append(str(raw_path))
        item_labels = _as_label_list(row.get(label_key))
        if not item_labels and not multilabel:
            raise DataError(f"{where}, line {line}: empty label")
        if not multilabel and len(item_labels) != 1:
            raise DataError(f"{where}, line {line}: column 'label' takes one class; use 'labels' for several")
        labels.append(item_labels)
        hard.append(_as_label_list(row.get("difficult")))
        splits.append(None if row.get("split") in (None, "") else str(row["split"]))
    classes = sorted({c for item in labels + hard for c in item})
    if not classes:
        raise DataError(f"{where}: no image has a label")
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
        raise DataError(f"{where}, line {line}: 'split' is empty here but set on other rows")
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


def _identity(path: Path) -> tuple:
    """What makes two paths the same file: device and inode when it exists, else the resolved path."""
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", st.st_dev, st.st_ino)


def _decode(path: Path, encoding: str) -> str:
    where = printable(path)
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{where}, line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); "
            "save the manifest as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _read_csv(path: Path) -> list[tuple[int, dict]]:
    where = printable(path)
    reader = csv.reader(io.StringIO(_decode(path, "utf-8-sig"), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return []
        names = [h.strip().lower() for h in header]
        rows = []
        start = reader.line_num + 1
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != len(names):
                raise DataError(
                    f"{where}, line {line}: {len(fields)} fields, but the header names {len(names)} "
                    f'({", ".join(names)}); quote a value that holds a comma, e.g. "tabby, striped"'
                )
            rows.append((line, {k: v for k, v in zip(names, fields) if k}))
    except csv.Error as exc:
        raise DataError(f"{where}, line {reader.line_num}: not valid CSV ({exc})") from None
    return rows


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    where = printable(path)
    rows = []
    for i, line in enumerate(_decode(path, "utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}, line {i}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DataError(f"{where}, line {i}: expected a JSON object with 'path' and 'label(s)'")
        rows.append((i, {str(k).lower(): v for k, v in row.items()}))
    return rows
