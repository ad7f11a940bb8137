"""How do the layers of a network train over time? (Agrawal, chapter 4, Table 4.1.)

For every checkpoint of a training run and every layer, a linear probe is trained on the layer's
features of a transfer task's training images and scored on its test images; the table has one row per
layer and one column per checkpoint, and each score is also given as a fraction of the layer's score at
the last checkpoint (the report notes all layers within 80% of their final score by 15K iterations).

Features come as ``{checkpoint: {layer: (X_train, y_train, X_test, y_test)}}`` or as a callable giving the
inner mapping for a checkpoint name (so features of one checkpoint at a time need be in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, clone
from tqdm.auto import tqdm

from deepfeat.analysis._inputs import as_matrix, check_finite, to_numpy
from deepfeat.errors import ConfigError, DataError
from deepfeat.metrics import mean_average_precision, mean_per_class_accuracy
from deepfeat.probes.registry import probe_for
from deepfeat.report import plots as _plot
from deepfeat.validation import check_choice

METRICS = ("accuracy", "mean_class_accuracy", "map")
Split = tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]
LayerSplits = Mapping[str, Split]


@dataclass
class CheckpointTable:
    """Probe scores (L, K) of L layers at K checkpoints (NaN where a layer is missing at a checkpoint)."""

    checkpoints: list[str]
    layers: list[str]
    metric: str
    scores: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def fraction_of_final(self) -> np.ndarray:
        """Each score divided by the layer's score at the last checkpoint."""
        final = self.scores[:, -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(final > 0, self.scores / np.where(final > 0, final, 1.0), np.nan)

    def to_dict(self) -> dict:
        def nested(values: np.ndarray) -> dict:
            return {
                layer: {ck: None if np.isnan(v) else float(v) for ck, v in zip(self.checkpoints, row)}
                for layer, row in zip(self.layers, values)
            }

        return {
            "metric": self.metric,
            "checkpoints": list(self.checkpoints),
            "layers": list(self.layers),
            "params": self.params,
            "table": nested(self.scores),
            "fraction_of_final": nested(self.fraction_of_final),
        }


def _make_probe(probe: str | BaseEstimator, probe_params: Mapping | None, random_state: int | None):
    if isinstance(probe, str):
        return probe_for(probe, random_state=random_state, **dict(probe_params or {}))
    if probe_params:
        raise ConfigError("probe_params applies to a probe given by name; set the options on the estimator")
    if not (hasattr(probe, "fit") and hasattr(probe, "predict")):
        raise ConfigError(f"probe must be a probe name or a scikit-learn classifier, got {probe!r}")
    return clone(probe)


def _score(model, X_test: np.ndarray, y_test: np.ndarray, metric: str, multilabel: bool) -> float:
    if multilabel:
        return mean_average_precision(y_test, model.decision_function(X_test))
    classes = np.asarray(model.classes_)
    unknown = np.setdiff1d(np.unique(y_test), classes)
    if unknown.size:
        raise DataError(f"y_test holds labels {unknown[:10].tolist()} absent from y_train")
    true = np.searchsorted(classes, y_test)
    if metric == "map":
        return mean_average_precision(true, model.decision_function(X_test))
    pred = np.searchsorted(classes, model.predict(X_test))
    if metric == "accuracy":
        return float(np.mean(true == pred))
    return mean_per_class_accuracy(true, pred, n_classes=len(classes))


def _check_split(split, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(split, tuple | list) or len(split) != 4:
        raise DataError(f"{where} must be a tuple (X_train, y_train, X_test, y_test)")
    Xtr, Xte = as_matrix(split[0], f"{where} X_train"), as_matrix(split[2], f"{where} X_test")
    ytr, yte = to_numpy(split[1]), to_numpy(split[3])
    check_finite(Xtr[:, :, None], f"{where} X_train")
    check_finite(Xte[:, :, None], f"{where} X_test")
    if len(ytr) != len(Xtr) or len(yte) != len(Xte):
        raise DataError(
            f"{where}: {len(Xtr)} training rows with {len(ytr)} labels, "
            f"{len(Xte)} test rows with {len(yte)} labels"
        )
    if Xtr.shape[1] != Xte.shape[1]:
        raise DataError(f"{where}: X_train has {Xtr.shape[1]} features but X_test has {Xte.shape[1]}")
    if ytr.ndim == 1 and np.unique(ytr).size < 2:
        raise DataError(f"{where}: y_train holds a single class; a probe needs 2 or more")
    return Xtr, ytr, Xte, yte


def layer_accuracy_over_training(
    features: Mapping[str, LayerSplits] | Callable[[str], LayerSplits],
    *,
    checkpoints: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    probe: str | BaseEstimator = "svm",
    probe_params: Mapping | None = None,
    metric: str | None = None,
    random_state: int | None = 0,
    progress: bool = False,
) -> CheckpointTable:
    """Probe score of every layer at every checkpoint (Table 4.1 style).

    ``features``: ``{checkpoint: {layer: (X_train, y_train, X_test, y_test)}}`` or a callable from a
    checkpoint name to the inner mapping (then ``checkpoints`` is required); checkpoints in training
    order. ``layers``: the layers to score (default: all, in first-seen order). ``probe``: a name of
    :func:`deepfeat.probes.probe_for` (with ``probe_params``) or a scikit-learn classifier. ``metric``:
    ``"accuracy"``, ``"mean_class_accuracy"`` or ``"map"`` (default: accuracy, or mAP for multi-label
    indicator targets, the only metric for those).
    """
    if metric is not None:
        check_choice("metric", metric, METRICS)
    if callable(features) and not isinstance(features, Mapping):
        if not checkpoints:
            raise ConfigError("checkpoints are required when features is a callable")
        source = features
    elif isinstance(features, Mapping):
        if not features:
            raise ConfigError(
                "features is empty; give {checkpoint: {layer: (X_train, y_train, X_test, y_test)}}"
            )
        missing = [c for c in (checkpoints or []) if c not in features]
        if missing:
            raise ConfigError(f"checkpoints {missing} are not in features; valid: {list(features)}")
        source = features.__getitem__
        checkpoints = list(checkpoints or features)
    else:
        raise ConfigError("features must be a mapping {checkpoint: {layer: split}} or a callable")
    checkpoints = [str(c) for c in checkpoints]
    if len(set(checkpoints)) != len(checkpoints):
        raise ConfigError(f"checkpoints must be distinct, got {checkpoints}")
    _make_probe(probe, probe_params, random_state)  # fail early on a bad probe

    results: dict[tuple[str, str], float] = {}
    seen: list[str] = []
    used_metric = metric
    bar = tqdm(total=len(checkpoints), desc="checkpoints", unit="ckpt", disable=not progress)
    for ck in checkpoints:
        splits = source(ck)
        if not isinstance(splits, Mapping):
            raise DataError(f"features of checkpoint {ck!r} must be a mapping {{layer: split}}")
        for layer, split in splits.items():
            if layers is not None and layer not in layers:
                continue
            Xtr, ytr, Xte, yte = _check_split(split, f"checkpoint {ck!r}, layer {layer!r}")
            multilabel = ytr.ndim == 2
            chosen = used_metric or ("map" if multilabel else "accuracy")
            if multilabel and chosen != "map":
                raise ConfigError(
                    f"metric {chosen!r} needs single-label targets; multi-label targets use 'map'"
                )
            used_metric = chosen
            model = _make_probe(probe, probe_params, random_state).fit(Xtr, ytr)
            results[(ck, layer)] = _score(model, Xte, yte, chosen, multilabel)
            if layer not in seen:
                seen.append(layer)
        bar.update(1)
    bar.close()
    if layers is not None:
        absent = [layer for layer in layers if layer not in seen]
        if absent:
            raise ConfigError(f"layers {absent} appear at no checkpoint; found: {seen}")
        seen = list(layers)
    if not seen:
        raise DataError("no layer features were found at any checkpoint")
    scores = np.array([[results.get((ck, layer), np.nan) for ck in checkpoints] for layer in seen])
    params = {
        "probe": probe if isinstance(probe, str) else repr(probe),
        "probe_params": dict(probe_params or {}),
        "random_state": random_state,
    }
    return CheckpointTable(checkpoints, seen, used_metric or "accuracy", scores, params)


def plot_layer_accuracy(table: CheckpointTable, path: str | Path, *, title: str = "") -> Path:
    """Line plot of each layer's score (%) against the checkpoints, in training order."""
    if not isinstance(table, CheckpointTable):
        raise ConfigError("table must be the CheckpointTable returned by layer_accuracy_over_training()")
    fig, ax = _plot.figure((max(6.0, 0.6 * len(table.checkpoints) + 3), 4.5))
    x = np.arange(len(table.checkpoints))
    for row, layer, colour in zip(table.scores, table.layers, _plot.colours(len(table.layers))):
        ax.plot(x, 100 * row, marker="o", markersize=3, color=colour, label=layer)
    ax.set_xticks(x, table.checkpoints, rotation=30 if len(x) > 6 else 0)
    ax.set_xlabel("checkpoint")
    ax.set_ylabel(
        {"map": "mAP (%)", "accuracy": "accuracy (%)"}.get(table.metric, "mean per-class accuracy (%)")
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _plot.save(fig, path, title)
