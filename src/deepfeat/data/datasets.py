"""Labelled image collections: a class-per-folder tree, a manifest (CSV or JSON lines), in-memory arrays
and scikit-learn's bundled digits (the embedded default).

Every dataset is an indexable list of items with a stable id, its labels and, when the data defines one,
its split. Labels are ``targets``: an int64 vector of class indices for single-label data, or an
(n_items, n_classes) uint8 indicator matrix for multi-label data (with an optional ``difficult`` mask,
VOC style). Nothing is dropped silently: entries that cannot belong to the dataset (hidden files, files
outside class folders, empty folders, links to folders, broken links and loops) are listed in
``ignored`` with the reason, and files that fail to decode are reported by the extraction run.

The dataset types live in :mod:`deepfeat.data.base`, the manifest reader in
:mod:`deepfeat.data.manifests`; both are importable from here as before.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepfeat.data.base import ArrayDataset, FileDataset, ImageDataset
from deepfeat.data.images import printable
from deepfeat.data.manifests import manifest_dataset
from deepfeat.errors import ConfigError, DataError
from deepfeat.fileio import OUTPUT_MARKER, is_output_dir, output_subfolders

__all__ = [
    "DATA_SPELLINGS",
    "SPLIT_NAMES",
    "ArrayDataset",
    "FileDataset",
    "ImageDataset",
    "dataset_from_paths",
    "digits_dataset",
    "folder_dataset",
    "manifest_dataset",
    "open_dataset",
]

SPLIT_NAMES = ("train", "val", "valid", "validation", "test")


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


def _refuse_alike(paths: list[Path], names: list[str], what: str) -> None:
    """A DataError for two ``paths`` whose printable ``names`` coincide (a raw non-UTF-8 byte and its
    literal ``\\xNN`` spelling would become one class or item)."""
    first: dict[str, Path] = {}
    for name, path in zip(names, paths):
        if name in first:
            raise DataError(
                f"{printable(first[name])} and {printable(path)}: two {what} whose names read alike once "
                "bytes that are not UTF-8 are written as \\xNN; rename one"
            )
        first[name] = path


def folder_dataset(root: str | os.PathLike) -> FileDataset:
    """A class-per-folder tree ``root/<class>/<image>``, or ``root/<split>/<class>/<image>`` when every
    top-level folder is a split name (train, val, valid, validation, test).

    Every non-hidden file inside a class folder (at any depth) is an item: files that do not decode are
    reported when features are extracted, not dropped here. Everything else is listed in ``ignored``
    with the reason: hidden entries, files outside class folders, empty folders, symbolic links to
    folders (not followed), broken links, link loops, and deepfeat's own output folders and feature
    stores (marked by ``.deepfeat-output``). The same file reached twice (through a
    link) is refused, since it could land in two classes or in train and test.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{printable(root)}: not a folder (expected a class-per-folder image tree)")
    ignored: list[tuple[str, str]] = []
    top = _subdirs(root, ignored)
    if not top:
        raise DataError(
            f"{printable(root)}: no class folders; expected {printable(root)}/<class>/<image> or "
            f"{printable(root)}/<split>/<class>/<image>"
        )
    use_splits = all(d.name.lower() in SPLIT_NAMES for d in top)
    groups: list[tuple[str | None, Path]] = []
    if use_splits:
        for split_dir in top:
            class_dirs = _subdirs(split_dir, ignored)
            if not class_dirs:
                raise DataError(f"{printable(split_dir)}: split folder holds no class folders")
            groups += [(split_dir.name, d) for d in class_dirs]
    else:
        groups = [(None, d) for d in top]
    named = {d.name: printable(d.name) for _, d in groups}  # class names: a non-UTF-8 byte as \xNN
    _refuse_alike([root / n for n in named], list(named.values()), "class folders")
    classes = sorted(set(named.values()))
    index = {c: i for i, c in enumerate(classes)}
    paths: list[Path] = []
    targets: list[int] = []
    splits: list[str | None] = []
    seen: dict[tuple[int, int], Path] = {}
    for split, class_dir in groups:
        files = _files_below(class_dir, ignored)
        if not files:
            raise DataError(
                f"{printable(class_dir)}: class folder holds no files (hidden ones are ignored); add images "
                "or remove it"
            )
        for f in files:
            st = f.stat()
            other = seen.setdefault((st.st_dev, st.st_ino), f)
            if other != f:
                raise DataError(
                    f"{printable(f)} and {printable(other)} are the same file; an image may appear once "
                    "(it could land in two classes, or in train and test)"
                )
        paths += files
        targets += [index[named[class_dir.name]]] * len(files)
        splits += [split] * len(files)
    ids = [printable(p.relative_to(root).as_posix()) for p in paths]
    _refuse_alike(paths, ids, "files")
    return FileDataset(
        name=root.name or str(root),
        ids=ids,
        classes=classes,
        targets=np.asarray(targets, dtype=np.int64),
        splits=np.asarray(splits, dtype=object) if use_splits else None,
        ignored=ignored,
        paths=paths,
        root=root,
    )


