"""Class SVMs with hard-negative mining (thesis section 3.1.3 and appendix 3.4.2), as the reference
implementation trains them.

- Features are scaled by one factor so that their average L2 norm is 20 (estimated on up to 200
  regions of each of up to 200 training images, seeded), and the same factor is used at test time.
- Positives of a class: its annotated (non-difficult) boxes. Negatives: regions whose IoU with every
  box of the class is below 0.3; regions in the grey zone are not used.
- Mining, one pass over the training images (``epochs``; the thesis finds one enough): the first
  image's negatives all enter each class's
  cache; after that, a negative enters when the current SVM scores it above -1.0001 (inside the
  margin) and it is not cached yet. A class's SVM is retrained when more than 2,000 negatives were
  added since its last training, and once more after the last image; after every training, cached
  negatives scoring below -1.2 are evicted.
- The SVM: L2-regularised hinge loss, C = 0.001, positives weighted 2, a constant feature of value 10
  standing for liblinear's bias term (``-s 3 -w1 2 -c 0.001 -B 10`` in the reference). It is fitted by
  :class:`deepfeat.probes.LinearProbe` (loss ``"hinge"``: liblinear's exact dual solver, as the
  reference; ``"squared_hinge"`` is the option for a smooth solver) on the cache, with positives
  repeated ``pos_weight`` times, which is the same objective as weighting their loss. Only the
  probe's public ``fit`` / ``decision_function`` are used; the weights are read back from
  ``decision_function`` on the unit vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from deepfeat.data.detection import DetectionDataset
from deepfeat.errors import ConfigError
from deepfeat.probes import LinearProbe
from deepfeat.tasks.detection.boxes import iou
from deepfeat.tasks.detection.extract import RegionFeatures, RegionSet
from deepfeat.validation import check_choice, check_float, check_int


@dataclass(frozen=True)
class SVMOptions:
    """Settings of the SVM stage (defaults: the reference implementation's)."""

    C: float = 0.001
    loss: str = "hinge"
    bias: float = 10.0
    pos_weight: int = 2
    neg_iou: float = 0.3
    hard_threshold: float = -1.0001
    evict_threshold: float = -1.2
    retrain_limit: int = 2000
    target_norm: float = 20.0
    norm_images: int = 200
    norm_regions: int = 200
    epochs: int = 1
    seed: int = 0

    def validate(self) -> None:
        check_float("svm C", self.C, 0, low_open=True)
        check_choice("svm loss", self.loss, ("hinge", "squared_hinge"))
        check_float("svm bias feature", self.bias, 0)
        check_int("pos_weight", self.pos_weight, 1)
        check_float("neg_iou", self.neg_iou, 0, 1)
        check_int("retrain_limit", self.retrain_limit, 1)
        check_int("mining epochs", self.epochs, 1)
        check_float("target_norm", self.target_norm, 0, low_open=True)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SVMResult:
    """Weights (D, K) and biases (K,) on scaled features, the scale, and the mining record."""

    weights: np.ndarray
    biases: np.ndarray
    scale: float
    trained: np.ndarray  # (K,) bool: classes with positives
    history: dict[str, list[dict]] = field(default_factory=dict)
    seconds: float = 0.0

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Scores (N, K) of raw (unscaled) features."""
        return (np.asarray(features, np.float32) * self.scale) @ self.weights + self.biases


@dataclass
class MiningState:
    """Where hard-negative mining stands before step ``step`` of its pass(es) over the images: the
    SVMs so far, each class's cache as row keys into the region features (its rows are those rows
    times the scale), negatives added since each class's last training, and the record."""

    step: int
    first: bool
    weights: np.ndarray
    biases: np.ndarray
    added: np.ndarray
    neg_keys: list[np.ndarray]
    history: dict[str, list[dict]]
    seconds: float = 0.0

    def copy(self) -> MiningState:
        """A copy sharing nothing the mining changes in place."""
        return MiningState(
            self.step,
            self.first,
            self.weights.copy(),
            self.biases.copy(),
            self.added.copy(),
            list(self.neg_keys),
            {c: list(h) for c, h in self.history.items()},
            self.seconds,
        )


