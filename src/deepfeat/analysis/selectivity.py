"""Grandmother cells: how precisely does a single filter pick out a class? (Agrawal, ch. 3.2 and 3.3)

Precision curves (section 3.2). For filter f and class c, the precision at threshold t is
P(class c | activity of f >= t): the fraction of the responses at or above t that belong to images of
class c. Thresholds follow the entropy analysis (:mod:`deepfeat.analysis.entropy`): T levels u in [0, 1]
per filter, ``linear`` (lo + u (hi - lo)) or ``quantile`` spacing. The selectivity of a filter for a
class is the area under its precision curve against u (trapezoidal rule), so a filter whose responses
above every threshold all come from class c has area 1 (when the levels span [0, 1]). The number of
responses above each threshold is kept, so curves can be drawn against it (the report's Figure 3-1).

What counts as a filter's activity on an image (``spatial``): ``"max"`` (default: the spatial maximum
of its map, one response per image), ``"mean"``, or ``"positions"`` (every position is a response with
the image's label, as in label entropy). Vector layers have one value per image either way.

Discrimination (section 3.3): the average precision of a single filter's activity used as the score
for class c against the rest, for every filter and class. ``method="step"`` is scikit-learn's
``average_precision_score`` (sum over thresholds of recall gained times precision); ``"area"`` and
``"voc07"`` are the VOC definitions of :mod:`deepfeat.metrics`.

Labels are integer classes (n,) or, for multi-label data such as VOC images, a 0/1 indicator matrix
(n, K): a response then counts for every class of its image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from deepfeat.analysis import _curves
from deepfeat.analysis._inputs import (
    as_maps,
    check_finite,
    check_labels,
    check_levels,
    filter_chunks,
)
from deepfeat.errors import ConfigError
from deepfeat.metrics import average_precision_per_class
from deepfeat.report import plots as _plot
from deepfeat.validation import check_choice

AP_METHODS = ("step", "area", "voc07")


@dataclass
class PrecisionCurves:
    """Precision curves of every filter for every class.

    ``levels`` (T,); ``thresholds`` (F, T); ``n_above`` (F, T) responses at or above each threshold;
    ``precision`` (F, T, K); ``area`` (F, K) area under each curve; ``classes`` the label values.
    """

    levels: np.ndarray
    thresholds: np.ndarray
    n_above: np.ndarray
    precision: np.ndarray
    area: np.ndarray
    classes: np.ndarray
    spatial: str = "max"
    spacing: str = "linear"

    @property
    def n_filters(self) -> int:
        return int(self.area.shape[0])

    def top_filters(self, top: int = 5) -> np.ndarray:
        """(K, top) indices of the filters with the largest area per class, best first."""
        return top_filters(self.area, top)

    def to_dict(self, curves: bool = False, top: int = 5) -> dict:
        """JSON-ready summary: areas, the top filters per class and their curves; with ``curves`` every
        filter's precision curves too."""
        best = self.top_filters(min(top, self.n_filters))
        out = {
            "spatial": self.spatial,
            "spacing": self.spacing,
            "classes": self.classes.tolist(),
            "levels": self.levels.tolist(),
            "area": self.area.tolist(),
            "top_filters": {
                str(c): [
                    {
                        "filter": int(f),
                        "area": float(self.area[f, k]),
                        "precision": self.precision[f, :, k].tolist(),
                        "n_above": self.n_above[f].tolist(),
                    }
                    for f in best[k]
                ]
                for k, c in enumerate(self.classes)
            },
        }
        if curves:
            out["thresholds"] = self.thresholds.tolist()
            out["n_above"] = self.n_above.tolist()
            out["precision"] = self.precision.tolist()
        return out


