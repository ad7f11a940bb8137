"""Fixtures of the reliability catalogue: one backbone for the module, tiny image trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfeat.data.transforms import Preprocess

#: Smaller still than tests.conftest.SMALL: these trials are about files, not features.
TINY = Preprocess(
    resize="shorter", size=40, crop=32, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3
)


@pytest.fixture(scope="package")
def effnet():
    from deepfeat.backbones import load_backbone

    return load_backbone("efficientnet_lite0")


def make_tree(root: Path, classes=("cat", "dog"), per_class: int = 3, size=(40, 36)) -> Path:
    """root/<class>/<i>.png of smooth random images."""
    rng = np.random.default_rng(len(str(root)))
    for c in classes:
        for i in range(per_class):
            path = root / c / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)
    return root
