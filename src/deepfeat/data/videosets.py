"""Labelled video collections: a class-per-folder tree ``root/<class>/<clip>.avi`` with UCF-101's
official split lists (``trainlist0N.txt`` / ``testlist0N.txt``) or without, and CSV / JSON-lines
manifests (``path,label[,split]``).

Nothing is dropped silently: files that are not videos, hidden entries, folders without videos,
videos that a split list leaves out and listed videos that are missing go to ``ignored`` with the
reason; videos that do not decode are reported by path when their frames are read
(:mod:`deepfeat.data.frames`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepfeat.data.images import printable
from deepfeat.data.manifests import manifest_dataset
from deepfeat.data.video import VIDEO_EXTENSIONS
from deepfeat.errors import DataError
from deepfeat.report.wording import counted
from deepfeat.validation import check_int

SPLIT_LIST_FOLDERS = (".", "ucfTrainTestlist", "splits", "../ucfTrainTestlist")


@dataclass
class VideoDataset:
    """Video files with one class each and, when the data defines one, a split per video."""

    name: str
    ids: list[str]
    paths: list[Path]
    classes: list[str]
    targets: np.ndarray
    splits: np.ndarray | None = None
    ignored: list[tuple[str, str]] = field(default_factory=list)
    root: Path | None = None

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=np.int64)
        if not self.ids:
            raise DataError(f"video data {self.name!r} holds no video")
        if not len(self.ids) == len(self.paths) == len(self.targets):
            raise DataError(f"video data {self.name!r}: ids, paths and targets differ in length")
        if len(set(self.ids)) != len(self.ids):
            raise DataError(f"video data {self.name!r}: a video id appears twice; list each video once")
        if self.splits is not None:
            self.splits = np.asarray([str(s).lower() for s in self.splits], dtype=object)

    def __len__(self) -> int:
        return len(self.ids)

    def source(self, row: int) -> str:
        return printable(self.paths[row])

    def subset(self, rows, name: str | None = None) -> VideoDataset:
        """The videos ``rows`` (in that order), with the same classes."""
        rows = [int(r) for r in rows]
        return VideoDataset(
            name=name or self.name,
            ids=[self.ids[r] for r in rows],
            paths=[self.paths[r] for r in rows],
            classes=list(self.classes),
            targets=self.targets[rows],
            splits=None if self.splits is None else self.splits[rows],
            ignored=list(self.ignored),
            root=self.root,
        )

    def split(self, name: str) -> VideoDataset:
        """The videos of split ``name`` (``"train"`` / ``"test"``); all of them when the data has no
        split."""
        if self.splits is None:
            return self
        rows = np.flatnonzero(self.splits == name.lower())
        if rows.size == 0:
            have = ", ".join(sorted(set(self.splits)))
            raise DataError(f"{self.name}: no video in split {name!r}; the data has splits {have}")
        return self.subset(rows, f"{self.name}[{name}]")

    def fingerprint(self) -> str:
        """sha256 over ids, file sizes and modification times, classes, labels and splits."""
        h = hashlib.sha256()
        h.update(json.dumps(self.classes).encode())
        h.update(self.targets.tobytes())
        if self.splits is not None:
            h.update("\0".join(self.splits).encode())
        for vid, path in zip(self.ids, self.paths):
            h.update(file_key(vid, path).encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def summary(self) -> str:
        parts = [f"{self.name}: {len(self)} videos, {len(self.classes)} classes"]
        if self.splits is not None:
            names, counts = np.unique(self.splits.astype(str), return_counts=True)
            parts.append("splits " + ", ".join(f"{n}={c}" for n, c in zip(names, counts)))
        if self.ignored:
            parts.append(f"{counted(len(self.ignored), 'entry', 'entries')} ignored")
        return "; ".join(parts)


def file_key(item_id: str, path: Path) -> str:
    """Identity of one file: id, size and modification time (changes whenever the file does)."""
    try:
        st = path.stat()
        return f"{item_id}\0{st.st_size}\0{st.st_mtime_ns}\n"
    except OSError:
        return f"{item_id}\0missing\n"


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def video_folder(
    root: str | os.PathLike, split: int = 1, lists: str | os.PathLike | None = None
) -> VideoDataset:
    """Videos in ``root/<class>/`` (any depth below the class folder); with UCF-101's split lists
    (``trainlist0N.txt`` / ``testlist0N.txt`` for ``split`` N, looked for in ``lists``, ``root``,
    ``root/ucfTrainTestlist`` or beside ``root``), each listed video gets its split."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{printable(root)}: not a folder (expected root/<class>/<clip>.avi)")
    check_int("split", split, 1)
    ignored: list[tuple[str, str]] = []
    found: list[tuple[str, Path]] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            ignored.append((printable(entry), "hidden"))
        elif entry.is_dir():
            videos = _videos_below(entry, ignored)
            if videos:
                found += [(entry.name, v) for v in videos]
            else:
                ignored.append((printable(entry), "folder without video files"))
        elif not _is_split_list(entry):
            ignored.append((printable(entry), "file outside any class folder"))
    if not found:
        raise DataError(
            f"{printable(root)}: no video files in class folders; expected {printable(root)}/<class>/<clip> "
            f"with one of {', '.join(VIDEO_EXTENSIONS)}"
        )
    classes = sorted({c for c, _ in found})
    index = {c: i for i, c in enumerate(classes)}
    ids = [printable(p.relative_to(root).as_posix()) for _, p in found]
    paths = [p for _, p in found]
    targets = np.asarray([index[c] for c, _ in found], dtype=np.int64)
    splits = None
    folder = _find_lists(root, split, lists)
    if folder is not None:
        keep, splits = _apply_lists(folder, split, ids, ignored)
        ids, paths, targets = [ids[i] for i in keep], [paths[i] for i in keep], targets[keep]
        if not ids:
            raise DataError(
                f"{printable(folder)}: the split lists name none of the videos in {printable(root)}"
            )
    elif lists is not None:
        raise DataError(f"{printable(lists)}: no trainlist{split:02d}.txt / testlist{split:02d}.txt there")
    return VideoDataset(
        name=root.name or str(root),
        ids=ids,
        paths=paths,
        classes=classes,
        targets=targets,
        splits=splits,
        ignored=ignored,
        root=root,
    )


