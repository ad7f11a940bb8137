"""Tiny generated detection data: a VOC folder of smooth photos with red and blue squares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import photo

CLASSES = ("blue", "red")
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def voc_xml(
    filename: str, size: tuple[int, int], objects: list[tuple[str, tuple[int, int, int, int], int]]
) -> str:
    """A VOC annotation: objects as (name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)."""
    parts = [
        "<annotation>",
        f"<filename>{filename}</filename>",
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>",
    ]
    for name, (x1, y1, x2, y2), diff in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{diff}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts)


def make_voc(root: Path, n: int = 8, size: tuple[int, int] = (96, 80), seed: int = 0) -> Path:
    """``n`` images with one or two coloured squares (both classes in both splits); even images
    train, odd images test."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        image = photo(seed + i, size) // 3 + 60
        objects = []
        for k in range(1 + (i % 4 >= 2)):
            name = CLASSES[(i // 2 + k) % 2]
            side = int(rng.integers(22, 34))
            x = int(rng.integers(0, size[0] - side)) if k == 0 else max(0, size[0] - side - 2)
            y = int(rng.integers(0, size[1] - side)) if k == 0 else 1
            image[y : y + side, x : x + side] = COLOURS[name]
            objects.append((name, (x + 1, y + 1, x + side, y + side), 0))
        image_id = f"{i:06d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", size, objects))
        ids.append(image_id)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids[0::2]) + "\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids[1::2]) + "\n")
    (root / "ImageSets" / "Main" / "all.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    return make_voc(tmp_path / "voc")


@pytest.fixture(scope="module")
def lite0():
    from deepfeat.backbones import load_backbone

    return load_backbone("efficientnet_lite0")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on the shared 2-core machine, two OpenMP threads of many tiny convolutions
    spend far more time waiting for each other than computing (seconds instead of 0.1 s per pass)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
