"""Checkpoints: nested state dicts of tensors, plain JSON metadata and random states, written atomically
and read back without ever running code stored in the file.

A checkpoint is a ``torch.save`` zip archive holding one dict::

    {"deepfeat_checkpoint": {"format": 1, "kind": "<kind>"},
     "meta": "<JSON text>",               # config, history, counters: plain JSON only
     "state": {"model": ..., ...},        # state dicts: tensors, numbers, strings, lists, dicts
     "rng": {"torch": <tensor>, "cuda": [<tensor>, ...], "host": "<JSON text>"}}  # numpy, random

Every file is read with ``torch.load(weights_only=True)``, whose unpickler builds only tensors and
plain containers and refuses anything else named in the file (it never imports or calls it). Files
that are not PyTorch zip archives are recognised from their first bytes and refused before any
unpickling: text, raw Python pickles, empty and truncated files each get a one-line
:class:`~deepfeat.errors.CheckpointError` naming the file. PyTorch's legacy (pre-1.6) format is read
by the same restricted unpickler.

Why not safetensors: optimizer and scheduler states are nested structures of tensors and numbers
that safetensors would need a home-made flattening for, and fine-tuning checkpoints double as
weights files that other tools open with ``torch.load``; the restricted unpickler gives the same
guarantee that nothing in the file runs.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch

from deepfeat.errors import CheckpointError
from deepfeat.fileio import atomic_write_with, dumps_json

P = ParamSpec("P")
R = TypeVar("R")

FORMAT = 1
MARKER = "deepfeat_checkpoint"

_ZIP_MAGIC = b"PK\x03\x04"
#: first bytes of PyTorch's legacy format: a protocol-2 pickle of its magic number
_LEGACY_TORCH = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_PLAIN = (torch.Tensor, str, int, float, bool, type(None))


@dataclass
class Checkpoint:
    """A loaded checkpoint: its kind, plain metadata, state dicts and random states."""

    path: Path
    kind: str
    meta: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    rng: dict | None = None

    def restore_rng(self) -> None:
        """Put the random states saved with the checkpoint back (torch, CUDA, numpy, random)."""
        if self.rng is None:
            raise CheckpointError(f"{self.path}: saved without random states; cannot restore them")
        set_rng_state(self.rng)


def save_checkpoint(
    path: str | os.PathLike,
    state: Mapping[str, Any],
    *,
    kind: str,
    meta: Mapping[str, Any] | None = None,
    rng: bool = True,
) -> Path:
    """Write a checkpoint atomically: ``state`` (name -> state dict of tensors and plain values),
    ``meta`` (anything JSON can hold; NaN becomes null) and, with ``rng``, the current random states."""
    if not kind or not isinstance(kind, str):
        raise CheckpointError(f"a checkpoint kind must be a non-empty string, got {kind!r}")
    _check_plain(state, "state")
    obj = {
        MARKER: {"format": FORMAT, "kind": kind},
        "meta": dumps_json(dict(meta or {}), indent=None),
        "state": dict(state),
        "rng": rng_state() if rng else None,
    }
    return atomic_write_with(Path(path), lambda fh: torch.save(obj, fh))


def load_checkpoint(path: str | os.PathLike, *, kind: str | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (of ``kind`` when given), running no code
    from the file; a one-line :class:`CheckpointError` for anything else."""
    path = Path(path)
    obj = read_torch_file(path)
    header = obj.get(MARKER) if isinstance(obj, dict) else None
    if not isinstance(header, dict):
        want = f"a deepfeat {kind!r} checkpoint" if kind else "a deepfeat checkpoint"
        raise CheckpointError(f"{path}: not {want} (a plain weights file or another program's file)")
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {header.get('format')!r}; this deepfeat reads format {FORMAT}"
        )
    if kind is not None and header.get("kind") != kind:
        raise CheckpointError(f"{path}: a {header.get('kind')!r} checkpoint, not a {kind!r} one")
    try:
        meta = json.loads(obj.get("meta") or "{}")
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({exc})") from None
    state = obj.get("state")
    if not isinstance(state, dict) or not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged checkpoint (no state dicts or metadata)")
    return Checkpoint(path=path, kind=str(header.get("kind")), meta=meta, state=state, rng=obj.get("rng"))