def precision_curves(
    activations: ArrayLike | torch.Tensor,
    labels: ArrayLike | torch.Tensor,
    *,
    layer_shape: Sequence[int] | None = None,
    spatial: str = "max",
    thresholds: int | Sequence[float] = 100,
    spacing: str = "linear",
    n_classes: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> PrecisionCurves:
    """P(class | activity >= t) of every filter and class over a range of thresholds, and its area.

    ``activations``: (n, C), (n, C, H, W), or flat rows with ``layer_shape``. ``labels``: (n,) classes or
    an (n, K) 0/1 indicator matrix. ``spatial``: ``"max"``, ``"mean"`` or ``"positions"``.
    ``thresholds``/``spacing``: as in :func:`deepfeat.analysis.entropy.filter_entropy`.
    """
    check_choice("spatial", spatial, _curves.SPATIAL)
    check_choice("spacing", spacing, _curves.SPACINGS)
    levels = check_levels(thresholds)
    maps = as_maps(activations, layer_shape)
    lab = check_labels(labels, maps.shape[0], n_classes=n_classes, allow_multilabel=True)
    check_finite(maps)
    per_image = maps.shape[2] if spatial == "positions" else 1
    codes, indicator = _curves.expand_labels(per_image, lab.codes, lab.indicator)
    levels_t = torch.from_numpy(levels)
    n_filters, t, k = maps.shape[1], levels.size, lab.n_classes
    thr_out = np.empty((n_filters, t))
    above_out = np.empty((n_filters, t), dtype=np.int64)
    prec_out = np.empty((n_filters, t, k))
    chunks = filter_chunks(n_filters, maps.shape[0] * per_image, chunk_size, (t + 1) * k)
    for f0, f1 in tqdm(chunks, desc="precision curves", unit="chunk", disable=not progress):
        values = _curves.responses(maps, f0, f1, spatial)
        thr = _curves.thresholds(values, levels_t, spacing)
        mass = _curves.mass_above(values, thr, k, codes, indicator)
        above = mass.sum(-1).round().long() if codes is not None else _curves.count_above(values, thr)
        thr_out[f0:f1] = thr.numpy()
        above_out[f0:f1] = above.numpy()
        prec_out[f0:f1] = (mass / above.unsqueeze(-1).to(torch.float64)).numpy()
    area = np.trapezoid(prec_out, levels, axis=1)
    return PrecisionCurves(levels, thr_out, above_out, prec_out, area, lab.classes, spatial, spacing)


def top_filters(scores: ArrayLike | PrecisionCurves, top: int = 5) -> np.ndarray:
    """(K, top) indices of the ``top`` highest-scoring filters per class from an (F, K) score matrix
    (precision areas, per-filter APs), best first; ties keep the lower filter index first."""
    arr = np.asarray(scores.area if isinstance(scores, PrecisionCurves) else scores, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ConfigError(f"scores must be an (n_filters, n_classes) matrix, got shape {arr.shape}")
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or not 1 <= top <= arr.shape[0]:
        raise ConfigError(
            f"top must be a whole number from 1 to the number of filters ({arr.shape[0]}), got {top!r}"
        )
    filled = np.where(np.isnan(arr), -np.inf, arr)
    order = np.argsort(-filled, axis=0, kind="stable")
    return order[:top].T.copy()


def plot_precision_curves(
    curves: PrecisionCurves | Mapping[str, PrecisionCurves],
    path: str | Path,
    *,
    top: int = 5,
    class_names: Sequence[str] | None = None,
    x: str = "examples",
    title: str = "",
) -> Path:
    """Figure 3-1: per class, the precision curves of its ``top`` most selective filters, one colour per
    network when several named results are given. ``x``: ``"examples"`` (responses above threshold, log
    scale) or ``"level"`` (relative threshold level)."""
    check_choice("x axis", x, ("examples", "level"))
    named = {"": curves} if isinstance(curves, PrecisionCurves) else dict(curves)
    if not named:
        raise ConfigError("curves is empty; give a PrecisionCurves or {network name: PrecisionCurves}")
    first = next(iter(named.values()))
    k = len(first.classes)
    for name, c in named.items():
        if len(c.classes) != k:
            raise ConfigError(f"curves {name!r} have {len(c.classes)} classes, the first have {k}")
    names = _class_names(class_names, first.classes)
    fig, axes = _plot.grid(k, ncols=5)
    net_colours = _plot.colours(len(named))
    for (net, c), colour in zip(named.items(), net_colours):
        best = c.top_filters(min(top, c.n_filters))
        for kk, ax in enumerate(axes):
            for rank, f in enumerate(best[kk]):
                xs = np.maximum(c.n_above[f], 1) if x == "examples" else c.levels
                label = f"{net + ' ' if net else ''}#{f}"
                ax.plot(
                    xs, c.precision[f, :, kk], color=colour, alpha=1.0 - 0.12 * rank, linewidth=1, label=label
                )
    for kk, ax in enumerate(axes):
        if x == "examples":
            ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_title(names[kk], fontsize=9)
        ax.set_xlabel("examples above threshold" if x == "examples" else "threshold level", fontsize=7)
        ax.set_ylabel("precision", fontsize=7)
        ax.legend(fontsize=5, ncol=2)
    return _plot.save(fig, path, title)


def _class_names(class_names: Sequence[str] | None, classes: np.ndarray) -> list[str]:
    if class_names is None:
        return [str(c) for c in classes]
    if len(class_names) != len(classes):
        raise ConfigError(f"class_names has {len(class_names)} names but there are {len(classes)} classes")
    return [str(c) for c in class_names]


def _step_ap(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """scikit-learn's average precision of one score vector (n,) for every column of ``positives`` (n, K):
    sum over distinct thresholds of (recall gained) x (precision there). NaN for a column with no
    positive."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    ends = np.append(np.flatnonzero(np.diff(s)), s.size - 1)  # last item of each run of tied scores
    tp = np.cumsum(positives[order], axis=0, dtype=np.float64)[ends]
    precision = tp / (ends + 1.0)[:, None]
    gained = np.diff(tp, axis=0, prepend=0.0)
    n_pos = positives.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, (gained * precision).sum(axis=0) / n_pos, np.nan)


def filter_average_precision(
    activations: ArrayLike | torch.Tensor,
    labels: ArrayLike | torch.Tensor,
    *,
    layer_shape: Sequence[int] | None = None,
    spatial: str = "max",
    method: str = "step",
    n_classes: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(F, K) average precision of each filter's activity (``spatial``: ``"max"`` or ``"mean"`` per image)
    as the score of each class against the rest. ``method``: ``"step"`` (scikit-learn), ``"area"`` or
    ``"voc07"`` (VOC, :mod:`deepfeat.metrics`)."""
    check_choice("spatial", spatial, ("max", "mean"))
    check_choice("AP method", method, AP_METHODS)
    maps = as_maps(activations, layer_shape)
    lab = check_labels(labels, maps.shape[0], n_classes=n_classes, allow_multilabel=True)
    check_finite(maps)
    n_filters, k = maps.shape[1], lab.n_classes
    out = np.empty((n_filters, k))
    chunks = filter_chunks(n_filters, maps.shape[0], None)
    bar = tqdm(total=n_filters, desc="filter AP", unit="filter", disable=not progress)
    for f0, f1 in chunks:
        values = _curves.responses(maps, f0, f1, spatial).numpy()
        for i, scores in enumerate(values):
            if method == "step":
                out[f0 + i] = _step_ap(scores, lab.indicator)
            else:
                out[f0 + i] = average_precision_per_class(
                    lab.indicator, np.repeat(scores[:, None], k, axis=1), method=method
                )
            bar.update(1)
    bar.close()
    return out