#: What :func:`open_dataset` accepts, for messages and help texts.
DATA_SPELLINGS = (
    "'digits', a class-per-folder tree, a .csv/.jsonl manifest, webdataset .tar shards "
    "(shard.tar, shards-{000..009}.tar, shards-*.tar or a folder of them) or hf:PATH_OR_NAME[:SPLIT]"
)


def open_dataset(spec: str | os.PathLike) -> ImageDataset:
    """``"digits"`` (embedded), a folder tree, a manifest file (.csv / .jsonl), webdataset-style tar
    shards (:mod:`deepfeat.data.webdataset`) or ``hf:PATH_OR_NAME[:SPLIT]``, a Hugging Face dataset
    saved to disk or in the local caches (:mod:`deepfeat.data.hf`)."""
    text = os.fspath(spec)
    if text == "digits":
        if os.path.lexists(text):
            raise ConfigError(
                "'digits' names the embedded scikit-learn digits, and there is also a file or folder "
                "'digits' here: give ./digits for it (or run elsewhere for the embedded digits)"
            )
        return digits_dataset()
    if text.startswith("hf:"):
        from deepfeat.data.hf import hf_dataset, parse_hf_spec

        return hf_dataset(*parse_hf_spec(text))
    path = Path(spec)
    if text.endswith(".tar") or (path.is_dir() and _holds_only_shards(path)):
        from deepfeat.data.webdataset import tar_dataset

        return tar_dataset(text)
    if path.is_dir():
        return folder_dataset(path)
    if path.is_file():
        return manifest_dataset(path)
    raise DataError(f"{printable(text)}: no such folder or manifest; valid: {DATA_SPELLINGS}")


def _holds_only_shards(folder: Path) -> bool:
    entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    return bool(entries) and all(e.is_file() and e.name.endswith(".tar") for e in entries)


def _odd_entry(entry: os.DirEntry) -> str | None:
    """Why a directory entry that is neither a folder nor a regular file is left out (None: it is one)."""
    try:
        st = os.stat(entry.path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if entry.is_symlink() and exc.errno == errno.ENOENT:
            return "broken symbolic link (its target is missing)"
        return f"cannot read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return None
    return "not a regular file"


def _subdirs(folder: Path, ignored: list[tuple[str, str]]) -> list[Path]:
    """Sub-folders of ``folder`` (links to folders included); everything else goes to ``ignored``."""
    out = []
    own = output_subfolders(folder)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        where = printable(entry.path)
        reason = "hidden" if entry.name.startswith(".") else _odd_entry(entry) or _output_dir(entry, own)
        if reason:
            ignored.append((where, reason))
        elif entry.is_dir():
            out.append(Path(entry.path))
        else:
            ignored.append((where, "file outside any class folder"))
    return out


def _output_dir(entry: os.DirEntry, own: set[str]) -> str | None:
    """Why a folder deepfeat wrote (results, a feature store, or one its parent's marker names in
    ``own``) is left out (None: it is not one)."""
    if entry.is_dir() and (entry.name in own or is_output_dir(entry.path)):
        return f"deepfeat output folder or feature store (marked by {OUTPUT_MARKER}), not images"
    return None


def _files_below(folder: Path, ignored: list[tuple[str, str]]) -> list[Path]:
    """Regular files below ``folder`` in sorted order, without following links to folders."""
    files: list[Path] = []
    own = output_subfolders(folder)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        where = printable(entry.path)
        reason = "hidden" if entry.name.startswith(".") else _odd_entry(entry)
        if reason is None and entry.is_dir() and entry.is_symlink():
            reason = "symbolic link to a folder, not followed"
        if reason is None and entry.is_dir() and not any(os.scandir(entry.path)):
            reason = "empty folder"
        reason = reason or _output_dir(entry, own)
        if reason:
            ignored.append((where, reason))
        elif entry.is_dir():
            files += _files_below(Path(entry.path), ignored)
        else:
            files.append(Path(entry.path))
    return files


def dataset_from_paths(paths: Sequence[str | os.PathLike], labels: Sequence | None = None) -> FileDataset:
    """A dataset of the given image files (labels optional: all items get class ``"unlabelled"``); the
    same file given twice (however its path is written) is refused."""
    paths = [Path(p) for p in paths]
    seen: dict[str, int] = {}
    for i, p in enumerate(paths):
        first = seen.setdefault(os.path.realpath(p), i)
        if first != i:
            raise DataError(
                f"paths[{i}] ({printable(p)}) is the same file as paths[{first}] "
                f"({printable(paths[first])}); give each image once"
            )
    if labels is None:
        classes, targets = ["unlabelled"], np.zeros(len(paths), dtype=np.int64)
    else:
        if len(labels) != len(paths):
            raise DataError(f"{len(paths)} paths but {len(labels)} labels")
        classes = sorted({str(v) for v in labels})
        index = {c: i for i, c in enumerate(classes)}
        targets = np.asarray([index[str(v)] for v in labels], dtype=np.int64)
    return FileDataset(
        name="files", ids=[printable(p) for p in paths], classes=classes, targets=targets, paths=paths
    )
