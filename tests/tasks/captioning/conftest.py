"""Tiny captioned image sets: coloured shapes with templated captions, as a CSV and as COCO JSON."""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220)}
SHAPES = ("square", "circle")


def shape_image(colour: str, shape: str, variant: int) -> Image.Image:
    rng = np.random.default_rng(zlib.crc32(f"{colour}{shape}{variant}".encode()))
    img = Image.new("RGB", (96, 96), (245, 245, 240))
    draw = ImageDraw.Draw(img)
    x, y = (int(v) for v in rng.integers(10, 30, size=2))
    size = int(rng.integers(40, 56))
    box = (x, y, x + size, y + size)
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
    return img


def captions_for(colour: str, shape: str) -> list[str]:
    return [
        f"A {colour} {shape}.",
        f"a {shape} that is {colour}",
        f"The {colour} {shape} on a white background .",
    ]


def write_shapes(root: Path, variants: int = 2) -> Path:
    """``root/images/*.png`` and ``root/captions.csv`` (image,caption); returns the CSV path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for colour in COLOURS:
        for shape in SHAPES:
            for v in range(variants):
                name = f"{colour}_{shape}_{v}.png"
                shape_image(colour, shape, v).save(root / "images" / name)
                rows += [(name, c) for c in captions_for(colour, shape)]
    path = root / "captions.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    return path


def write_coco(root: Path) -> Path:
    """COCO layout: ``root/annotations/captions_val2017.json`` and ``root/val2017/``."""
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k, (colour, shape) in enumerate([("red", "circle"), ("blue", "square"), ("green", "circle")]):
        name = f"{k:012d}.jpg"
        shape_image(colour, shape, 7).save(root / "val2017" / name)
        images.append({"id": 100 + k, "file_name": name})
        annotations += [
            {"image_id": 100 + k, "id": 10 * k + j, "caption": c}
            for j, c in enumerate(captions_for(colour, shape))
        ]
    images.append({"id": 999, "file_name": "uncaptioned.jpg"})
    (root / "annotations").mkdir()
    path = root / "annotations" / "captions_val2017.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


@pytest.fixture(scope="session")
def shapes_csv(tmp_path_factory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def shapes_split() -> dict:
    ids = [f"{c}_{s}_{v}.png" for c in COLOURS for s in SHAPES for v in range(2)]
    return {
        "train": [i for i in ids if i.endswith("_0.png")] + ids[1:4:2],
        "val": [ids[5], ids[9]],
        "test": [ids[7], ids[11]],
    }


@pytest.fixture
def coco_json(tmp_path) -> Path:
    return write_coco(tmp_path / "coco")
