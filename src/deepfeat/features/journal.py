"""The journal of a feature-store entry: an append-only log of the rows that are done.

One JSON object per line, appended (and synced) only after the rows it names were written and
synced: ``{"rows": [[start, stop], ...], "failed": {"<row>": "<reason>"}, "crc": <crc32>,
"shape": [C, H, W]}``. ``rows`` are the rows holding features, as [start, stop) ranges; ``failed``
the rows whose image could not be used, with the reason; ``crc`` the CRC-32 of the float32 bytes of
the ``rows`` in ascending order, as written; ``shape`` the per-item layer shape before pooling. A
last line without its newline is a torn append from a killed run: it is ignored (those rows are
computed again) and trimmed by the next writer. Any other unreadable line is damage.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepfeat.fileio import atomic_write_text


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


@dataclass
class Record:
    """One journal line."""

    line: int
    rows: list[list[int]]
    failed: dict[int, str]
    crc: int | None = None
    shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict:
        out: dict = {"rows": self.rows, "failed": {str(k): v for k, v in self.failed.items()}}
        if self.crc is not None:
            out["crc"] = self.crc
        if self.shape is not None:
            out["shape"] = list(self.shape)
        return out


@dataclass
class Journal:
    """The readable records of a journal, the damaged lines, and whether the last line is torn."""

    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    torn: bool = False
    intact_bytes: int = 0  # length of the journal up to its last complete line


def ranges(rows) -> list[list[int]]:
    """Sorted row indices compressed into [start, stop) ranges."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1)
    starts = np.concatenate([[rows[0]], rows[breaks + 1]])
    stops = np.concatenate([rows[breaks] + 1, [rows[-1] + 1]])
    return [[int(a), int(b)] for a, b in zip(starts, stops)]


def crc_of_ranges(data: np.ndarray, spans: list[list[int]]) -> int:
    """CRC-32 of the bytes of ``data[start:stop]`` for each span, in order."""
    crc = 0
    for start, stop in spans:
        crc = zlib.crc32(memoryview(np.ascontiguousarray(data[start:stop])).cast("B"), crc)
    return crc


def read_journal(path: Path, n_rows: int) -> Journal:
    """Parse a journal; lines naming rows outside [0, n_rows) or unreadable lines are problems."""
    out = Journal()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return out
    lines = raw.split(b"\n")
    if lines and lines[-1] != b"":
        out.torn = True
    complete = lines[:-1]
    out.intact_bytes = sum(len(line) + 1 for line in complete)
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        record = _parse(line, number, n_rows)
        if isinstance(record, str):
            out.problems.append(f"journal line {number}: {record}")
        else:
            out.records.append(record)
    return out


def status_of(records: list[Record], n_rows: int) -> RowStatus:
    """Done and failed rows named by ``records`` (a later record wins for a row named twice)."""
    done = np.zeros(n_rows, dtype=bool)
    failed: dict[int, str] = {}
    for record in records:
        for start, stop in record.rows:
            done[start:stop] = True
            for row in [r for r in failed if start <= r < stop]:
                del failed[row]
        for row, reason in record.failed.items():
            failed[row] = reason
            done[row] = True
    return RowStatus(done=done, failed=failed)


def append_record(path: Path, record: Record, *, durable: bool = True) -> None:
    """Append one line with a single write, then sync it when ``durable``."""
    data = (json.dumps(record.to_dict(), ensure_ascii=True) + "\n").encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def rewrite_journal(path: Path, records: list[Record]) -> None:
    """Replace the journal atomically by ``records``."""
    text = "".join(json.dumps(r.to_dict(), ensure_ascii=True) + "\n" for r in records)
    atomic_write_text(path, text)


def trim_torn_line(path: Path, journal: Journal) -> None:
    """Cut a torn last line off the journal, so that the next record starts on a line of its own."""
    if journal.torn:
        os.truncate(path, journal.intact_bytes)
        journal.torn = False


def _parse(line: bytes, number: int, n_rows: int) -> Record | str:
    try:
        obj = json.loads(line)
        spans = [[int(a), int(b)] for a, b in obj["rows"]]
        failed = {int(k): str(v) for k, v in (obj.get("failed") or {}).items()}
        crc = obj.get("crc")
        shape = obj.get("shape")
        crc = None if crc is None else int(crc)
        shape = None if shape is None else tuple(int(s) for s in shape)
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unreadable"
    if any(not 0 <= a < b <= n_rows for a, b in spans) or any(not 0 <= r < n_rows for r in failed):
        return f"names rows outside 0..{n_rows - 1}"
    return Record(line=number, rows=spans, failed=failed, crc=crc, shape=shape)
