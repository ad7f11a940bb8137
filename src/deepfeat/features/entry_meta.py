"""A store entry's meta.json: provenance as plain JSON, the digest of its item ids, and where a
complete entry's meta.json disagrees with its files (a hand edit)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from deepfeat.features.journal import RowStatus


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of the item ids in order."""
    return hashlib.sha256("\n".join(ids).encode("utf-8", "surrogatepass")).hexdigest()


def json_default(obj):
    """What ``json`` cannot write itself, in provenance: NumPy scalars as their Python value (so a
    parameter given as ``np.int64(3)`` keys the same entry as ``3``), anything else as text."""
    return obj.item() if isinstance(obj, np.generic) else str(obj)


def plain_provenance(provenance: dict) -> dict:
    return json.loads(json.dumps(provenance, default=json_default))


def as_shape(shape) -> tuple[int, ...] | None:
    """A layer shape from JSON (a list) as a tuple of ints (None stays None)."""
    return None if shape is None else tuple(int(s) for s in shape)


def meta_disagreements(meta: dict, dim, shape, status: RowStatus) -> list[str]:
    """Where a complete entry's meta.json disagrees with its data file and journal (an edit; a missing
    valid.npy is not damage: it is rebuilt from the journal)."""
    out = []
    if dim is not None and meta.get("dim") != dim:
        out.append(f"meta.json says dim {meta.get('dim')!r}, features.npy holds {dim}")
    if shape is not None and as_shape(meta.get("layer_shape")) != shape:
        out.append(f"meta.json says layer_shape {meta.get('layer_shape')!r}, the journal {list(shape)}")
    counts = {"n_valid": int(status.valid.sum()), "n_failed": len(status.failed)}
    for key, value in counts.items():
        if key in meta and meta[key] != value:
            out.append(f"meta.json says {key} {meta[key]!r}, the journal {value}")
    return out
