"""How many filters does each class need? (Agrawal, section 3.4, Table 3.1, Figures 3-3 to 3-5.)

1. A one-vs-rest linear SVM per class is trained on spatial-max features (one value per filter) of the
   training images, using every filter.
2. Each class ranks the filters by the magnitude of its weight vector, |w_f|, largest first (Fig. 3-3).
3. For every k in a list of subset sizes, a new SVM per class is trained on the k top-ranked filters of
   that class only and scored by average precision on the test images (Fig. 3-4).
4. Per class, the number of filters needed for a fraction of the full performance is the smallest k in
   the list whose AP reaches that fraction of the AP with all filters (Table 3.1: 50% and 90%).
5. Classes share few filters: entry (i, j) of the overlap matrix is the fraction of class i's top-50
   filters that are also among class j's top 50 (Fig. 3-5).

The report's subset sizes for the 256 pool-5 filters are 1, 2, 3, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50,
80, 100, 128, 256; by default the sizes below the layer's filter count are kept and the count itself
(all filters) ends the list. The SVM with all filters is the one of step 1, so its AP is the full AP.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.exceptions import ConvergenceWarning
from tqdm.auto import tqdm

from deepfeat.analysis._inputs import (
    Labels,
    as_maps,
    check_finite,
    check_fractions,
    check_labels,
)
from deepfeat.analysis.selectivity import _class_names
from deepfeat.errors import ConfigError, DataError
from deepfeat.metrics import AP_METHODS, average_precision
from deepfeat.probes.linear import LinearProbe
from deepfeat.report import plots as _plot
from deepfeat.validation import check_choice

log = logging.getLogger(__name__)

#: Subset sizes of the report (256 = all pool-5 filters is added as "all filters" for any layer).
REPORT_KS = (1, 2, 3, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 80, 100, 128)
SVM_LOSSES = ("squared_hinge", "hinge")


@dataclass
class FiltersNeeded:
    """Result of :func:`filters_needed`.

    ``weights`` (K, F) SVM weights with all filters; ``ranking`` (K, F) filters per class by |weight|;
    ``ks`` subset sizes; ``ap`` (K, len(ks)) test AP with the top k filters; ``full_ap`` (K,);
    ``needed`` {fraction: [smallest k per class, None where never reached or AP undefined]};
    ``overlap`` (K, K) shared fraction of the top ``overlap_top`` filters.
    """

    classes: np.ndarray
    ks: list[int]
    weights: np.ndarray
    ranking: np.ndarray
    ap: np.ndarray
    full_ap: np.ndarray
    fractions: tuple[float, ...]
    needed: dict[float, list[int | None]]
    overlap: np.ndarray
    overlap_top: int
    params: dict = field(default_factory=dict)

    def table(self) -> list[dict]:
        """Table 3.1 rows: per class its full AP and the filters needed per fraction."""
        return [
            {
                "class": c.item() if hasattr(c, "item") else c,
                "full_ap": None if np.isnan(self.full_ap[i]) else float(self.full_ap[i]),
                **{f"k_{f:g}": self.needed[f][i] for f in self.fractions},
            }
            for i, c in enumerate(self.classes)
        ]

    def to_dict(self) -> dict:
        return {
            "classes": self.classes.tolist(),
            "ks": list(self.ks),
            "params": self.params,
            "full_ap": self.full_ap.tolist(),
            "ap": self.ap.tolist(),
            "needed": {f"{f:g}": v for f, v in self.needed.items()},
            "table": self.table(),
            "ranking": self.ranking.tolist(),
            "weights": self.weights.tolist(),
            "overlap_top": self.overlap_top,
            "overlap": self.overlap.tolist(),
        }


def spatial_max(
    activations: ArrayLike | torch.Tensor, layer_shape: Sequence[int] | None = None, name: str = "features"
) -> np.ndarray:
    """(n, C) spatial-max features of (n, C) vectors, (n, C, H, W) maps or flat rows with ``layer_shape``."""
    maps = as_maps(activations, layer_shape, name)
    check_finite(maps, name)
    return np.ascontiguousarray(maps.max(axis=2), dtype=np.float32)


def rank_filters(weights: ArrayLike) -> np.ndarray:
    """(K, F) filter indices per class by decreasing |weight| (ties: lower index first)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.size == 0:
        raise ConfigError(f"weights must be a (n_classes, n_filters) matrix, got shape {w.shape}")
    return np.argsort(-np.abs(w), axis=1, kind="stable")


