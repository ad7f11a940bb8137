"""How class-specific are the filters of a layer? Entropy curves, AuE and MCAuE (Agrawal, ch. 2).

A filter's responses over a labelled image set are thresholded at a range of levels; at each level the
class distribution of what lies at or above the threshold has an entropy. Low entropy at high
thresholds means the filter's strong responses come from few classes.

Methods (``method``), for a layer with maps of H x W positions (vectors: H = W = 1):

``label``
    every position of every image is one response carrying the image's label (n*H*W responses per
    filter); the distribution above a threshold is the normalised count of labels.
``weighted``
    the same responses, but each label is counted with its response as weight (the histogram is the
    sum of the scores per class). Needs non-negative responses (ReLU / pooling outputs). A filter that
    is zero everywhere carries no weight at all; its curve is the class-prior entropy (as ``label``).
``spmax``
    one response per image, the spatial maximum of its map, with the image's label; then as ``label``.
    For vector layers all three of ``label`` and ``spmax`` coincide.

Thresholds. The report thresholds the scores over their range but does not fix the grid; here every
filter gets T thresholds at relative levels u in [0, 1] (``thresholds``: T evenly spaced levels, or the
levels themselves): ``spacing="linear"`` puts the threshold at lo + u (hi - lo) between the filter's
lowest and highest response, ``"quantile"`` at the response of rank floor(u (M - 1)) among its M sorted
responses. Level 0 keeps every response, level 1 only the highest, so each set is non-empty. The entropy
curve is entropy against u; the area under it (AuE, trapezoidal rule over the levels) is the mean
entropy over thresholds when the levels span [0, 1]. Natural logarithms unless ``base`` is given, so the
entropy of C equally frequent classes is log C.

MCAuE (section 2.2.1): sort the AuE of the N filters ascending (most selective first), take running
means; the value at fraction f of the filters is the mean AuE of the ceil(f N) most selective ones. The
report compares layers at 30 points f = k/30, k = 1..30, and tabulates fine-tuning (Table 2.1) as the
percent decrease 100 (MCAuE_before - MCAuE_after) / MCAuE_before at f = 0.1, 0.25, 0.5 and 1.0.
"""

from __future__ import annotations

import math
import numbers
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
    check_fractions,
    check_labels,
    check_levels,
    filter_chunks,
)
from deepfeat.errors import ConfigError, DataError
from deepfeat.report import plots as _plot
from deepfeat.validation import check_choice

ENTROPY_METHODS = ("label", "weighted", "spmax")
MCAUE_POINTS = 30
TABLE_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
_SPATIAL = {"label": "positions", "weighted": "positions", "spmax": "max"}


@dataclass
class EntropyCurves:
    """Entropy curves of every filter of one layer by one method.

    ``levels`` (T,) relative threshold levels; ``thresholds`` (F, T) the response value of each level per
    filter; ``entropy`` (F, T); ``aue`` (F,) the area under each curve; ``classes`` the label values.
    """

    method: str
    levels: np.ndarray
    thresholds: np.ndarray
    entropy: np.ndarray
    aue: np.ndarray
    classes: np.ndarray
    spacing: str = "linear"
    base: float | None = None
    n_responses: int = 0

    @property
    def n_filters(self) -> int:
        return int(self.aue.shape[0])

    @property
    def max_entropy(self) -> float:
        """Entropy of a uniform distribution over the classes (the most a curve can reach)."""
        return _log(len(self.classes), self.base)

    def mcaue(self, fractions: Sequence[float] | None = None) -> np.ndarray:
        """MCAuE at ``fractions`` of the filters (default: the report's 30 points k/30)."""
        return mcaue(self.aue, fractions)

    def to_dict(self, curves: bool = True) -> dict:
        """JSON-ready summary; with ``curves`` the full (F, T) thresholds and entropies too."""
        out = {
            "method": self.method,
            "spacing": self.spacing,
            "base": self.base,
            "classes": self.classes.tolist(),
            "n_filters": self.n_filters,
            "n_responses_per_filter": self.n_responses,
            "max_entropy": self.max_entropy,
            "levels": self.levels.tolist(),
            "aue": self.aue.tolist(),
            "mcaue": {"fractions": mcaue_fractions().tolist(), "values": self.mcaue().tolist()},
        }
        if curves:
            out["thresholds"] = self.thresholds.tolist()
            out["entropy"] = self.entropy.tolist()
        return out


