"""Sample grids and reconstructions as PNG files: network outputs back to 8-bit pixels, tiled."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepfeat.fileio import atomic_write_with


def to_pixels(x: torch.Tensor, kind: str, image_shape: Sequence[int] | None = None) -> np.ndarray:
    """uint8 images from a batch: flat vectors in [0, 1] reshaped to ``image_shape`` (``kind``
    ``"vectors"``), or NCHW images in [-1, 1] (``"images"``) to NHWC."""
    x = x.detach().float().cpu()
    if kind == "vectors":
        shape = tuple(image_shape or (round(x.shape[1] ** 0.5),) * 2)
        arr = x.clamp(0, 1).mul(255).reshape(len(x), *shape)
    else:
        arr = x.clamp(-1, 1).add(1).mul(127.5).permute(0, 2, 3, 1)
    return arr.round().to(torch.uint8).numpy()


def tile(images: np.ndarray, columns: int, pad: int = 2) -> np.ndarray:
    """Images (N, H, W[, 3]) in a grid of ``columns`` columns on a mid-grey background."""
    n, h, w = images.shape[:3]
    rows = -(-n // columns)
    shape = (rows * (h + pad) + pad, columns * (w + pad) + pad, *images.shape[3:])
    canvas = np.full(shape, 128, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[top : top + h, left : left + w] = img
    return canvas


def save_grid(images: np.ndarray, path: str | os.PathLike, columns: int = 10, scale: int = 1) -> Path:
    """Write a grid PNG atomically (``scale``: nearest-neighbour magnification); returns the path."""
    grid = Image.fromarray(tile(images, columns))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_with(path, lambda fh: grid.save(fh, format="PNG"), durable=False)


def interleave_rows(originals: np.ndarray, reconstructions: np.ndarray, columns: int) -> np.ndarray:
    """Rows of ``columns`` originals, each followed by the row of their reconstructions."""
    out = []
    for start in range(0, len(originals), columns):
        out.append(originals[start : start + columns])
        out.append(reconstructions[start : start + columns])
    return np.concatenate(out)
