"""FeatureStore: features on disk, keyed by their full provenance, written so that an interrupted run
resumes where it stopped and a repeated run reads instead of recomputing.

Format. Each entry is a folder holding

- ``meta.json``: the provenance (dataset fingerprint, backbone and weights id, layer, method and its
  parameters, preprocessing, deepfeat version), the feature shape, and ``complete`` once every row is
  done; replaced atomically;
- ``features.npy``: one float32 row per dataset item, in dataset order, in NumPy's ``.npy`` format
  (read back with ``numpy.load(..., mmap_mode="r")``, so nothing is loaded until used);
- ``journal.jsonl``: an append-only log; a line is added only after the rows it names were written,
  so rows not in the journal are never read, and a half-written batch is simply computed again.
  Items whose image failed to decode are journaled with the reason and have no valid row.

The dataset's ids, labels and splits are kept once per dataset fingerprint in ``datasets/``.
A writer holds an exclusive lock on the entry, so two runs cannot write the same entry at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfeat.errors import StoreError
from deepfeat.fileio import atomic_write_text

FORMAT_VERSION = 1


def provenance_key(provenance: dict) -> str:
    """Stable hash of a provenance dict (canonical JSON)."""
    text = json.dumps(provenance, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _ranges(rows: np.ndarray) -> list[list[int]]:
    """Compress sorted row indices into [start, stop) ranges."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1)
    starts = np.concatenate([[rows[0]], rows[breaks + 1]])
    stops = np.concatenate([rows[breaks] + 1, [rows[-1] + 1]])
    return [[int(a), int(b)] for a, b in zip(starts, stops)]


@dataclass
class RowStatus:
    """Which rows of an entry are done, and why the failed ones failed."""

    done: np.ndarray  # bool (n_rows,): row processed (valid or failed)
    failed: dict[int, str]

    @property
    def valid(self) -> np.ndarray:
        """bool (n_rows,): rows holding features."""
        valid = self.done.copy()
        if self.failed:
            valid[list(self.failed)] = False
        return valid


