"""Box arithmetic of R-CNN: overlaps, context dilation for warping, clipping and the bounding-box
regression parametrisation of the thesis (appendix 3.4.3, equations 3.1-3.4 and 3.6-3.9).

Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates (see :mod:`deepfeat.data.detection`):
width ``x2 - x1``, centre ``x1 + width / 2``.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


def as_boxes(boxes) -> np.ndarray:
    """float32 (N, 4) array (an empty list gives shape (0, 4))."""
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def iou(a, b) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): (N, M);
    0 for two boxes without area (their union is empty: 0 / 0)."""
    a, b = as_boxes(a), as_boxes(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    out = box_iou(torch.from_numpy(a).double(), torch.from_numpy(b).double()).nan_to_num_(0.0)
    return out.float().numpy()


def widths_heights(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = as_boxes(boxes)
    return boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]


def context_boxes(boxes, size: int, padding: int) -> np.ndarray:
    """Each box dilated about its centre so that, warped to ``size`` x ``size``, the original box
    fills the central ``size - 2 * padding`` pixels: ``padding`` pixels of context on every side in
    the warped frame (the thesis uses p = 16 at 227). The dilated box may leave the image."""
    boxes = as_boxes(boxes)
    if padding <= 0:
        return boxes.copy()
    scale = size / (size - 2.0 * padding)
    w, h = widths_heights(boxes)
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    hw, hh = 0.5 * w * scale, 0.5 * h * scale
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32)


def clip(boxes, width: float, height: float) -> np.ndarray:
    """Boxes clipped to the image ``[0, width] x [0, height]``."""
    boxes = as_boxes(boxes).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


def keep_valid(boxes, min_size: float = 0.0) -> np.ndarray:
    """Indices of boxes with finite coordinates and width and height above ``min_size`` (and > 0)."""
    boxes = as_boxes(boxes)
    w, h = widths_heights(boxes)
    ok = np.isfinite(boxes).all(axis=1) & (w > max(min_size, 0.0)) & (h > max(min_size, 0.0))
    return np.flatnonzero(ok)


def unique_boxes(boxes, decimals: int = 2) -> np.ndarray:
    """Indices of the first occurrence of every distinct box (rounded to ``decimals``), in order."""
    boxes = as_boxes(boxes)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(np.round(boxes, decimals), axis=0, return_index=True)
    return np.sort(first)


def _centres(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    w, h = widths_heights(boxes)
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def regression_targets(proposals, targets) -> np.ndarray:
    """(t_x, t_y, t_w, t_h) taking each proposal P to its box G: t_x = (G_x - P_x) / P_w,
    t_y = (G_y - P_y) / P_h, t_w = log(G_w / P_w), t_h = log(G_h / P_h) (thesis eq. 3.6-3.9)."""
    p = as_boxes(proposals).astype(np.float64)
    g = as_boxes(targets).astype(np.float64)
    px, py, pw, ph = _centres(p)
    gx, gy, gw, gh = _centres(g)
    return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1)


def apply_deltas(proposals, deltas, max_log_scale: float = 4.0) -> np.ndarray:
    """The boxes G^ = (P_w d_x + P_x, P_h d_y + P_y, P_w exp(d_w), P_h exp(d_h)) (thesis eq. 3.1-3.4),
    as corners; ``deltas`` (N, 4) or (N, K, 4) for K classes. Log-scales are capped at
    ``max_log_scale`` so that a wild prediction cannot overflow."""
    p = as_boxes(proposals).astype(np.float64)
    d = np.asarray(deltas, dtype=np.float64)
    px, py, pw, ph = _centres(p)
    if d.ndim == 3:
        px, py, pw, ph = (v[:, None] for v in (px, py, pw, ph))
    gx = pw * d[..., 0] + px
    gy = ph * d[..., 1] + py
    gw = pw * np.exp(np.minimum(d[..., 2], max_log_scale))
    gh = ph * np.exp(np.minimum(d[..., 3], max_log_scale))
    out = np.stack([gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh], axis=-1)
    return out.astype(np.float32)
