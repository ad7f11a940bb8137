"""Box arithmetic: IoU, context dilation, the thesis' regression parametrisation."""

from __future__ import annotations

import numpy as np

from deepfeat.tasks.detection.boxes import (
    apply_deltas,
    clip,
    context_boxes,
    iou,
    keep_valid,
    regression_targets,
    unique_boxes,
)


def _iou_reference(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_iou_matches_the_definition():
    rng = np.random.default_rng(0)

    def boxes(n):
        xs, ys = np.sort(rng.uniform(0, 100, (n, 2)), axis=1), np.sort(rng.uniform(0, 100, (n, 2)), axis=1)
        return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)

    a, b = boxes(7), boxes(5)
    got = iou(a, b)
    want = np.array([[_iou_reference(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert iou(np.zeros((0, 4)), b).shape == (0, 5)
    # two boxes without area: no overlap, not 0 / 0 = NaN (an argmax over NaN picks anything)
    assert iou([[3, 3, 3, 3]], [[3, 3, 3, 3], [0, 0, 5, 5]]).tolist() == [[0.0, 0.0]]


def test_context_boxes_leave_p_pixels_at_the_warp_size():
    box = np.array([[10, 20, 60, 120]], np.float32)  # 50 x 100
    size, p = 227, 16
    dil = context_boxes(box, size, p)[0]
    # the original box maps onto the central size - 2p pixels of the warp
    sx = size / (dil[2] - dil[0])
    sy = size / (dil[3] - dil[1])
    np.testing.assert_allclose((box[0, 0] - dil[0]) * sx, p, rtol=1e-5)
    np.testing.assert_allclose((dil[3] - box[0, 3]) * sy, p, rtol=1e-5)
    np.testing.assert_allclose(context_boxes(box, size, 0), box)


def test_regression_round_trip_and_thesis_formulas():
    rng = np.random.default_rng(1)
    P = np.array([[10, 10, 50, 30], [0, 0, 5, 80]], np.float32)
    G = np.array([[12, 8, 60, 33], [1, 5, 7, 70]], np.float32)
    t = regression_targets(P, G)
    # t_x = (G_x - P_x) / P_w, t_w = log(G_w / P_w)
    np.testing.assert_allclose(t[0, 0], ((12 + 60) / 2 - (10 + 50) / 2) / 40, rtol=1e-6)
    np.testing.assert_allclose(t[0, 3], np.log(25 / 20), rtol=1e-6)
    np.testing.assert_allclose(apply_deltas(P, t), G, atol=1e-4)
    d = rng.normal(size=(2, 3, 4))  # per-class deltas
    out = apply_deltas(P, d)
    assert out.shape == (2, 3, 4)
    np.testing.assert_allclose(out[:, 1], apply_deltas(P, d[:, 1]), atol=1e-5)


def test_clip_valid_unique():
    boxes = np.array([[-5, -5, 20, 20], [10, 10, 10, 30], [0, 0, 20, 20], [0, 0, 20, 20], [1, 1, np.nan, 5]])
    np.testing.assert_array_equal(clip(boxes[:1], 15, 12), [[0, 0, 15, 12]])
    assert keep_valid(boxes).tolist() == [0, 2, 3]
    assert keep_valid(boxes, min_size=21).tolist() == [0]
    assert unique_boxes(boxes[:4]).tolist() == [0, 1, 2]