def feature_scale(features: RegionFeatures, options: SVMOptions) -> float:
    """target_norm / mean L2 norm of a seeded sample of regions (reference: 200 x 200)."""
    rng = np.random.default_rng(options.seed)
    n_images = len(features.offsets) - 1
    chosen = rng.permutation(n_images)[: options.norm_images]
    norms = []
    for i in np.sort(chosen):
        lo, hi = features.offsets[i], features.offsets[i + 1]
        rows = np.arange(lo, hi)[features.valid[lo:hi]]
        if not len(rows):
            continue
        pick = np.sort(rng.permutation(rows)[: options.norm_regions])
        norms.append(np.linalg.norm(np.asarray(features.data[pick], np.float64), axis=1))
    mean = float(np.concatenate(norms).mean()) if norms else 0.0
    return options.target_norm / mean if mean > 0 else 1.0


def linear_weights(probe, dim: int, chunk: int = 1024) -> tuple[np.ndarray, float]:
    """(w (dim,), b) of a fitted single-output linear probe, read through ``decision_function``."""
    b = float(np.reshape(probe.decision_function(np.zeros((1, dim), np.float32)), (1, -1))[0, 0])
    w = np.empty(dim, dtype=np.float64)
    for start in range(0, dim, chunk):
        stop = min(dim, start + chunk)
        basis = np.zeros((stop - start, dim), np.float32)
        basis[np.arange(stop - start), np.arange(start, stop)] = 1.0
        w[start:stop] = np.reshape(probe.decision_function(basis), (stop - start, -1))[:, 0] - b
    return w, b


def fit_svm(pos: np.ndarray, neg: np.ndarray, options: SVMOptions) -> tuple[np.ndarray, float]:
    """One class's SVM on scaled positives and negatives; returns (w, b) for raw scaled features."""
    X = np.concatenate([np.repeat(pos, options.pos_weight, axis=0), neg]).astype(np.float32)
    X = np.concatenate([X, np.full((len(X), 1), options.bias, np.float32)], axis=1)
    y = np.zeros((len(X), 1), dtype=np.int64)
    y[: len(pos) * options.pos_weight] = 1
    probe = LinearProbe(loss=options.loss, C=options.C, random_state=options.seed).fit(X, y)
    w, b = linear_weights(probe, X.shape[1])
    return w[:-1].astype(np.float32), float(b + w[-1] * options.bias)


def objective(w, b, pos, neg, options: SVMOptions) -> dict:
    """The reference's record of one training: hinge losses and the regulariser."""
    zp, zn = pos @ w + b, neg @ w + b
    pos_loss = options.C * options.pos_weight * float(np.maximum(0, 1 - zp).sum())
    neg_loss = options.C * float(np.maximum(0, 1 + zn).sum())
    reg = 0.5 * float(w @ w) + 0.5 * (b / options.bias) ** 2 if options.bias else 0.5 * float(w @ w)
    return {"objective": pos_loss + neg_loss + reg, "pos_loss": pos_loss, "neg_loss": neg_loss, "reg": reg}


def class_overlaps(table, boxes: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, K): max IoU of every region with the image's annotated boxes of each class (0 if none)."""
    ov = np.zeros((len(boxes), n_classes), dtype=np.float32)
    if len(table.boxes) and len(boxes):
        all_ov = iou(boxes, table.boxes)
        for c in np.unique(table.labels):
            ov[:, c] = all_ov[:, table.labels == c].max(axis=1)
    return ov


