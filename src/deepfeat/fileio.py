"""Writing files so that a reader sees the old or the new content, never a mix, and JSON that is
always valid (no NaN or infinities: they become ``null``).

Every file deepfeat writes for later reading (store metadata, results, reports, checkpoints) goes
through :func:`atomic_write_bytes` or its wrappers: the content is written to a hidden temporary file
beside the target, synced, then renamed over it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepfeat.errors import ConfigError

#: Version of the layout of every JSON result file deepfeat writes (``"schema"`` key).
SCHEMA_VERSION = 1


#: temporary files of this module's writers and of the feature store: ``.<name>.<pid>.tmp[.npy]``
_TEMP = re.compile(r"^\..+\.(\d+)\.tmp(\.npy)?$")


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_with(
    path: str | os.PathLike, write: Callable[[io.BufferedWriter], Any], *, durable: bool = True
) -> Path:
    """Atomically write ``path`` through ``write(file_object)`` (e.g. ``torch.save`` or a PNG writer):
    a hidden temporary file beside it, synced unless ``durable=False``, then renamed over it."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    return atomic_write_with(path, lambda fh: fh.write(data), durable=durable)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def to_jsonable(obj: Any) -> Any:
    """A JSON-ready copy of ``obj``: objects with ``to_dict()`` and dataclasses as dicts, numpy arrays
    and scalars as lists and numbers, tuples and sets as lists, paths and other objects as strings,
    NaN and infinities as None (JSON has no such numbers)."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, type):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def dumps_json(obj: Any, *, indent: int | None = 1) -> str:
    """Strict JSON text of :func:`to_jsonable` (``obj``); never NaN or Infinity."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically."""
    return atomic_write_text(path, dumps_json(obj, indent=indent))


#: A file marking a folder deepfeat writes into (an output folder, a feature store): image-folder
#: listings leave such folders out, and the sub-folders the file names (one per line: a store's
#: ``entries`` and ``datasets``), so that results or a store kept inside the data folder, or a store at
#: its root, are not read as classes of images.
OUTPUT_MARKER = ".deepfeat-output"


def mark_output_dir(path: str | os.PathLike, own: Sequence[str] = ()) -> None:
    """Put :data:`OUTPUT_MARKER` into the existing folder ``path``, naming its sub-folders ``own``
    as deepfeat's too (nothing where it cannot be written: a read-only store is only read)."""
    names = sorted(set(own) | output_subfolders(path))
    marker = Path(path) / OUTPUT_MARKER
    text = "".join(f"{name}\n" for name in names)
    if not marker.is_file() or marker.read_text(encoding="utf-8", errors="replace") != text:
        # (written in place: a torn marker only loses names, which the next write puts back)
        with contextlib.suppress(OSError):
            marker.write_text(text, encoding="utf-8")


def is_output_dir(path: str | os.PathLike) -> bool:
    """Whether folder ``path`` holds :data:`OUTPUT_MARKER` (see :func:`mark_output_dir`)."""
    return (Path(path) / OUTPUT_MARKER).is_file()


def output_subfolders(path: str | os.PathLike) -> set[str]:
    """The sub-folders of ``path`` its :data:`OUTPUT_MARKER` names as deepfeat's (none without one)."""
    try:
        text = (Path(path) / OUTPUT_MARKER).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {line.strip() for line in text.splitlines() if line.strip()}


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create folder ``path`` when needed and check that files can be written in it, before any work;
    a clear error when it is a file or not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: exists and is not a folder; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".deepfeat-write-check.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what} {path}: cannot write there ({reason}); choose a writable folder") from None
    mark_output_dir(path)
    return path


def remove_dead_temp_files(folder: Path) -> None:
    """Delete temporary files (``.<name>.<pid>.tmp``) left in ``folder`` by processes that died."""
    for path in folder.glob(".*.tmp*"):
        found = _TEMP.match(path.name)
        if found and not _alive(int(found.group(1))):
            with contextlib.suppress(OSError):
                path.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
