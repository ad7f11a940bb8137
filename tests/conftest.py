"""Shared fixtures: small generated images of every awkward kind, small datasets and backbones."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfeat._runtime import tune_allocator
from deepfeat.data.transforms import Preprocess

# The test process opts in to the allocator tuning the command line applies (the library never does
# by itself; tests/test_runtime.py checks that in a fresh process): 2-3x faster CPU inference.
tune_allocator()

#: ../shared/datasets beside the checkout; DEEPFEAT_DATASETS points elsewhere (a git worktree in a subfolder)
SHARED_DATASETS = Path(
    os.environ.get("DEEPFEAT_DATASETS") or Path(__file__).resolve().parents[2] / "shared" / "datasets"
)

#: Small input size so tests run fast on 2 cores.
SMALL = Preprocess(
    resize="shorter", size=72, crop=64, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3
)


def photo(seed: int = 0, size: tuple[int, int] = (96, 80)) -> np.ndarray:
    """A smooth random RGB image (uint8 HxWx3)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    channels = [
        127
        + 120 * np.sin(xx / (5 + 3 * rng.random()) + rng.random() * 6) * np.cos(yy / (7 + 3 * rng.random()))
        for _ in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0, 255).astype(np.uint8)


def save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and its CRC."""
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with a tiny (invalid) body."""
    chunk = png_chunk
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(seed, (160, 120))).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    return data[: len(data) // 2]


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """A class-per-folder tree with 3 classes x 4 good JPEG/PNG images."""
    root = tmp_path / "tree"
    for c, name in enumerate(["ants", "bees", "wasps"]):
        for i in range(4):
            arr = photo(10 * c + i)
            ext = "jpg" if i % 2 == 0 else "png"
            save(Image.fromarray(arr), root / name / f"img{i}.{ext}")
    return root


@pytest.fixture
def bad_tree(image_tree: Path) -> Path:
    """The image tree plus one file of every bad kind, all in class 'ants'."""
    ants = image_tree / "ants"
    (ants / "zero.jpg").write_bytes(b"")
    (ants / "notes.txt").write_text("not an image")
    (ants / "truncated.jpg").write_bytes(truncated_jpeg())
    (ants / "bomb.png").write_bytes(png_header_only(30000, 30000))
    return image_tree
