"""The semantic representation of a video (thesis Section 4.5: activity, tool, object, location from a
CRF; here any named slots): one probability vector per slot and video, as predicted by deepfeat's
clip classifiers (one classifier per slot, :func:`predict_slots`) or read from a file the user
supplies (:func:`read_slots`: a CRF's outputs, max labels or probabilities).

Slot file (JSON)::

    {"slots": {"activity": ["cut", "peel", ...], "object": [...], ...},
     "videos": {"<path as in the manifest>": {"activity": [0.7, 0.2, ...] | "cut", ...}, ...}}

A value given as a label is a max prediction (probability 1 for that label). From the vectors the
three inputs of Figure 4.5 are made: the max labels as a token sequence (a), their one-hot vectors
concatenated (b), the probability vectors concatenated (c).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepfeat.data.images import printable
from deepfeat.errors import ConfigError, DataError
from deepfeat.fileio import write_json

SLOT_FILE = "slots.json"


@dataclass
class SlotPredictions:
    """Per slot (in order), its values and a (videos x values) probability matrix; ``failures``:
    videos without a prediction and why."""

    slots: dict[str, list[str]]
    ids: list[str]
    probs: dict[str, np.ndarray]
    source: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.slots:
            raise ConfigError("no slot: give at least one slot with its values")
        self._index = {v: i for i, v in enumerate(self.ids)}
        for name, values in self.slots.items():
            if len(values) < 1 or len(set(values)) != len(values):
                raise ConfigError(f"slot {name!r}: give its values once each, got {values}")
            p = np.asarray(self.probs[name], dtype=np.float32)
            if p.shape != (len(self.ids), len(values)):
                raise ConfigError(
                    f"slot {name!r}: probabilities of shape {p.shape}, "
                    f"expected {(len(self.ids), len(values))}"
                )
            self.probs[name] = p

    @property
    def sizes(self) -> list[int]:
        return [len(v) for v in self.slots.values()]

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._index

    def select(self, ids: Sequence[str], what: str = "videos") -> SlotPredictions:
        """The predictions of ``ids``, in that order; a missing video is an error naming it."""
        missing = [i for i in ids if i not in self._index]
        if missing:
            reasons = dict(self.failures)
            first = missing[0]
            why = f" ({reasons[first]})" if first in reasons else ""
            raise DataError(
                f"{len(missing)} {what} have no slot prediction{why}, e.g. {first!r}; the slot file "
                f"({self.source or 'given'}) must hold every video of the manifest, "
                "keyed by its path as written there"
            )
        rows = np.asarray([self._index[i] for i in ids], dtype=np.int64)
        return SlotPredictions(
            dict(self.slots), list(ids), {k: v[rows] for k, v in self.probs.items()}, self.source
        )

    def labels(self) -> np.ndarray:
        """Index of the most probable value per (video, slot): (videos, slots)."""
        return np.stack([self.probs[s].argmax(1) for s in self.slots], axis=1).astype(np.int64)

    def tokens(self) -> np.ndarray:
        """The max labels as tokens of one input vocabulary (every slot's values in turn)."""
        offsets = np.cumsum([0, *self.sizes[:-1]])
        return self.labels() + offsets[None, :]

    def vectors(self, kind: str) -> np.ndarray:
        """Concatenated per-slot vectors: ``"max"`` one-hot of the max labels, ``"prob"`` probabilities."""
        if kind == "prob":
            return np.concatenate([self.probs[s] for s in self.slots], axis=1)
        if kind != "max":
            raise ConfigError(f"slot input {kind!r}; valid: max, prob")
        out = np.zeros((len(self.ids), sum(self.sizes)), np.float32)
        rows = np.arange(len(self.ids))
        for col in self.tokens().T:
            out[rows, col] = 1.0
        return out

    def label_names(self, row: int) -> dict[str, str]:
        return {s: v[int(self.probs[s][row].argmax())] for s, v in self.slots.items()}

    def to_dict(self) -> dict:
        return {
            "slots": self.slots,
            "videos": {v: {s: self.probs[s][i].tolist() for s in self.slots} for i, v in enumerate(self.ids)},
            "failures": [list(f) for f in self.failures],
        }

    def write(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_dict())


def slots_from_dict(data: Mapping, where: str = "slot predictions") -> SlotPredictions:
    """Slot predictions from the file layout of the module docstring, checked value by value."""
    if (
        not isinstance(data, Mapping)
        or not isinstance(data.get("slots"), Mapping)
        or not isinstance(data.get("videos"), Mapping)
    ):
        raise DataError(
            f"{where}: expected an object with 'slots' ({{slot: [values]}}) "
            "and 'videos' ({path: {slot: ...}})"
        )
    slots = {str(k): [str(x) for x in v] for k, v in data["slots"].items()}
    ids = [str(v) for v in data["videos"]]
    probs = {s: np.zeros((len(ids), len(vals)), np.float32) for s, vals in slots.items()}
    for i, (vid, entry) in enumerate(data["videos"].items()):
        for s, vals in slots.items():
            value = entry.get(s) if isinstance(entry, Mapping) else None
            if value is None:
                raise DataError(f"{where}: video {vid!r} has no prediction for slot {s!r}")
            if isinstance(value, str):
                if value not in vals:
                    raise DataError(f"{where}: video {vid!r}, slot {s!r}: {value!r} is not one of {vals}")
                probs[s][i, vals.index(value)] = 1.0
                continue
            p = np.asarray(value, dtype=np.float64)
            if (
                p.shape != (len(vals),)
                or not np.all(np.isfinite(p))
                or (p < 0).any()
                or abs(p.sum() - 1) > 1e-3
            ):
                raise DataError(
                    f"{where}: video {vid!r}, slot {s!r}: give a label or {len(vals)} probabilities "
                    f"(non-negative, summing to 1) in the order of {vals}"
                )
            probs[s][i] = p / p.sum()
    failures = [tuple(map(str, f)) for f in data.get("failures", [])]
    return SlotPredictions(slots, ids, probs, where, failures)


def read_slots(path: str | os.PathLike) -> SlotPredictions:
    """Slot predictions from a JSON file (a folder: its ``slots.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / SLOT_FILE
    where = printable(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{where}: slot prediction file not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: not a readable JSON slot file ({exc})") from None
    return slots_from_dict(data, where)


def predict_slots(
    ids: Sequence[str],
    paths: Sequence[str | os.PathLike],
    classifiers: Mapping[str, object],
    *,
    store=None,
    device: str | None = None,
    progress: bool = True,
) -> SlotPredictions:
    """Every video's slot probabilities from one trained clip classifier per slot (a model folder or a
    :class:`~deepfeat.tasks.video.VideoClassifier`); the slot's values are the classifier's classes.
    Videos a classifier cannot read are listed in ``failures`` (and left out)."""
    from deepfeat.tasks.video import load_classifier, predict_videos

    if not classifiers:
        raise ConfigError("no slot classifier given (slot=MODEL)")
    if len(ids) != len(paths) or not ids:
        raise ConfigError("give one id per video path, and at least one video")
    slots: dict[str, list[str]] = {}
    probs: dict[str, np.ndarray] = {}
    bad: dict[str, str] = {}
    for slot, model in classifiers.items():
        clf = model if hasattr(model, "predict_proba") else load_classifier(model, device=device)
        preds = predict_videos(list(paths), [clf], top_k=1, store=store, device=device, progress=progress)
        slots[slot] = list(clf.classes)
        probs[slot] = np.zeros((len(ids), len(clf.classes)), np.float32)
        for i, p in enumerate(preds):
            if p.error:
                bad.setdefault(ids[i], f"{slot}: {p.error}")
            else:
                probs[slot][i] = p.probs[clf.name]
    keep = [i for i, v in enumerate(ids) if v not in bad]
    return SlotPredictions(
        slots,
        [ids[i] for i in keep],
        {s: p[keep] for s, p in probs.items()},
        source="classifiers "
        + ", ".join(
            f"{s}={printable(m) if isinstance(m, str | os.PathLike) else 'given'}"
            for s, m in classifiers.items()
        ),
        failures=sorted(bad.items()),
    )