def train_svms(
    dataset: DetectionDataset,
    regions: RegionSet,
    features: RegionFeatures,
    options: SVMOptions = SVMOptions(),
    *,
    progress: bool = True,
    resume: MiningState | None = None,
    on_state: Callable[[MiningState], None] | None = None,
    save_every: float = 60.0,
) -> SVMResult:
    """Train one SVM per class with hard-negative mining (see the module docstring).

    ``on_state`` receives the mining state every ``save_every`` seconds and, on an interrupt, the
    state before the interrupted step; mining given that state as ``resume`` continues exactly as an
    uninterrupted run would."""
    options.validate()
    start = time.perf_counter()
    K, D = len(dataset.classes), features.dim
    if D == 0:
        raise ConfigError("no region features to train on (every image failed?)")
    scale = feature_scale(features, options)
    pos: list[list[np.ndarray]] = [[] for _ in range(K)]
    for i, table in enumerate(dataset.images):
        g = regions.n_gt[i]
        if not g or not features.image_valid(i):
            continue
        X = features.image_rows(i)[:g] * scale
        for c in range(K):
            sel = (table.labels[:g] == c) & ~table.difficult[:g]
            if sel.any():
                pos[c].append(X[sel])
    pos_x = [np.concatenate(p) if p else np.zeros((0, D), np.float32) for p in pos]
    trained = np.array([len(p) > 0 for p in pos_x])
    valid = [i for i in range(len(dataset)) if features.image_valid(i)]
    order = [(epoch, i) for epoch in range(options.epochs) for i in valid]
    if resume is None:
        state = MiningState(
            0,
            True,
            np.zeros((D, K), np.float32),
            np.zeros(K, np.float32),
            np.zeros(K, dtype=np.int64),
            [np.zeros(0, np.int64) for _ in range(K)],
            {c: [] for c in dataset.classes},
        )
    else:  # a copy: the caller's state stays as it was, and can be resumed again
        state = resume.copy()
        if state.weights.shape != (D, K) or len(state.neg_keys) != K or state.step > len(order):
            raise ConfigError("the saved mining state does not fit these region features and classes")
    W, b, added, neg_keys, history = state.weights, state.biases, state.added, state.neg_keys, state.history
    neg_x = [np.asarray(features.data[k], dtype=np.float32) * scale for k in neg_keys]
    first, before = state.first, state.seconds
    bar = tqdm(
        total=len(order),
        initial=state.step,
        desc="svm mining",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    )
    saved = time.perf_counter()

    def snapshot(step: int) -> MiningState:
        now = MiningState(step, first, W, b, added, neg_keys, history, before + time.perf_counter() - start)
        return now.copy()

    at_start = snapshot(state.step) if on_state is not None else None
    try:
        for step in range(state.step, len(order)):
            epoch, i = order[step]
            X = features.image_rows(i) * scale
            ov = class_overlaps(dataset.images[i], regions.boxes[i], K)
            z = X @ W + b
            base = features.offsets[i]
            last = step == len(order) - 1
            for c in np.flatnonzero(trained):
                cand = ov[:, c] < options.neg_iou
                if not first:
                    cand &= z[:, c] > options.hard_threshold
                keys = base + np.flatnonzero(cand)
                keys = keys[~np.isin(keys, neg_keys[c])]
                if len(keys):
                    neg_x[c] = np.concatenate([neg_x[c], X[keys - base]])
                    neg_keys[c] = np.concatenate([neg_keys[c], keys])
                    added[c] += len(keys)
                if (first or added[c] > options.retrain_limit or last) and len(neg_x[c]):
                    w, bias = fit_svm(pos_x[c], neg_x[c], options)
                    W[:, c], b[c] = w, bias
                    added[c] = 0
                    record = objective(w, bias, pos_x[c], neg_x[c], options)
                    zn = neg_x[c] @ w + bias
                    keep = zn >= options.evict_threshold
                    record.update(
                        epoch=epoch + 1,
                        image=step - epoch * len(valid) + 1,
                        n_pos=len(pos_x[c]),
                        n_neg=len(neg_x[c]),
                        evicted=int((~keep).sum()),
                    )
                    history[dataset.classes[c]].append(record)
                    neg_x[c], neg_keys[c] = neg_x[c][keep], neg_keys[c][keep]
            first = False
            bar.update(1)
            if on_state is not None:
                at_start = snapshot(step + 1)
                if time.perf_counter() - saved >= save_every and not last:
                    on_state(at_start)
                    saved = time.perf_counter()
    except KeyboardInterrupt:
        if on_state is not None and at_start is not None:
            on_state(at_start)  # the state before the interrupted step: resuming repeats it
        raise
    finally:
        bar.close()
    b[~trained] = -1e6  # a class never seen in training never fires
    return SVMResult(W, b, scale, trained, history, before + time.perf_counter() - start)
