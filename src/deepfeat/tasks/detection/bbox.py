"""Bounding-box regression (thesis appendix 3.4.3): per class, a linear map from a region's pool5-like
features to the (d_x, d_y, d_w, d_h) that move it onto its ground-truth box, fitted by ridge
regression (lambda = 1000) on the regions whose IoU with a box of that class exceeds 0.6, each paired
with the box of that class it overlaps most.

As in the reference implementation, the features are scaled to an average norm of 20, a constant
feature 1 is appended (the bias, regularised with the rest), and the targets are centred (their mean
is added back at prediction). The reference also whitens the targets; for ridge regression that is
an exact no-op once undone (the solution is equivariant under any invertible linear map of the
targets), so it is left out. The normal equations are solved in float64 by Cholesky factorisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from deepfeat.data.detection import DetectionDataset
from deepfeat.tasks.detection.boxes import apply_deltas, iou, regression_targets
from deepfeat.tasks.detection.extract import RegionFeatures, RegionSet
from deepfeat.validation import check_float


@dataclass(frozen=True)
class BBoxOptions:
    """``lam``: ridge penalty; ``min_iou``: a region trains a class's regressor when its IoU with a
    box of the class is above this; ``target_norm``: average feature norm after scaling."""

    lam: float = 1000.0
    min_iou: float = 0.6
    target_norm: float = 20.0

    def validate(self) -> None:
        check_float("bbox lambda", self.lam, 0)
        check_float("bbox min_iou", self.min_iou, 0, 1)
        check_float("bbox target_norm", self.target_norm, 0, low_open=True)

    def to_dict(self) -> dict:
        return asdict(self)


def ridge(X: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    """argmin_W ||X W - Y||^2 + lam ||W||^2, by Cholesky factorisation of X'X + lam I (float64);
    with fewer samples than features (and lam > 0) the same solution from the dual system
    W = X' (X X' + lam I)^-1 Y, which is smaller."""
    Xt = torch.from_numpy(np.asarray(X, np.float64))
    Yt = torch.from_numpy(np.asarray(Y, np.float64))
    dual = lam > 0 and Xt.shape[0] < Xt.shape[1]
    A = Xt @ Xt.T if dual else Xt.T @ Xt
    A = A + lam * torch.eye(A.shape[0], dtype=torch.float64)
    rhs = Yt if dual else Xt.T @ Yt
    L, info = torch.linalg.cholesky_ex(A)
    # singular (lam = 0 with too few samples): least squares instead
    sol = torch.linalg.lstsq(A, rhs).solution if int(info) != 0 else torch.cholesky_solve(rhs, L)
    return (Xt.T @ sol if dual else sol).numpy()


@dataclass
class BoxRegressor:
    """Per-class regressors: ``weights`` (K, D + 1, 4) (last row: bias), ``means`` (K, 4) target
    means, ``trained`` (K,) and ``scale`` (feature scale); ``counts`` training pairs per class."""

    weights: np.ndarray
    means: np.ndarray
    trained: np.ndarray
    scale: float
    counts: np.ndarray

    def deltas(self, features: np.ndarray) -> np.ndarray:
        """Predicted (d_x, d_y, d_w, d_h) of every region for every class: (N, K, 4); zero for
        classes without a regressor."""
        X = np.asarray(features, np.float64) * self.scale
        X = np.concatenate([X, np.ones((len(X), 1))], axis=1)
        out = np.einsum("nd,kdt->nkt", X, self.weights) + self.means[None]
        out[:, ~self.trained] = 0.0
        return out

    def predict(self, boxes: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Regressed boxes (N, K, 4) of ``boxes`` (N, 4) for every class."""
        return apply_deltas(boxes, self.deltas(features))


def train_regressors(
    dataset: DetectionDataset,
    regions: RegionSet,
    features: RegionFeatures,
    options: BBoxOptions = BBoxOptions(),
    *,
    scale: float | None = None,
    progress: bool = True,
) -> BoxRegressor:
    """Fit one regressor per class (see the module docstring); ``scale`` defaults to target_norm
    over the mean norm of the training pairs' features."""
    options.validate()
    K, D = len(dataset.classes), features.dim
    X_parts: list[list[np.ndarray]] = [[] for _ in range(K)]
    T_parts: list[list[np.ndarray]] = [[] for _ in range(K)]
    for i, table in enumerate(tqdm(dataset.images, desc="bbox pairs", unit="img", disable=not progress)):
        if not len(table.boxes) or not features.image_valid(i):
            continue
        boxes = regions.boxes[i]
        ov = iou(boxes, table.boxes)
        X = None
        for c in np.unique(table.labels):
            cols = np.flatnonzero(table.labels == c)
            best = ov[:, cols].argmax(axis=1)
            sel = np.flatnonzero(ov[np.arange(len(boxes)), cols[best]] > options.min_iou)
            if not len(sel):
                continue
            X = features.image_rows(i) if X is None else X
            X_parts[c].append(X[sel])
            T_parts[c].append(regression_targets(boxes[sel], table.boxes[cols[best[sel]]]))
    if scale is None:
        allx = [x for parts in X_parts for x in parts]
        mean = float(np.mean(np.linalg.norm(np.concatenate(allx), axis=1))) if allx else 0.0
        scale = options.target_norm / mean if mean > 0 else 1.0
    weights = np.zeros((K, D + 1, 4))
    means = np.zeros((K, 4))
    counts = np.array([sum(len(x) for x in parts) for parts in X_parts])
    for c in range(K):
        if not counts[c]:
            continue
        X = np.concatenate(X_parts[c]).astype(np.float64) * scale
        X = np.concatenate([X, np.ones((len(X), 1))], axis=1)
        T = np.concatenate(T_parts[c])
        means[c] = T.mean(axis=0)
        weights[c] = ridge(X, T - means[c], options.lam)
    return BoxRegressor(weights, means, counts > 0, float(scale), counts)