def checkpoint_kind(path: str | os.PathLike) -> str | None:
    """The kind of the deepfeat checkpoint at ``path``, or None for another PyTorch file (a plain
    state dict); tensors are memory-mapped, not read. Raises :class:`CheckpointError` like
    :func:`load_checkpoint`."""
    obj = read_torch_file(path, mmap=True)
    header = obj.get(MARKER) if isinstance(obj, dict) else None
    return str(header.get("kind")) if isinstance(header, dict) else None


def read_torch_file(path: str | os.PathLike, *, mmap: bool = False) -> Any:
    """Contents of a PyTorch file (tensors and plain containers only), loaded on the CPU without
    running code from it; a one-line :class:`CheckpointError` for text, raw pickles, empty, truncated
    or unsafe files."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a PyTorch file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    is_zip = head.startswith(_ZIP_MAGIC)
    if not is_zip and not head.startswith(_LEGACY_TORCH):
        raise CheckpointError(f"{path}: not a PyTorch file: {_describe(head)}")
    if is_zip:
        _check_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except Exception as exc:
        raise CheckpointError(f"{path}: {_load_failure(exc)}") from None


def keeps_rng(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run on a fork of torch's CPU random state, restored after it: loaders that build a
    network (random initialisation) and then overwrite its weights leave the caller's random
    stream where it was."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with torch.random.fork_rng(devices=[]):
            return fn(*args, **kwargs)

    return wrapper


def rng_state() -> dict:
    """The current random states of torch (CPU and, when in use, CUDA), numpy and ``random``."""
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = list(torch.cuda.get_rng_state_all())
    host = {"numpy": _json_arrays(np.random.get_state(legacy=False)), "random": random.getstate()}
    return {"torch": torch.get_rng_state(), "cuda": cuda, "host": json.dumps(host)}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore random states captured by :func:`rng_state`."""
    try:
        torch.set_rng_state(state["torch"])
        cuda = list(state.get("cuda") or [])
        if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        host = json.loads(state["host"])
        np.random.set_state(_from_json_arrays(host["numpy"]))
        version, internal, gauss = host["random"]
        random.setstate((version, tuple(internal), gauss))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"damaged random states in a checkpoint ({exc})") from None


# -- helpers -------------------------------------------------------------------------------------
def _describe(head: bytes) -> str:
    if not head:
        return "the file is empty (0 bytes)"
    if head[0] == 0x80:
        return (
            "it is a raw Python pickle, which deepfeat never loads (unpickling can run code); "
            "save tensors with torch.save"
        )
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        shown = text.strip()
        return f"it holds text ({shown[:40]!r}{'...' if len(shown) > 40 else ''})"
    return f"unknown format (starts with bytes {head[:8].hex(' ')})"


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: truncated or damaged PyTorch file ({exc})") from None
    if not any(n.endswith("/data.pkl") for n in names):
        raise CheckpointError(f"{path}: a zip archive, but not a PyTorch file (no data.pkl inside)")


def _load_failure(exc: Exception) -> str:
    text = str(exc)
    if "weights_only" in text or "Unpickl" in type(exc).__name__ or "GLOBAL" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        named = f" ({found.group(1)})" if found else ""
        return (
            f"refused: holds Python objects other than tensors and plain data{named}; loading them "
            "could run code, so deepfeat does not"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"truncated or damaged PyTorch file ({first[:200]})"


def _check_plain(obj: Any, where: str) -> None:
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str | int):
                raise CheckpointError(f"cannot save {where}: key {k!r} is not a string or integer")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"cannot save {where}: a {type(obj).__name__}; checkpoints hold tensors, numbers, strings, "
        "lists and dicts only"
    )


def _json_arrays(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {"ndarray": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {k: _json_arrays(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _from_json_arrays(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"ndarray", "dtype"}:
            return np.asarray(obj["ndarray"], dtype=obj["dtype"])
        return {k: _from_json_arrays(v) for k, v in obj.items()}
    return obj