def _log(x: float, base: float | None) -> float:
    return math.log(x) / (1.0 if base is None else math.log(base))


def _check_base(base: float | None) -> None:
    real = isinstance(base, numbers.Real) and not isinstance(base, bool)
    if base is not None and not (real and math.isfinite(base) and base > 0 and base != 1):
        raise ConfigError(
            f"base must be a positive number other than 1 (e.g. 2 for bits) or None, got {base!r}"
        )


def _entropy(mass: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the class distributions along the last axis; NaN where the mass is zero."""
    total = mass.sum(dim=-1, keepdim=True)
    p = mass / total
    return -torch.special.xlogy(p, p).sum(dim=-1)


def filter_entropy(
    activations: ArrayLike | torch.Tensor,
    labels: ArrayLike | torch.Tensor,
    *,
    method: str = "label",
    layer_shape: Sequence[int] | None = None,
    thresholds: int | Sequence[float] = 100,
    spacing: str = "linear",
    base: float | None = None,
    n_classes: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> EntropyCurves:
    """Entropy curve and AuE of every filter of a layer (see the module docstring for the definitions).

    ``activations``: (n, C) vectors, (n, C, H, W) maps, or flat rows (n, C*H*W, channel-major) with
    ``layer_shape`` = (C, H, W). ``labels``: (n,) integer class labels. ``method``: ``"label"``,
    ``"weighted"`` or ``"spmax"``. ``thresholds``: the number of evenly spaced levels in [0, 1] or the
    levels. ``spacing``: ``"linear"`` or ``"quantile"``. ``n_classes``: fix the classes to 0..n_classes-1
    (all must occur). ``chunk_size``: at most this many filters processed together (they are always
    chunked so that a chunk holds about 8M responses at most).
    """
    check_choice("entropy method", method, ENTROPY_METHODS)
    check_choice("spacing", spacing, _curves.SPACINGS)
    _check_base(base)
    levels = check_levels(thresholds)
    maps = as_maps(activations, layer_shape)
    lab = check_labels(labels, maps.shape[0], n_classes=n_classes)
    check_finite(maps, nonnegative=method == "weighted")

    spatial = _SPATIAL[method]
    per_image = maps.shape[2] if spatial == "positions" else 1
    codes, _ = _curves.expand_labels(per_image, lab.codes, lab.indicator)
    k = lab.n_classes
    prior = _entropy(torch.from_numpy(np.bincount(lab.codes, minlength=k).astype(np.float64))).item()
    levels_t = torch.from_numpy(levels)
    n_filters, t = maps.shape[1], levels.size
    thr_out = np.empty((n_filters, t))
    ent_out = np.empty((n_filters, t))
    chunks = filter_chunks(n_filters, maps.shape[0] * per_image, chunk_size, (t + 1) * k)
    for f0, f1 in tqdm(chunks, desc=f"entropy ({method})", unit="chunk", disable=not progress):
        values = _curves.responses(maps, f0, f1, spatial)
        thr = _curves.thresholds(values, levels_t, spacing)
        mass = _curves.mass_above(values, thr, k, codes, None, weighted=method == "weighted")
        ent = _entropy(mass)
        if method == "weighted":  # zero everywhere: no weight at any threshold, fall back to the prior
            ent[torch.isnan(ent)] = prior
        thr_out[f0:f1] = thr.numpy()
        ent_out[f0:f1] = ent.numpy()
    if base is not None:
        ent_out /= math.log(base)
    aue = np.trapezoid(ent_out, levels, axis=1)
    return EntropyCurves(
        method=method,
        levels=levels,
        thresholds=thr_out,
        entropy=ent_out,
        aue=aue,
        classes=lab.classes,
        spacing=spacing,
        base=base,
        n_responses=maps.shape[0] * per_image,
    )


def layer_entropy(
    activations: ArrayLike | torch.Tensor,
    labels: ArrayLike | torch.Tensor,
    *,
    methods: Sequence[str] = ENTROPY_METHODS,
    **kwargs,
) -> dict[str, EntropyCurves]:
    """:func:`filter_entropy` for several methods of one layer (keyword arguments passed on)."""
    if isinstance(methods, str) or len(methods) == 0:
        raise ConfigError(f"methods must be a non-empty list drawn from {', '.join(ENTROPY_METHODS)}")
    for m in methods:
        check_choice("entropy method", m, ENTROPY_METHODS)
    return {m: filter_entropy(activations, labels, method=m, **kwargs) for m in methods}


# -- MCAuE and the fine-tuning comparison ----------------------------------------------------------------


def _aue_array(aue, name: str = "aue") -> np.ndarray:
    arr = np.asarray(aue.aue if isinstance(aue, EntropyCurves) else aue, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(
            f"{name} must be a non-empty vector of AuE values (one per filter), got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise DataError(f"{name} holds NaN or infinite values")
    return arr


def mcaue_fractions(n_points: int = MCAUE_POINTS) -> np.ndarray:
    """The fractions k / n_points, k = 1..n_points, at which the report compares MCAuE."""
    if isinstance(n_points, bool) or not isinstance(n_points, int | np.integer) or n_points < 1:
        raise ConfigError(f"n_points must be a positive whole number, got {n_points!r}")
    return np.arange(1, n_points + 1) / n_points


def n_top_filters(fraction: float, n_filters: int) -> int:
    """Number of filters in the top ``fraction``: ceil(fraction * n_filters), at least 1 (rounding noise
    such as 0.1 * 30 = 3.0000000000000004 does not add a filter)."""
    return max(1, math.ceil(round(fraction * n_filters, 9)))


def mcaue(aue: ArrayLike | EntropyCurves, fractions: Sequence[float] | None = None) -> np.ndarray:
    """Mean cumulative AuE: mean AuE of the ceil(f N) most selective (lowest-AuE) filters at each fraction
    f in ``fractions`` (default: the 30 points k/30)."""
    arr = _aue_array(aue)
    fr = mcaue_fractions() if fractions is None else check_fractions(fractions)
    running = np.cumsum(np.sort(arr)) / np.arange(1, arr.size + 1)
    return np.array([running[n_top_filters(f, arr.size) - 1] for f in fr])


def percent_decrease(
    before: ArrayLike | EntropyCurves,
    after: ArrayLike | EntropyCurves,
    fractions: Sequence[float] = TABLE_FRACTIONS,
) -> np.ndarray:
    """100 (MCAuE_before - MCAuE_after) / MCAuE_before at each fraction of filters (Table 2.1); positive
    when ``after`` (e.g. the fine-tuned network) is more selective. NaN where MCAuE_before is 0."""
    b = mcaue(_aue_array(before, "before"), fractions)
    a = mcaue(_aue_array(after, "after"), fractions)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, 100.0 * (b - a) / np.where(b > 0, b, 1.0), np.nan)


def percent_decrease_table(
    before: Mapping[str, Mapping[str, ArrayLike | EntropyCurves]],
    after: Mapping[str, Mapping[str, ArrayLike | EntropyCurves]],
    fractions: Sequence[float] = TABLE_FRACTIONS,
) -> dict[str, dict[str, dict[str, float]]]:
    """Table 2.1: ``{layer: {method: {fraction: percent decrease}}}`` from ``{layer: {method: AuE}}`` of
    two networks (fraction keys as strings, e.g. ``"0.25"``)."""
    fr = check_fractions(fractions)
    missing = [layer for layer in before if layer not in after]
    if missing:
        raise ConfigError(f"layers {missing} are in 'before' but not in 'after'; valid: {list(after)}")
    table: dict[str, dict[str, dict[str, float]]] = {}
    for layer, methods in before.items():
        table[layer] = {}
        for method, aue in methods.items():
            if method not in after[layer]:
                raise ConfigError(
                    f"method {method!r} of layer {layer!r} is missing from 'after'; "
                    f"valid: {list(after[layer])}"
                )
            values = percent_decrease(aue, after[layer][method], fr)
            table[layer][method] = {f"{f:g}": float(v) for f, v in zip(fr, values)}
    return table


# -- plots ---------------------------------------------------------------------------------------------


def plot_aue_histograms(
    aue: Mapping[str, Mapping[str, ArrayLike | EntropyCurves]],
    path: str | Path,
    *,
    bins: int = 30,
    title: str = "",
) -> Path:
    """Figure 2-1: one panel per layer (outer key), the AuE distribution of each network (inner key)
    overlaid; x: AuE, y: number of filters."""
    if not aue:
        raise ConfigError("aue is empty; give {layer: {network: AuE values}}")
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ConfigError(f"bins must be a positive whole number, got {bins!r}")
    fig, axes = _plot.grid(len(aue))
    for ax, (layer, series) in zip(axes, aue.items()):
        arrays = {name: _aue_array(v, f"aue[{layer!r}][{name!r}]") for name, v in series.items()}
        values = np.concatenate(list(arrays.values()))
        edges = np.histogram_bin_edges(values, bins=bins)
        for (name, arr), colour in zip(arrays.items(), _plot.colours(len(arrays))):
            ax.hist(arr, bins=edges, histtype="step", linewidth=1.5, color=colour, label=name)
        ax.set_title(str(layer), fontsize=9)
        ax.set_xlabel("AuE")
        ax.set_ylabel("filters")
        ax.legend(fontsize=7)
    return _plot.save(fig, path, title)


def plot_mcaue_curves(
    aue: Mapping[str, Mapping[str, ArrayLike | EntropyCurves]],
    path: str | Path,
    *,
    n_points: int = MCAUE_POINTS,
    title: str = "",
) -> Path:
    """Figure 2-2: MCAuE against the fraction of filters, one colour per layer (outer key), one line style
    per network (inner key)."""
    if not aue:
        raise ConfigError("aue is empty; give {layer: {network: AuE values}}")
    fr = mcaue_fractions(n_points)
    networks = list(dict.fromkeys(name for series in aue.values() for name in series))
    style = {name: _plot.LINESTYLES[i % len(_plot.LINESTYLES)] for i, name in enumerate(networks)}
    fig, ax = _plot.figure((6.5, 4.5))
    for (layer, series), colour in zip(aue.items(), _plot.colours(len(aue))):
        for name, values in series.items():
            arr = _aue_array(values, f"aue[{layer!r}][{name!r}]")
            ax.plot(fr, mcaue(arr, fr), linestyle=style[name], color=colour, label=f"{layer} ({name})")
    ax.set_xlabel("fraction of filters (most selective first)")
    ax.set_ylabel("MCAuE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _plot.save(fig, path, title)


# -- plain-loop reference (tests and benchmark) ----------------------------------------------------------


def _loop_entropy_curves(
    maps: np.ndarray,
    codes: np.ndarray,
    n_classes: int,
    method: str,
    levels: np.ndarray,
    spacing: str = "linear",
    filters: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entropy curves by explicit loops over filters, thresholds and classes: (thresholds, entropy, aue)
    in nats, for the filters listed (default all). ``maps`` is (n, C, S), ``codes`` 0..n_classes-1."""
    filters = range(maps.shape[1]) if filters is None else filters
    thr_all, ent_all = [], []
    for f in filters:
        fmap = np.asarray(maps[:, f, :], dtype=np.float64)
        if method == "spmax":
            fmap = fmap.max(axis=1, keepdims=True)
        scores = fmap.reshape(-1)
        labs = np.repeat(codes, fmap.shape[1])
        if spacing == "linear":
            lo, hi = scores.min(), scores.max()
            thr = [lo + u * (hi - lo) for u in levels]
        else:
            ordered = np.sort(scores)
            thr = [ordered[int(np.floor(u * (scores.size - 1)))] for u in levels]
        curve = []
        for t in thr:
            keep = scores >= t
            hist = np.zeros(n_classes)
            for c in range(n_classes):
                sel = keep & (labs == c)
                hist[c] = scores[sel].sum() if method == "weighted" else sel.sum()
            if hist.sum() == 0:  # weighted, filter zero everywhere: class prior
                hist = np.bincount(labs, minlength=n_classes).astype(np.float64)
            p = hist / hist.sum()
            curve.append(-sum(q * math.log(q) for q in p if q > 0))
        thr_all.append(thr)
        ent_all.append(curve)
    thr_arr, ent_arr = np.array(thr_all), np.array(ent_all)
    return thr_arr, ent_arr, np.trapezoid(ent_arr, levels, axis=1)