def _is_split_list(path: Path) -> bool:
    """The split lists beside the class folders, and the description deepfeat's generator writes."""
    name = path.name.lower()
    if name == "moving_digits.json":
        return True
    return path.suffix == ".txt" and name.startswith(("trainlist", "testlist", "classind"))


def _videos_below(folder: Path, ignored: list[tuple[str, str]]) -> list[Path]:
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            ignored.append((printable(entry), "hidden"))
        elif entry.is_dir() and not entry.is_symlink():
            out += _videos_below(entry, ignored)
        elif entry.is_file() and is_video(entry):
            out.append(entry)
        else:
            ignored.append((printable(entry), "not a video file (by its extension)"))
    return out


def _find_lists(root: Path, split: int, lists) -> Path | None:
    candidates = [Path(lists)] if lists is not None else [root / f for f in SPLIT_LIST_FOLDERS]
    for folder in candidates:
        if (folder / f"trainlist{split:02d}.txt").is_file() and (
            folder / f"testlist{split:02d}.txt"
        ).is_file():
            return folder
    return None


def _read_list(path: Path) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        text = line.strip()
        if text:
            out.append((n, text.split()[0].replace("\\", "/")))
    return out


def _apply_lists(folder: Path, split: int, ids: list[str], ignored: list) -> tuple[list[int], np.ndarray]:
    """Rows of ``ids`` named in the split lists and their split; the rest goes to ``ignored``.
    Names are matched without regard to case (UCF-101's lists spell some class folders otherwise)."""
    by_name = {i.lower(): row for row, i in enumerate(ids)}
    split_of: dict[int, str] = {}
    for kind in ("train", "test"):
        path = folder / f"{kind}list{split:02d}.txt"
        for line, name in _read_list(path):
            row = by_name.get(name.lower())
            if row is None:
                ignored.append(
                    (f"{printable(path)}, line {line}", f"lists {name!r}, which is not among the videos")
                )
            elif row in split_of and split_of[row] != kind:
                raise DataError(
                    f"{printable(path)}, line {line}: {name!r} is in both the train and test lists"
                )
            else:
                split_of[row] = kind
    for row, vid in enumerate(ids):
        if row not in split_of:
            ignored.append((vid, f"in neither trainlist{split:02d}.txt nor testlist{split:02d}.txt"))
    keep = sorted(split_of)
    return keep, np.asarray([split_of[r] for r in keep], dtype=object)


def video_manifest(path: str | os.PathLike) -> VideoDataset:
    """Videos listed in a CSV (``path,label[,split]``) or JSON-lines manifest; paths relative to the
    manifest's folder. The same checks as image manifests apply (duplicates, line errors)."""
    items = manifest_dataset(path)
    if items.multilabel:
        raise DataError(f"{printable(path)}: videos take one class each (column 'label', not 'labels')")
    return VideoDataset(
        name=items.name,
        ids=items.ids,
        paths=items.paths,
        classes=items.classes,
        targets=items.targets,
        splits=items.splits,
        ignored=list(items.ignored),
        root=items.root,
    )


def open_videos(
    spec: str | os.PathLike, split: int = 1, lists: str | os.PathLike | None = None
) -> VideoDataset:
    """A class-per-folder video tree (with UCF-101 split lists when present) or a manifest file."""
    path = Path(spec)
    if path.is_dir():
        return video_folder(path, split=split, lists=lists)
    if path.is_file() and path.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".json"):
        return video_manifest(path)
    raise DataError(
        f"{printable(path)}: no such folder or manifest; valid: a folder root/<class>/<clip> (with UCF-101 "
        "trainlist0N.txt / testlist0N.txt for splits) or a .csv / .jsonl manifest (path,label[,split])"
    )