def filter_overlap(ranking: ArrayLike, top: int = 50) -> np.ndarray:
    """(K, K) matrix whose (i, j) entry is the fraction of class i's ``top`` first-ranked filters that are
    also among class j's (Figure 3-5)."""
    r = np.asarray(ranking)
    if r.ndim != 2 or r.size == 0:
        raise ConfigError(f"ranking must be a (n_classes, n_filters) matrix, got shape {r.shape}")
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or not 1 <= top <= r.shape[1]:
        raise ConfigError(
            f"top must be a whole number from 1 to the number of filters ({r.shape[1]}), got {top!r}"
        )
    member = np.zeros((r.shape[0], int(r.max()) + 1), dtype=np.float64)
    np.put_along_axis(member, r[:, :top], 1.0, axis=1)
    return member @ member.T / top


def _check_ks(ks: Sequence[int] | None, n_filters: int) -> list[int]:
    if ks is None:
        return [k for k in REPORT_KS if k < n_filters] + [n_filters]
    try:
        arr = np.asarray(ks)
    except (TypeError, ValueError):
        arr = np.asarray([], dtype=float)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu" or arr.min() < 1 or arr.max() > n_filters:
        raise ConfigError(
            f"ks must be whole numbers from 1 to the number of filters ({n_filters}), got {ks!r}"
        )
    return sorted({int(k) for k in arr} | {n_filters})


def _test_indicator(y_test, n_test: int, train: Labels) -> np.ndarray:
    arr = np.asarray(y_test.detach().cpu() if isinstance(y_test, torch.Tensor) else y_test)
    if train.multilabel:
        if arr.ndim != 2 or arr.shape != (n_test, train.n_classes) or not np.isin(arr, (0, 1)).all():
            raise DataError(
                f"y_test must be a 0/1 indicator matrix of shape ({n_test}, {train.n_classes}) like y_train"
            )
        return arr.astype(bool)
    if arr.ndim != 1 or arr.shape[0] != n_test:
        raise DataError(
            f"y_test must be a vector of {n_test} class labels like y_train, got shape {arr.shape}"
        )
    unknown = np.setdiff1d(np.unique(arr), train.classes)
    if unknown.size:
        raise DataError(
            f"y_test holds labels {unknown[:10].tolist()} absent from y_train; "
            f"valid: {train.classes.tolist()}"
        )
    return arr[:, None] == train.classes[None, :]


def filters_needed(
    X_train: ArrayLike | torch.Tensor,
    y_train: ArrayLike | torch.Tensor,
    X_test: ArrayLike | torch.Tensor,
    y_test: ArrayLike | torch.Tensor,
    *,
    layer_shape: Sequence[int] | None = None,
    ks: Sequence[int] | None = None,
    fractions: Sequence[float] = (0.5, 0.9),
    loss: str = "squared_hinge",
    C: float | str = 1.0,
    probe_params: Mapping | None = None,
    ap_method: str = "area",
    overlap_top: int = 50,
    random_state: int | None = 0,
    progress: bool = False,
) -> FiltersNeeded:
    """Filters needed per class (see the module docstring).

    Features are (n, C) spatial-max vectors, or maps ((n, C, H, W), or flat rows with ``layer_shape``)
    reduced by their spatial max. Labels are classes (n,) or 0/1 indicator matrices (n, K). ``loss``,
    ``C`` and ``probe_params`` configure :class:`~deepfeat.probes.linear.LinearProbe` (``C="cv"`` picks C
    by cross-validation for every fit). ``ap_method``: ``"area"`` or ``"voc07"``. ``overlap_top`` is capped
    at the number of filters.
    """
    check_choice("loss (linear SVM)", loss, SVM_LOSSES)
    check_choice("AP method", ap_method, AP_METHODS)
    fr = tuple(float(f) for f in check_fractions(fractions))
    Xtr = spatial_max(X_train, layer_shape, "X_train")
    Xte = spatial_max(X_test, layer_shape, "X_test")
    if Xtr.shape[1] != Xte.shape[1]:
        raise DataError(f"X_train has {Xtr.shape[1]} filters but X_test has {Xte.shape[1]}")
    train = check_labels(y_train, Xtr.shape[0], name="y_train", allow_multilabel=True)
    test_ind = _test_indicator(y_test, Xte.shape[0], train)
    n_filters, k_classes = Xtr.shape[1], train.n_classes
    kss = _check_ks(ks, n_filters)
    if isinstance(overlap_top, bool) or not isinstance(overlap_top, int | np.integer) or overlap_top < 1:
        raise ConfigError(f"overlap_top must be a positive whole number, got {overlap_top!r}")
    params = {"loss": loss, "C": C, "random_state": random_state, **dict(probe_params or {})}
    try:
        LinearProbe(**params)._validate_params()
    except TypeError as exc:
        raise ConfigError(f"probe_params holds an option LinearProbe does not take: {exc}") from None

    train_ind = train.indicator.astype(np.int64)
    n_fits = 1 + k_classes * sum(k < n_filters for k in kss)
    bar = tqdm(total=n_fits, desc="filters needed", unit="fit", disable=not progress)
    n_warnings = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        full = LinearProbe(**params).fit(Xtr, train_ind)
        bar.update(1)
        weights = np.asarray(full.coef_, dtype=np.float64)
        full_scores = full.decision_function(Xte)
        full_ap = np.array([_ap(test_ind[:, c], full_scores[:, c], ap_method) for c in range(k_classes)])
        ranking = rank_filters(weights)
        ap = np.empty((k_classes, len(kss)))
        for c in range(k_classes):
            for i, k in enumerate(kss):
                if k == n_filters:
                    ap[c, i] = full_ap[c]
                    continue
                cols = np.sort(ranking[c, :k])
                probe = LinearProbe(**params).fit(Xtr[:, cols], train_ind[:, [c]])
                ap[c, i] = _ap(test_ind[:, c], probe.decision_function(Xte[:, cols])[:, 0], ap_method)
                bar.update(1)
        n_warnings = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    bar.close()
    if n_warnings:
        log.warning(
            "%d of %d SVM fits stopped before converging (see LinearProbe max_iter/tol)", n_warnings, n_fits
        )

    needed: dict[float, list[int | None]] = {}
    for f in fr:
        needed[f] = []
        for c in range(k_classes):
            if np.isnan(full_ap[c]):
                needed[f].append(None)
                continue
            reached = np.flatnonzero(ap[c] >= f * full_ap[c] - 1e-12)
            needed[f].append(int(kss[reached[0]]) if reached.size else None)
    top = min(int(overlap_top), n_filters)
    return FiltersNeeded(
        classes=train.classes,
        ks=kss,
        weights=weights,
        ranking=ranking,
        ap=ap,
        full_ap=full_ap,
        fractions=fr,
        needed=needed,
        overlap=filter_overlap(ranking, top),
        overlap_top=top,
        params={**params, "ap_method": ap_method, "convergence_warnings": n_warnings},
    )


