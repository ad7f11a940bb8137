"""FeatureStore: features on disk, keyed by their full provenance, written so that an interrupted run
resumes where it stopped, a repeated run reads instead of recomputing, and a damaged entry is never
read as if it were whole.

Format. Each entry is a folder holding

- ``features.npy``: one float32 row per dataset item, in dataset order, in NumPy's ``.npy`` format
  (read back with ``numpy.load(..., mmap_mode="r")``, so nothing is loaded until used). Rows of items
  whose image could not be used are NaN once the entry is complete, never zeros;
- ``valid.npy``: the validity mask, bool (n_items,), True where the row holds features; written when
  the entry is complete. Anyone reading ``features.npy`` directly should select
  ``features[valid]``;
- ``journal.jsonl``: the record of what is done (see :mod:`deepfeat.features.journal`): a line is
  appended only after the rows it names were written and synced, with a CRC-32 of those rows, so
  rows not in the journal are never read and a half-written batch is simply computed again. Items
  whose image failed are journaled with the reason;
- ``meta.json``: the provenance (dataset fingerprint, backbone and weights id, layer, method and its
  parameters, preprocessing, deepfeat version), a digest of the item ids, the feature dimension and
  layer shape, and ``complete`` with the counts once every row is done; replaced atomically. It can
  always be rebuilt from the provenance, the journal and the ``.npy`` header, so a missing or broken
  one is repaired, not fatal.

Every entry is checked against its journal when it is opened (:meth:`StoreEntry.check`): row counts,
ranges, the ids digest, the ``.npy`` header and file size, and the checksums of the rows. A writer
(holding the entry's exclusive lock) repairs what it finds (:meth:`StoreEntry.repair`) by dropping
what cannot be trusted, so those rows are computed again; a reader refuses a damaged entry with a
one-line :class:`~deepfeat.errors.StoreError` naming it and the remedy. Every step of a run can be
killed at any point and the next run resumes (temporary files of dead runs are removed).

The dataset's ids, labels and splits are kept once per dataset fingerprint in ``datasets/``, with a
checksum of them: an index edited by hand is damage (``store list`` names it, export refuses it, the
next extraction of that data rewrites it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from deepfeat.errors import ConfigError, StoreError
from deepfeat.features.entry import EntryState, StoreEntry
from deepfeat.features.entry_meta import json_default, plain_provenance
from deepfeat.features.journal import RowStatus
from deepfeat.fileio import atomic_write_text, mark_output_dir, remove_dead_temp_files

__all__ = ["EntryState", "FeatureStore", "MemoryEntry", "RowStatus", "StoreEntry", "provenance_key"]


#: the damage of an entry whose meta.json names another provenance than its folder's key: which of the
#: two its data belong to is unknown, so no extraction repairs it (its folder has to be deleted)
KEY_MISMATCH = "the provenance in meta.json does not match the entry's key (edited?)"


def provenance_key(provenance: dict) -> str:
    """Stable hash of a provenance dict (canonical JSON)."""
    text = json.dumps(provenance, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _index_checksum(record: dict) -> str:
    """sha256 of a dataset index record (canonical JSON)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()