class StoreEntry:
    """One feature array in the store (one layer x method x parameters x dataset x backbone)."""

    def __init__(self, path: Path, provenance: dict, n_rows: int):
        self.path = path
        self.provenance = provenance
        self.n_rows = n_rows
        self._lock_fh = None
        self._data_fh = None

    # -- reading -----------------------------------------------------------------------------
    @property
    def meta(self) -> dict:
        """Contents of meta.json."""
        try:
            return json.loads((self.path / "meta.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{self.path}: unreadable meta.json ({exc})") from exc

    @property
    def complete(self) -> bool:
        """True when every row is done (valid or failed)."""
        return bool(self.meta.get("complete"))

    def status(self) -> RowStatus:
        """Done and failed rows, from the journal (a torn last line is ignored)."""
        done = np.zeros(self.n_rows, dtype=bool)
        failed: dict[int, str] = {}
        journal = self.path / "journal.jsonl"
        if journal.exists():
            for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                    ranges = record["rows"]
                    fails = record.get("failed", {})
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # torn write from an interrupted run: those rows are redone
                for start, stop in ranges:
                    done[start:stop] = True
                for row, reason in fails.items():
                    failed[int(row)] = reason
                    done[int(row)] = True
        return RowStatus(done=done, failed=failed)

    def read(self) -> np.ndarray:
        """All rows, memory-mapped read-only (rows that are not valid hold zeros or stale data)."""
        path = self.path / "features.npy"
        if not path.exists():
            raise StoreError(f"{self.path}: no feature data written yet")
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise StoreError(
                f"{path}: damaged feature file ({exc}); delete the entry folder to redo it"
            ) from exc

    @property
    def row_shape(self) -> tuple[int, ...] | None:
        """Per-item layer shape before pooling, as recorded at the first write (e.g. (C, H, W))."""
        shape = self.meta.get("layer_shape")
        return tuple(shape) if shape is not None else None

    # -- writing -----------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the entry's exclusive writer lock (an error if another process holds it)."""
        if self._lock_fh is not None:
            return
        fh = open(self.path / "lock", "a+")  # noqa: SIM115 - held until unlock()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise StoreError(f"{self.path}: another run is writing this store entry; wait for it") from None
        self._lock_fh = fh

    def unlock(self) -> None:
        """Release the writer lock and close the data file."""
        if self._data_fh is not None:
            self._data_fh.close()
            self._data_fh = None
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def _allocate(self, dim: int, layer_shape: tuple[int, ...]) -> None:
        path = self.path / "features.npy"
        if path.exists():
            existing = self.read()
            if existing.shape != (self.n_rows, dim):
                raise StoreError(
                    f"{path}: holds shape {existing.shape}, but this run produces {(self.n_rows, dim)}"
                )
            return
        tmp = self.path / f".features.{os.getpid()}.tmp.npy"
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n_rows, dim))
        del arr
        os.replace(tmp, path)
        meta = self.meta
        meta["dim"] = dim
        meta["layer_shape"] = list(layer_shape)
        atomic_write_text(self.path / "meta.json", json.dumps(meta, indent=1))

    def write(self, rows: np.ndarray, values: np.ndarray, layer_shape: tuple[int, ...]) -> None:
        """Write feature rows (not yet journaled: call :meth:`commit` after)."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        if values.ndim != 2 or len(values) != len(rows):
            raise StoreError(f"{self.path}: expected {len(rows)} rows of features, got shape {values.shape}")
        if self._data_fh is None:
            self._allocate(values.shape[1], layer_shape)
            self._data_fh = open(self.path / "features.npy", "r+b")  # noqa: SIM115 - closed in unlock()
            self._offset = int(self.read().offset)  # the .npy header length varies with the shape
        dim = values.shape[1]
        if dim != self.meta_dim():
            raise StoreError(f"{self.path}: feature dimension changed from {self.meta_dim()} to {dim}")
        row_bytes = dim * 4
        order = np.argsort(rows)
        rows, values = rows[order], values[order]
        for start, stop in _ranges(rows):
            i = int(np.searchsorted(rows, start))
            block = values[i : i + (stop - start)]
            os.pwrite(self._data_fh.fileno(), block.tobytes(), self._offset + start * row_bytes)

    def meta_dim(self) -> int:
        """Feature dimension recorded in meta.json."""
        if not hasattr(self, "_dim"):
            self._dim = int(self.meta["dim"])
        return self._dim

    def commit(self, rows: Iterable[int], failed: dict[int, str] | None = None, durable: bool = True) -> None:
        """Journal rows as done (after their data was written) and failed rows with their reason."""
        rows = np.asarray(list(rows), dtype=np.int64)
        if durable and self._data_fh is not None and rows.size:
            os.fdatasync(self._data_fh.fileno())
        record = {"rows": _ranges(rows), "failed": {str(k): v for k, v in (failed or {}).items()}}
        with open(self.path / "journal.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            if durable:
                os.fsync(fh.fileno())

    def finish_if_complete(self) -> bool:
        """Mark the entry complete when every row is done; returns whether it is."""
        status = self.status()
        if not status.done.all():
            return False
        meta = self.meta
        meta["complete"] = True
        meta["n_valid"] = int(status.valid.sum())
        meta["n_failed"] = len(status.failed)
        atomic_write_text(self.path / "meta.json", json.dumps(meta, indent=1))
        return True


class FeatureStore:
    """A folder of feature entries keyed by provenance; see the module docstring for the format."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: exists and is not a folder; a feature store is a folder")

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    def _entry_dir(self, provenance: dict) -> Path:
        key = provenance_key(provenance)
        label = "-".join(str(provenance.get(k)) for k in ("layer", "pool") if provenance.get(k) is not None)
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label) or "entry"
        return self.root / "entries" / f"{label}-{key}"

    def find(self, provenance: dict, n_rows: int) -> StoreEntry | None:
        """The entry with exactly this provenance, if it exists (complete or not)."""
        path = self._entry_dir(provenance)
        if not (path / "meta.json").exists():
            return None
        entry = StoreEntry(path, provenance, n_rows)
        if entry.meta.get("provenance") != json.loads(json.dumps(provenance, default=str)):
            raise StoreError(f"{path}: provenance in meta.json does not match its key; the store is damaged")
        return entry

    def entry(self, provenance: dict, n_rows: int) -> StoreEntry:
        """The entry for this provenance, created (empty) when new."""
        found = self.find(provenance, n_rows)
        if found is not None:
            return found
        path = self._entry_dir(provenance)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_VERSION,
            "provenance": json.loads(json.dumps(provenance, default=str)),
            "n_rows": n_rows,
            "dim": None,
            "layer_shape": None,
            "complete": False,
        }
        atomic_write_text(path / "meta.json", json.dumps(meta, indent=1))
        return StoreEntry(path, provenance, n_rows)

    def save_dataset_index(self, fingerprint: str, record: dict) -> Path:
        """Keep the dataset's ids, labels and splits once per fingerprint."""
        path = self.root / "datasets" / f"{fingerprint[:20]}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(record))
        return path

    def load_dataset_index(self, fingerprint: str) -> dict:
        """The ids, labels and splits saved for a dataset fingerprint."""
        path = self.root / "datasets" / f"{fingerprint[:20]}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: dataset index missing or unreadable ({exc})") from exc

    def entries(self) -> list[dict]:
        """meta.json of every entry in the store."""
        out = []
        for meta_path in sorted((self.root / "entries").glob("*/meta.json")):
            with contextlib.suppress(OSError, json.JSONDecodeError):
                meta = json.loads(meta_path.read_text())
                meta["path"] = str(meta_path.parent)
                out.append(meta)
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
            self._data = np.zeros((self.n_rows, values.shape[1]), dtype=np.float32)
            self.row_shape = tuple(layer_shape)
        self._data[np.asarray(rows)] = values

    def commit(self, rows: Iterable[int], failed: dict[int, str] | None = None, durable: bool = True) -> None:
        self._done[np.asarray(list(rows), dtype=np.int64)] = True
        for row, reason in (failed or {}).items():
            self._failed[int(row)] = reason
            self._done[int(row)] = True

    def finish_if_complete(self) -> bool:
        self.complete = bool(self._done.all())
        return self.complete
