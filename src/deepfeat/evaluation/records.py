"""The checkpoint records of an evaluation: each fit's key (the feature set's name, store key,
provenance and contents, the encoder, the probe and the split) and reading finished records back, so
an interrupted evaluation resumes without refitting and never reuses a record of other features."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from deepfeat.evaluation.encoders import encoder_description
from deepfeat.evaluation.protocols import Split
from deepfeat.features.featureset import FeatureSet


def content_hash(*sets: FeatureSet | None) -> str:
    """A hash of the feature sets' values, targets, ids, rows, classes, difficult flags and splits (read
    in blocks of rows, so a memory-mapped set is never copied whole)."""
    h = hashlib.blake2b(digest_size=16)
    for fs in sets:
        if fs is None:
            continue
        X = fs.features
        step = max(1, (1 << 24) // max(1, X.itemsize * int(np.prod(X.shape[1:]))))
        for i in range(0, len(X), step):
            h.update(np.ascontiguousarray(X[i : i + step]).data)
        h.update(repr((X.shape, str(X.dtype), fs.ids, fs.classes)).encode())
        for a in (fs.targets, fs.rows, fs.difficult, fs.splits):
            if a is None:
                h.update(b"-")
            elif np.asarray(a).dtype == object:  # the values: an object array's bytes are addresses
                h.update(json.dumps([str(v) for v in np.asarray(a).ravel()]).encode())
            else:
                h.update(np.ascontiguousarray(a).tobytes() + str(np.asarray(a).dtype).encode())
    return h.hexdigest()


def record_key(
    name: str, feature: FeatureSet, encoder, probe_name: str, probe, split: Split, content: str
) -> str:
    """The checkpoint key of one fit: the feature set's name, store key, shape, provenance and contents
    (``content``: :func:`content_hash`), the encoder, the probe with its parameters and the split (two
    feature sets with the same name and provenance but other values, e.g. built by hand, never share
    records)."""
    text = json.dumps(
        [
            name,
            feature.key,
            list(feature.features.shape),
            feature.provenance,
            content,
            encoder_description(encoder),
            probe_name,
            repr(sorted(probe.get_params().items())),
            split.to_dict(),
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_checkpoint(path: Path | None) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if path is not None and path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
                done[rec["key"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # torn line from an interrupted run: redo that record
    return done