class FeatureStore:
    """A folder of feature entries keyed by provenance; see the module docstring for the format."""

    def __init__(self, root: str | os.PathLike):
        if not isinstance(root, str | os.PathLike):
            raise ConfigError(f"a feature store is a folder path, got {type(root).__name__} {root!r:.60}")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: exists and is not a folder; a feature store is a folder")

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    def _mark(self) -> None:
        """Mark the store and its sub-folders as deepfeat's: an image folder listing leaves them out (a
        store kept inside, or at the root of, the data folder)."""
        mark_output_dir(self.root, own=("entries", "datasets"))

    def _entry_dir(self, provenance: dict) -> Path:
        key = provenance_key(provenance)
        label = "-".join(str(provenance.get(k)) for k in ("layer", "pool") if provenance.get(k) is not None)
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label) or "entry"
        return self.root / "entries" / f"{label}-{key}"

    def find(self, provenance: dict, n_rows: int, ids: Sequence[str] | None = None) -> StoreEntry | None:
        """The entry with exactly this provenance, if anything of it exists (complete or not)."""
        path = self._entry_dir(provenance)
        if not any((path / name).exists() for name in ("meta.json", "journal.jsonl", "features.npy")):
            return None
        entry = StoreEntry(path, provenance, n_rows, ids)
        meta = entry._read_meta()
        if meta is not None and meta.get("provenance") != plain_provenance(provenance):
            raise StoreError(
                f"{path}: {KEY_MISMATCH}; the store is damaged (delete this entry folder to redo it)"
            )
        return entry

    def entry(self, provenance: dict, n_rows: int, ids: Sequence[str] | None = None) -> StoreEntry:
        """The entry for this provenance, created (empty) when new."""
        found = self.find(provenance, n_rows, ids)
        if found is not None:
            return found
        entry = StoreEntry(self._entry_dir(provenance), provenance, n_rows, ids)
        entry.path.mkdir(parents=True, exist_ok=True)
        self._mark()
        atomic_write_text(entry.path / "meta.json", json.dumps(entry._fresh_meta(), indent=1))
        return entry

    def save_dataset_index(self, fingerprint: str, record: dict) -> Path:
        """Keep the dataset's ids, labels and splits once per fingerprint, with a checksum of them
        (rewritten where the file is missing, unreadable or fails its checksum)."""
        path = self.root / "datasets" / f"{fingerprint[:20]}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._mark()
        remove_dead_temp_files(path.parent)
        try:
            self.load_dataset_index(fingerprint)
        except StoreError:
            atomic_write_text(path, json.dumps({**record, "checksum": _index_checksum(record)}))
        return path

    def load_dataset_index(self, fingerprint: str) -> dict:
        """The ids, labels and splits saved for a dataset fingerprint; a file that is unreadable or
        fails its checksum (edited by hand: the labels could be wrong) is a StoreError."""
        path = self.root / "datasets" / f"{fingerprint[:20]}.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: dataset index missing or unreadable ({exc})") from None
        checksum = record.pop("checksum", None)  # (stores written before the checksum have none)
        if checksum is not None and checksum != _index_checksum(record):
            raise StoreError(
                f"{path}: the dataset index (ids, labels, classes) does not match its checksum: edited or "
                "damaged; extract the features of this data again into the store to rewrite it"
            )
        return record

    def entries(self) -> list[dict]:
        """meta.json of every entry in the store (see :meth:`entry_meta`)."""
        folders = sorted(p for p in (self.root / "entries").glob("*") if p.is_dir())
        return [self.entry_meta(folder) for folder in folders]

    def entry_meta(self, folder: Path) -> dict:
        """meta.json of the entry in ``folder``, its ``"path"`` added; one that is missing, unreadable
        or whose provenance does not hash to the folder's key (edited) has ``"damaged"`` saying so
        (the next extraction rebuilds a missing one)."""
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (OSError, ValueError):
            meta = {"provenance": {}, "complete": False, "damaged": "meta.json missing or unreadable"}
        else:
            provenance = meta.get("provenance")
            if not isinstance(provenance, dict) or not folder.name.endswith(
                "-" + provenance_key(plain_provenance(provenance))
            ):
                meta["damaged"] = KEY_MISMATCH
        meta["path"] = str(folder)
        return meta

    def check_entries(self, *, checksums: bool = False) -> list[tuple[dict, EntryState | None]]:
        """Every entry's meta.json (as :meth:`entries`) with what :meth:`StoreEntry.check` finds in it
        (rows done, damage; ``checksums``: also verify every row against its journal, which reads all
        the data) and its dataset index checked; None where either is damaged. Reads only."""
        out = []
        indexes: dict[str, dict | str] = {}  # dataset fingerprint -> its index, or its damage (read once)
        for meta in self.entries():
            state = None
            if "damaged" not in meta and isinstance(meta.get("n_rows"), int):
                dataset = str(meta["provenance"].get("dataset", ""))
                if dataset not in indexes:
                    try:  # the entry's labels and item ids come from its dataset index (R-CNN's region
                        # rows are no dataset's items: no index to check them against)
                        indexes[dataset] = self.load_dataset_index(dataset) if dataset else {}
                    except StoreError as exc:
                        indexes[dataset] = str(exc)
                index = indexes[dataset]
                if isinstance(index, str):
                    meta["damaged"] = index
                else:
                    path, provenance = Path(meta["path"]), meta.get("provenance") or {}
                    entry = StoreEntry(path, provenance, meta["n_rows"], index.get("ids"))
                    state = entry.check(checksums=checksums)
            out.append((meta, state))
        return out


class MemoryEntry:
    """In-memory stand-in for a StoreEntry, used when extraction runs without a store."""

    def __init__(self, provenance: dict, n_rows: int):
        self.path = None
        self.provenance = provenance
        self.n_rows = n_rows
        self.complete = False
        self._data: np.ndarray | None = None
        self._done = np.zeros(n_rows, dtype=bool)
        self._failed: dict[int, str] = {}
        self.row_shape: tuple[int, ...] | None = None

    def status(self) -> RowStatus:
        return RowStatus(done=self._done.copy(), failed=dict(self._failed))

    def read(self) -> np.ndarray:
        if self._data is None:
            raise StoreError("no feature data computed")
        return self._data

    def lock(self) -> None:
        pass

    def unlock(self) -> None:
        pass

    def write(self, rows: np.ndarray, values: np.ndarray, layer_shape: tuple[int, ...]) -> None:
        values = np.asarray(values, dtype=np.float32)
        if self._data is None:
            self._data = np.full((self.n_rows, values.shape[1]), np.nan, dtype=np.float32)
            self.row_shape = tuple(layer_shape)
        self._data[np.asarray(rows)] = values

    def commit(self, rows: Iterable[int], failed: dict[int, str] | None = None, durable: bool = True) -> None:
        self._done[np.asarray(list(rows), dtype=np.int64)] = True
        for row, reason in (failed or {}).items():
            self._failed[int(row)] = reason
            self._done[int(row)] = True

    def finish_if_complete(self, computed_on: dict | None = None) -> bool:
        """Whether every row is done (``computed_on``: kept by stored entries only)."""
        self.complete = bool(self._done.all())
        return self.complete


def as_store(store) -> FeatureStore | None:
    """``store`` as a FeatureStore: None and FeatureStores as they are, a folder path opened; a
    ConfigError naming ``store`` for anything else."""
    if store is None or isinstance(store, FeatureStore):
        return store
    if isinstance(store, str | os.PathLike):
        return FeatureStore(store)
    raise ConfigError(
        f"store must be a folder path or a FeatureStore, got {type(store).__name__} {store!r:.60}"
    )
