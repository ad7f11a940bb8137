"""One entry of the feature store: its files, the check against its journal, repair, and the
crash-safe write protocol (see :mod:`deepfeat.features.store` for the format)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepfeat.errors import StoreError
from deepfeat.features.entry_meta import as_shape, ids_digest, meta_disagreements, plain_provenance
from deepfeat.features.journal import (
    Record,
    RowStatus,
    append_record,
    crc_of_ranges,
    ranges,
    read_journal,
    rewrite_journal,
    status_of,
    trim_torn_line,
)
from deepfeat.fileio import atomic_write_text, atomic_write_with, remove_dead_temp_files
from deepfeat.report.provenance import summary

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


@dataclass
class EntryState:
    """What :meth:`StoreEntry.check` found: the rows that can be trusted and any damage."""

    status: RowStatus
    dim: int | None
    layer_shape: tuple[int, ...] | None
    problems: list[str] = field(default_factory=list)
    bad_records: set[int] = field(default_factory=set)
    data_bad: bool = False  # features.npy unusable: every row is computed again
    meta_ok: bool = True
    finished: bool = False  # complete, with meta.json and valid.npy written
    cut_short: bool = False  # features.npy lost its tail: repair restores its length

    @property
    def complete(self) -> bool:
        """Every row done and nothing damaged."""
        return not self.problems and bool(self.status.done.all())


class StoreEntry:
    """One feature array in the store (one layer x method x parameters x dataset x backbone)."""

    def __init__(self, path: Path, provenance: dict, n_rows: int, ids: Sequence[str] | None = None):
        self.path = path
        self.provenance = provenance
        self.n_rows = n_rows
        self.ids_sha256 = None if ids is None else ids_digest(ids)
        self._lock_fh = None
        self._data_fh = None
        self._dim: int | None = None
        self._shape: tuple[int, ...] | None = None
        self._last_write: tuple[list[list[int]], int] | None = None

    def __repr__(self) -> str:
        return f"StoreEntry({str(self.path)!r})"

    # -- reading -----------------------------------------------------------------------------
    def _read_meta(self) -> dict | None:
        try:
            meta = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    @property
    def meta(self) -> dict:
        """Contents of meta.json (rebuilt from the provenance when it is missing or unreadable)."""
        return self._read_meta() or self._fresh_meta()

    def _fresh_meta(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "provenance": plain_provenance(self.provenance),
            "n_rows": self.n_rows,
            "ids_sha256": self.ids_sha256,
            "dim": None,
            "layer_shape": None,
            "complete": False,
        }

    def _header(self) -> tuple[int | None, str | None]:
        """(dim, problem) from the header and size of features.npy; (None, None) when absent. A file
        cut short keeps its dim (its whole rows are read by :meth:`_short_rows`)."""
        dim, problem, _ = self._layout()
        return dim, problem

    def _layout(self) -> tuple[int | None, str | None, tuple[int, int] | None]:
        """(dim, problem, (data offset, whole rows present) for a file cut short, else None)."""
        path = self.path / "features.npy"
        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = _HEADER_READERS.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, fortran, dtype = read_header(fh)
                offset = fh.tell()
            size = path.stat().st_size
        except FileNotFoundError:
            return None, None, None
        except (OSError, ValueError, EOFError) as exc:
            return None, f"features.npy has no readable header ({exc})", None
        if dtype != np.float32 or fortran or len(shape) != 2 or shape[0] != self.n_rows:
            return None, f"features.npy holds {dtype} {shape}, expected float32 ({self.n_rows}, dim)", None
        expected = offset + shape[0] * shape[1] * 4
        if size < expected and shape[1] > 0:  # cut short (a full disk, a copy stopped): keep whole rows
            rows = (size - offset) // (shape[1] * 4)
            return (
                int(shape[1]),
                f"features.npy is {size} bytes, expected {expected} (cut short)",
                (offset, rows),
            )
        if size != expected:
            return None, f"features.npy is {size} bytes, expected {expected}", None
        return int(shape[1]), None, None

    def check(self, *, checksums: bool = True) -> EntryState:
        """Verify the entry against its journal (counts, ranges, ids, data file, row checksums);
        reads only, needs no lock."""
        meta = self._read_meta()
        journal = read_journal(self.path / "journal.jsonl", self.n_rows)
        problems = list(journal.problems)
        records = journal.records
        dim, data_problem, short = self._layout()
        bad: set[int] = set()
        with_rows = {i for i, r in enumerate(records) if r.rows}
        data_bad = data_problem is not None and short is None
        foreign = self._foreign(meta)
        if foreign:  # the entry holds features of other items: nothing of it can be kept
            problems.append(foreign)
            data_bad = True
            bad |= set(range(len(records)))
        if data_problem:
            problems.append(data_problem)
        if data_bad:
            bad |= with_rows
        elif dim is None and with_rows:
            problems.append(f"features.npy is missing but the journal lists {len(with_rows)} batches")
            bad |= with_rows
        else:
            if short is not None:  # the batches past the cut are lost; those before it are checked
                bad |= {i for i in with_rows if max(b for _, b in records[i].rows) > short[1]}
            data = None
            if checksums and with_rows - bad:
                data = self.read() if short is None else self._short_rows(dim, *short)
            wrong = {i for i in with_rows - bad if data is not None and records[i].crc is not None}
            wrong = {i for i in wrong if crc_of_ranges(data, records[i].rows) != records[i].crc}
            if wrong:
                rows = sum(b - a for i in wrong for a, b in records[i].rows)
                problems.append(f"{rows} rows of features.npy do not match their journal checksum")
                bad |= wrong
        good = [r for i, r in enumerate(records) if i not in bad]
        status = status_of(good, self.n_rows)
        shapes = [r.shape for r in good if r.shape is not None]
        shape = shapes[-1] if shapes else as_shape((meta or {}).get("layer_shape"))
        claimed = bool(meta and meta.get("complete"))
        if claimed and not status.done.all():
            covered = int(status.done.sum())
            problems.append(f"meta.json says complete but the journal covers {covered} of {self.n_rows} rows")
        mask = self._read_mask()
        if mask is not None and (mask.shape != status.valid.shape or not np.array_equal(mask, status.valid)):
            problems.append("valid.npy does not match the journal")
        if claimed and not problems:  # what a complete entry's meta.json states, against its files
            problems += meta_disagreements(meta, dim, shape, status)
        finished = (
            claimed
            and not problems
            and mask is not None
            and meta.get("dim") == dim
            and as_shape(meta.get("layer_shape")) == shape
        )
        return EntryState(
            status, dim, shape, problems, bad, data_bad, meta is not None, bool(finished), short is not None
        )

    def _short_rows(self, dim: int, offset: int, rows: int) -> np.ndarray:
        """The whole rows present in a features.npy cut short, memory-mapped read-only."""
        path = self.path / "features.npy"
        return np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=(rows, dim))

    def _foreign(self, meta: dict | None) -> str | None:
        """Why meta.json shows the entry was written for other items (None: it was not)."""
        if meta is None:
            return None
        if meta.get("n_rows") not in (None, self.n_rows):
            return f"meta.json is for {meta.get('n_rows')} items, the dataset has {self.n_rows}"
        known = meta.get("ids_sha256")
        if known and self.ids_sha256 and known != self.ids_sha256:
            return "meta.json records other item ids than the dataset's"
        return None

    @property
    def complete(self) -> bool:
        """True when every row is done (valid or failed) and the entry is not damaged."""
        return self.check(checksums=False).complete

    def status(self) -> RowStatus:
        """Done and failed rows, from the journal (a torn last line is ignored)."""
        return status_of(read_journal(self.path / "journal.jsonl", self.n_rows).records, self.n_rows)

    def read(self) -> np.ndarray:
        """All rows, memory-mapped read-only; only rows marked valid hold features (failed rows are
        NaN once the entry is complete)."""
        path = self.path / "features.npy"
        if not path.exists():
            raise StoreError(f"{self.path}: no feature data written yet")
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as exc:
            raise StoreError(
                f"{path}: damaged feature file ({exc}); run the extraction again to redo the entry"
            ) from exc

    def _read_mask(self) -> np.ndarray | None:
        try:
            mask = np.load(self.path / "valid.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return mask if mask.dtype == bool else None

    @property
    def row_shape(self) -> tuple[int, ...] | None:
        """Per-item layer shape before pooling, as recorded with the rows (e.g. (C, H, W))."""
        return self.check(checksums=False).layer_shape

    # -- writing -----------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the entry's exclusive writer lock (an error if another process holds it)."""
        if self._lock_fh is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
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

    def repair(self) -> list[str]:
        """With the lock held: remove temporary files of dead runs, trim a torn journal line, drop
        whatever :meth:`check` cannot trust (those rows are computed again) and rebuild meta.json;
        returns the damage found (empty for an intact or merely interrupted entry)."""
        if self._lock_fh is None:
            raise StoreError(f"{self.path}: repair needs the entry's lock")
        remove_dead_temp_files(self.path)
        journal_path = self.path / "journal.jsonl"
        trim_torn_line(journal_path, read_journal(journal_path, self.n_rows))
        state = self.check()
        if state.problems:
            log.warning("store entry %s is damaged: %s", self.path, "; ".join(state.problems))
            if state.data_bad:
                (self.path / "features.npy").unlink(missing_ok=True)
            elif state.cut_short:  # back to full length; the rows past the cut are computed again
                _, _, (offset, _) = self._layout()
                os.truncate(self.path / "features.npy", offset + self.n_rows * state.dim * 4)
            records = read_journal(journal_path, self.n_rows).records
            rewrite_journal(journal_path, [r for i, r in enumerate(records) if i not in state.bad_records])
            (self.path / "valid.npy").unlink(missing_ok=True)
        if state.problems or not state.meta_ok:
            meta = self._fresh_meta()
            meta.update(dim=None if state.data_bad else state.dim, layer_shape=_list(state.layer_shape))
            atomic_write_text(self.path / "meta.json", json.dumps(meta, indent=1))
        return state.problems

    def _allocate(self, dim: int) -> None:
        path = self.path / "features.npy"
        existing, problem = self._header()
        if problem:
            raise StoreError(f"{path}: {problem}; run the extraction again to repair the entry")
        if existing is None:
            tmp = self.path / f".features.{os.getpid()}.tmp.npy"
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n_rows, dim))
            arr.flush()
            del arr
            os.replace(tmp, path)
            existing = dim
        if existing != dim:
            raise StoreError(f"{self.path}: feature dimension changed from {existing} to {dim}")
        self._dim = dim
        self._data_fh = open(path, "r+b")  # noqa: SIM115 - closed in unlock()
        self._offset = int(self.read().offset)  # the .npy header length varies with the shape

    def write(self, rows: np.ndarray, values: np.ndarray, layer_shape: tuple[int, ...]) -> None:
        """Write feature rows (not yet journaled: call :meth:`commit` after)."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        if values.ndim != 2 or len(values) != len(rows):
            raise StoreError(f"{self.path}: expected {len(rows)} rows of features, got shape {values.shape}")
        if self._data_fh is None:
            self._allocate(values.shape[1])
        if values.shape[1] != self._dim:
            raise StoreError(f"{self.path}: feature dimension changed from {self._dim} to {values.shape[1]}")
        self._shape = tuple(int(s) for s in layer_shape)
        row_bytes = self._dim * 4
        order = np.argsort(rows)
        rows, values = rows[order], values[order]
        spans = ranges(rows)
        crc = 0
        for start, stop in spans:
            i = int(np.searchsorted(rows, start))
            block = memoryview(values[i : i + (stop - start)]).cast("B")
            os.pwrite(self._data_fh.fileno(), block, self._offset + start * row_bytes)
            crc = zlib.crc32(block, crc)
        self._last_write = (spans, crc)

    def meta_dim(self) -> int | None:
        """Feature dimension (from the header of features.npy; None before the first write)."""
        return self._dim if self._dim is not None else self._header()[0]

    def commit(self, rows: Iterable[int], failed: dict[int, str] | None = None, durable: bool = True) -> None:
        """Journal rows as done (after their data was written) and failed rows with their reason."""
        spans = ranges(list(rows))
        crc = None
        if spans:
            if self._data_fh is None:
                raise StoreError(f"{self.path}: rows committed before any was written")
            if durable:
                os.fdatasync(self._data_fh.fileno())
            last = self._last_write
            crc = last[1] if last is not None and last[0] == spans else crc_of_ranges(self.read(), spans)
        fails = {int(k): str(v) for k, v in (failed or {}).items()}
        if not spans and not fails:
            return
        record = Record(line=0, rows=spans, failed=fails, crc=crc, shape=self._shape if spans else None)
        append_record(self.path / "journal.jsonl", record, durable=durable)

    def finish_if_complete(self, computed_on: dict | None = None) -> bool:
        """When every row is done: NaN in the failed rows, valid.npy, and meta.json marked complete
        with the counts; returns whether the entry is complete. ``computed_on``: where the network
        ran when not in this process (a cluster's name and its workers' threads), recorded in
        environment.json beside this process's own versions and threads."""
        state = self.check(checksums=False)
        if not state.complete:
            return False
        status = state.status
        if status.failed and state.dim is not None:
            nan_row = np.full(state.dim, np.nan, dtype=np.float32).tobytes()
            offset = int(self.read().offset)
            with open(self.path / "features.npy", "r+b") as fh:
                for row in status.failed:
                    os.pwrite(fh.fileno(), nan_row, offset + row * state.dim * 4)
                os.fdatasync(fh.fileno())
        atomic_write_with(self.path / "valid.npy", lambda fh: np.save(fh, status.valid))
        meta = self._read_meta() or self._fresh_meta()
        meta.update(
            format=FORMAT_VERSION,
            dim=state.dim,
            layer_shape=_list(state.layer_shape),
            complete=True,
            n_valid=int(status.valid.sum()),
            n_failed=len(status.failed),
        )
        if self.ids_sha256 and not meta.get("ids_sha256"):
            meta["ids_sha256"] = self.ids_sha256
        # versions, threads, allocator of the run that completes the entry: beside meta.json, so the
        # rows and the bookkeeping stay byte-identical whichever process or cluster computed them;
        # written before meta.json marks the entry complete (a kill in between leaves it resumable)
        environment = summary() if computed_on is None else {**summary(), "computed_on": computed_on}
        atomic_write_text(self.path / "environment.json", json.dumps(environment, indent=1))
        atomic_write_text(self.path / "meta.json", json.dumps(meta, indent=1))
        return True


def _list(shape) -> list[int] | None:
    return None if shape is None else [int(s) for s in shape]
