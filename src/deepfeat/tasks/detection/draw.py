"""Detections drawn on images (PNG): one colour per class, the class and score above each box, the
annotated boxes (when given) as thin white outlines."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deepfeat.fileio import atomic_write_with
from deepfeat.report.plots import colours
from deepfeat.tasks.detection.voc_eval import Detections


def draw_detections(
    image: Image.Image,
    detections: Detections,
    classes: list[str],
    path: str | os.PathLike,
    *,
    ground_truth: np.ndarray | None = None,
    threshold: float | None = 0.0,
    max_boxes: int = 20,
) -> Path:
    """Write ``image`` with its detections scoring above ``threshold`` (at most ``max_boxes``, best
    first) as a PNG at ``path``."""
    img = image.convert("RGB").copy()
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    palette = [tuple(int(255 * v) for v in c[:3]) for c in colours(len(classes))]
    width = max(2, round(max(img.size) / 250))
    for box in [] if ground_truth is None else np.asarray(ground_truth).reshape(-1, 4):
        draw.rectangle([float(v) for v in box], outline=(255, 255, 255), width=1)
    order = np.argsort(-detections.scores, kind="stable")
    if threshold is not None:
        order = order[detections.scores[order] > threshold]
    for k in order[:max_boxes]:
        x1, y1, x2, y2 = (float(v) for v in detections.boxes[k])
        colour = palette[int(detections.labels[k]) % len(palette)]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        label = f"{classes[int(detections.labels[k])]} {detections.scores[k]:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label, font=font)
        ty = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle([x1, ty, x1 + (right - left) + 4, ty + (bottom - top) + 2], fill=colour)
        draw.text((x1 + 2, ty), label, fill=(255, 255, 255), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_with(path, lambda fh: img.save(fh, format="PNG"), durable=False)
