"""A tiny described moving-digit set (scikit-learn's digits, no download) and slot predictions made
from its true slots with seeded noise (so that the sentence-model tests need no CNN)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from deepfeat.tasks.video_description import DescribedDigits, SlotPredictions, make_described_digits

#: 2 digits x 2 motions x 2 colours; clips of the parts slots, train, val, test; 4 frames of 56 x 56
TINY = DescribedDigits(
    digits=(1, 7),
    motions=("left", "right"),
    colours=("red", "blue"),
    clips=(6, 16, 4, 4),
    sentences_per_clip=3,
    frames=4,
    size=56,
    seed=5,
)


def noisy_slots(root: Path, certainty: float = 0.8, seed: int = 0) -> SlotPredictions:
    """Slot probabilities of every described clip: ``certainty`` on a value that is the true one
    with probability ``certainty``, the rest spread evenly."""
    truth = json.loads((root / "truth.json").read_text())
    slots = truth["slots"]
    ids = [c for c, t in truth["clips"].items() if t["part"] != "slots"]
    rng = np.random.default_rng(seed)
    probs = {}
    for s, values in slots.items():
        p = np.full((len(ids), len(values)), (1 - certainty) / max(1, len(values) - 1), np.float32)
        for i, vid in enumerate(ids):
            true = values.index(truth["clips"][vid][s])
            pick = true if rng.random() < certainty else int(rng.integers(len(values)))
            p[i, :] = (1 - certainty) / max(1, len(values) - 1)
            p[i, pick] = certainty
        probs[s] = p / p.sum(1, keepdims=True)
    return SlotPredictions(slots, ids, probs, source="test noise")


@pytest.fixture(scope="session")
def described(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("described") / "digits"
    make_described_digits(root, TINY, progress=False)
    return root


@pytest.fixture(scope="session")
def slot_preds(described) -> SlotPredictions:
    return noisy_slots(described)
