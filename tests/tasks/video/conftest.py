"""A tiny moving-digit set (scikit-learn's digits, no download) and cheap frame features, shared by the
video task tests."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cv2")

from deepfeat.tasks.video import FrameFeatures, MovingDigits, make_moving_digits

#: 2 classes x 4 videos (3 train, 1 test) of 8 frames, 56 x 56
TINY = MovingDigits(
    digits=(0,), motions=("left", "right"), clips_per_class=4, test_fraction=0.25, frames=8, size=56, seed=3
)


def tiny_features(**kw) -> FrameFeatures:
    """An early layer of EfficientNet-Lite0 on frames warped to 32 x 32: cheap, enough for tests."""
    return FrameFeatures(
        **{"layer": "stage3", "grid": 1, "input_size": 32, "batch_size": 64, "workers": 1, **kw}
    )


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video") / "digits"
    make_moving_digits(root, TINY, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("video-store") / "store"