def _ap(positives: np.ndarray, scores: np.ndarray, method: str) -> float:
    if not positives.any():
        return float("nan")
    return average_precision(positives, scores, method=method)


def plot_filters_needed(
    result: FiltersNeeded | Mapping[str, FiltersNeeded],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Figure 3-4: per class, test AP against the number of filters (log scale), one colour per network
    when several named results are given; dotted lines mark the fractions of the full AP."""
    named = {"": result} if isinstance(result, FiltersNeeded) else dict(result)
    if not named:
        raise ConfigError("result is empty; give a FiltersNeeded or {network name: FiltersNeeded}")
    first = next(iter(named.values()))
    names = _class_names(class_names, first.classes)
    fig, axes = _plot.grid(len(names), ncols=5)
    for (net, res), colour in zip(named.items(), _plot.colours(len(named))):
        if len(res.classes) != len(names):
            raise ConfigError(f"result {net!r} has {len(res.classes)} classes, the first has {len(names)}")
        for c, ax in enumerate(axes):
            ax.plot(res.ks, res.ap[c], marker="o", markersize=2, color=colour, label=net or None)
            for f in res.fractions:
                ax.axhline(f * res.full_ap[c], color=colour, linestyle=":", linewidth=0.8)
    for c, ax in enumerate(axes):
        ax.set_xscale("log")
        ax.set_title(names[c], fontsize=9)
        ax.set_xlabel("filters", fontsize=7)
        ax.set_ylabel("AP", fontsize=7)
        if len(named) > 1:
            ax.legend(fontsize=6)
    return _plot.save(fig, path, title)


def plot_filter_overlap(
    result: FiltersNeeded | ArrayLike,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Figure 3-5: heatmap of the (K, K) overlap of the classes' top filters."""
    matrix = np.asarray(result.overlap if isinstance(result, FiltersNeeded) else result, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        raise ConfigError(f"overlap must be a square (n_classes, n_classes) matrix, got shape {matrix.shape}")
    classes = result.classes if isinstance(result, FiltersNeeded) else np.arange(matrix.shape[0])
    names = _class_names(class_names, classes)
    size = max(4.0, 0.32 * len(names) + 2)
    fig, ax = _plot.figure((size + 1, size))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="shared fraction of top filters")
    if not title and isinstance(result, FiltersNeeded):
        title = f"overlap of the top {result.overlap_top} filters"
    return _plot.save(fig, path, title)
