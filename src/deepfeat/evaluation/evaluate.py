"""Transfer evaluation: train probes on feature sets under a protocol and score them on held-out data.

For every split of the protocol, every feature set (a layer with its pooling) and every probe, a fresh
probe is fitted on the split's training rows (C chosen by cross-validation inside them) and scored on
its test rows: accuracy, mean per-class accuracy, top-5 accuracy and per-class accuracy for
single-label data; mean average precision (area and VOC07 11-point) and per-class AP for multi-label
data. Results are aggregated as mean and standard deviation over splits.

Each finished (split, features, probe) record is appended to a checkpoint file when one is given, so
an interrupted evaluation resumes without refitting what was done.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.base import clone
from tqdm.auto import tqdm

from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation.protocols import DomainAdaptation, FixedSplit, Split
from deepfeat.features.featureset import FeatureSet
from deepfeat.kernels import FactoredLayout
from deepfeat.metrics import (
    average_precision_per_class,
    mean_per_class_accuracy,
    per_class_accuracy,
    top_k_accuracy,
)
from deepfeat.probes.encoded import EncodedProbe
from deepfeat.probes.kernel import KernelProbe
from deepfeat.probes.linear import LinearProbe

SINGLE_LABEL_METRICS = ("mean_class_accuracy", "accuracy", "top5_accuracy")
MULTI_LABEL_METRICS = ("map", "map_voc07")


@dataclass
class EvaluationResult:
    """Per-split records and their mean / std summary, with everything needed to reproduce them."""

    records: list[dict]
    splits: list[Split]
    classes: list[str]
    multilabel: bool
    protocol: dict
    probes: dict[str, dict]
    features: dict[str, dict] = field(default_factory=dict)

    @property
    def primary_metric(self) -> str:
        """The headline metric: mAP for multi-label data, mean per-class accuracy otherwise."""
        return "map" if self.multilabel else "mean_class_accuracy"

    @property
    def metric_names(self) -> tuple[str, ...]:
        return MULTI_LABEL_METRICS if self.multilabel else SINGLE_LABEL_METRICS

    def summary(self) -> list[dict]:
        """One row per (features, probe, mode): mean and std of every metric over the splits."""
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in self.records:
            groups[(r["features"], r["probe"], r.get("mode"))].append(r)
        rows = []
        for (feat, probe, mode), recs in groups.items():
            row = {"features": feat, "probe": probe, "mode": mode, "n_splits": len(recs)}
            for m in self.metric_names:
                values = np.array(
                    [r["metrics"][m] for r in recs if r["metrics"].get(m) is not None], dtype=float
                )
                row[m] = {"mean": float(values.mean()), "std": float(values.std())} if values.size else None
            per_class = np.array([r["per_class"] for r in recs], dtype=float)
            row["per_class"] = np.nanmean(per_class, axis=0).tolist() if per_class.size else []
            row["C"] = [r["C"] for r in recs]
            rows.append(row)
        return rows

    def best(self) -> dict:
        """The summary row with the highest mean primary metric."""
        rows = [r for r in self.summary() if r.get(self.primary_metric)]
        return max(rows, key=lambda r: r[self.primary_metric]["mean"])

    def to_dict(self) -> dict:
        """Plain JSON: protocol, probes, features' provenance, splits (with row indices), records, summary."""
        return {
            "protocol": self.protocol,
            "probes": self.probes,
            "features": self.features,
            "classes": self.classes,
            "multilabel": self.multilabel,
            "primary_metric": self.primary_metric,
            "splits": [s.to_dict() for s in self.splits],
            "records": self.records,
            "summary": self.summary(),
        }


def _scores(probe: LinearProbe, X: np.ndarray, y: np.ndarray, n_classes: int, multilabel: bool, difficult):
    scores = probe.decision_function(X)
    if multilabel:
        ap = average_precision_per_class(y, scores, difficult=difficult)
        ap07 = average_precision_per_class(y, scores, method="voc07", difficult=difficult)
        metrics = {
            "map": float(np.nanmean(ap)) if np.isfinite(ap).any() else None,
            "map_voc07": float(np.nanmean(ap07)) if np.isfinite(ap07).any() else None,
        }
        return metrics, [None if np.isnan(v) else float(v) for v in ap]
    # columns of the probe are its classes_; place them on the full class list
    full = np.full((len(X), n_classes), -np.inf, dtype=np.float64)
    full[:, probe.classes_] = scores
    pred = full.argmax(axis=1)
    metrics = {
        "accuracy": float(np.mean(pred == y)),
        "mean_class_accuracy": mean_per_class_accuracy(y, pred, n_classes=n_classes),
        "top5_accuracy": top_k_accuracy(y, np.nan_to_num(full, neginf=-1e30), k=5) if n_classes > 5 else None,
    }
    pca = per_class_accuracy(y, pred, n_classes=n_classes)
    return metrics, [None if np.isnan(v) else float(v) for v in pca]


def accepts(template, features: FeatureSet) -> bool:
    """Whether the probe ``template`` can be trained on ``features`` (linear probes cannot take
    factored gradients)."""
    return features.provenance.get("form") != "factored" or isinstance(template, KernelProbe)


def probe_for_features(template, features: FeatureSet):
    """A fresh copy of the probe ``template`` set up for ``features``: factored gradient features get
    the kernel probe's factored kernel with their layout; linear probes refuse them."""
    probe = clone(template)
    if isinstance(probe, EncodedProbe):
        params = probe.encoder.get_params()
        if "layer_shape" in params and params["layer_shape"] is None:
            if features.layer_shape is None or len(features.layer_shape) != 3:
                raise ConfigError(
                    f"features {features.key!r} are not unrolled conv maps; the encoder of probe "
                    f"{type(probe.encoder).__name__} needs them (pool 'unroll' of a conv layer)"
                )
            probe.set_params(encoder__layer_shape=tuple(features.layer_shape))
        return probe
    if features.provenance.get("form") == "factored":
        if not isinstance(probe, KernelProbe):
            raise ConfigError(
                f"features {features.key!r} are factored gradients: evaluate them with the kernel probe "
                "'ksvm', or extract the explicit form (forms='explicit') for linear probes"
            )
        layout = FactoredLayout.from_provenance(features.provenance, features.layer_shape)
        probe.set_params(kernel="factored", layout=layout)
    return probe


def _record_key(feature: FeatureSet, probe_name: str, probe: LinearProbe, split: Split) -> str:
    text = json.dumps(
        [feature.provenance, probe_name, repr(sorted(probe.get_params().items())), split.to_dict()],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _stack(sets: dict[str, FeatureSet], rows: dict[str, np.ndarray], key: str):
    Xs, ys, ds = [], [], []
    for domain, idx in rows.items():
        fs = sets[domain]
        Xs.append(np.asarray(fs.features[idx]))
        ys.append(fs.targets[idx])
        ds.append(None if fs.difficult is None else fs.difficult[idx])
    X = np.concatenate(Xs) if len(Xs) > 1 else Xs[0]
    bad = ~np.isfinite(X)
    if bad.any():
        raise DataError(
            f"features {key!r} hold {int(bad.sum())} NaN or infinite values in "
            f"{int(bad.any(axis=1).sum())} images; re-extract them or drop those images"
        )
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
    difficult = None if any(d is None for d in ds) else np.concatenate(ds)
    return X, y, difficult


def evaluate(
    features: Mapping[str, FeatureSet],
    protocol,
    probes: Mapping[str, LinearProbe],
    *,
    target: Mapping[str, FeatureSet] | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate every feature set with every probe under ``protocol``.

    ``features``: feature sets by name (all of the same dataset and rows); each is evaluated with
    the probes that accept it (factored gradients: the kernel probe only). ``target``: the target
    domain's feature sets, same names, for :class:`DomainAdaptation`. ``checkpoint``: a JSON-lines
    file of finished records, read first and appended to, so a rerun resumes.
    """
    if not features:
        raise ConfigError("no feature sets to evaluate")
    if not probes:
        raise ConfigError("no probe given")
    names = list(features)
    first = features[names[0]]
    for name in names[1:]:
        if features[name].ids != first.ids:
            raise DataError(f"feature sets {names[0]!r} and {name!r} cover different images")
    is_da = isinstance(protocol, DomainAdaptation)
    if is_da:
        if target is None or set(target) != set(features):
            raise ConfigError(
                "domain adaptation needs target feature sets with the same names as the source ones"
            )
        if list(target[names[0]].classes) != list(first.classes):
            raise DataError(
                f"source and target have different classes: {first.classes} vs {target[names[0]].classes}"
            )
        splits = protocol.splits(first.targets, target[names[0]].targets, first.classes)
    elif isinstance(protocol, FixedSplit):
        splits = protocol.splits(first.targets, first.splits, first.classes)
    else:
        splits = protocol.splits(first.targets, first.classes)
    multilabel = first.multilabel
    n_classes = len(first.classes)
    usable = {name: [p for p, t in probes.items() if accepts(t, features[name])] for name in names}
    for name, ok in usable.items():  # fail before any fitting
        if not ok:
            probe_for_features(next(iter(probes.values())), features[name])

    done: dict[str, dict] = {}
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if checkpoint.exists():
            for line in checkpoint.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    done[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError):
                    continue  # torn line from an interrupted run: redo that record
        checkpoint.parent.mkdir(parents=True, exist_ok=True)

    records: list[dict] = []
    total = len(splits) * sum(len(ok) for ok in usable.values())
    bar = tqdm(total=total, desc="evaluate", unit="fit", disable=not progress, dynamic_ncols=True)
    for split in splits:
        for name in names:
            domains = (
                {"data": features[name]} if not is_da else {"source": features[name], "target": target[name]}
            )
            X_train, y_train, ignore = _stack(domains, split.train, name)
            X_test, y_test, difficult = _stack(domains, split.test, name)
            for probe_name, template in probes.items():
                if probe_name not in usable[name]:
                    continue
                key = _record_key(features[name], probe_name, template, split)
                if key in done:
                    records.append(done[key])
                    bar.update()
                    continue
                probe = probe_for_features(template, features[name])
                start = time.perf_counter()
                if multilabel:
                    probe.fit(X_train, y_train, ignore=ignore)
                else:
                    probe.fit(X_train, y_train)
                fit_seconds = time.perf_counter() - start
                metrics, per_class = _scores(probe, X_test, y_test, n_classes, multilabel, difficult)
                rec = {
                    "key": key,
                    "split": split.name,
                    "seed": split.seed,
                    "mode": split.info.get("mode"),
                    "features": name,
                    "probe": probe_name,
                    "metrics": metrics,
                    "per_class": per_class,
                    "C": probe.C_,
                    "cv": probe.cv_results_,
                    "n_train": len(X_train),
                    "n_test": len(X_test),
                    "fit_seconds": fit_seconds,
                }
                records.append(rec)
                if checkpoint is not None:
                    with checkpoint.open("a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                bar.update()
    bar.close()
    return EvaluationResult(
        records=records,
        splits=splits,
        classes=list(first.classes),
        multilabel=multilabel,
        protocol={
            "name": protocol.name,
            **{k: v for k, v in vars(protocol).items() if not k.startswith("_")},
        },
        probes={k: {"class": type(p).__name__, **p.get_params()} for k, p in probes.items()},
        features={
            name: {"provenance": fs.provenance, "dim": fs.dim, "n": len(fs)} for name, fs in features.items()
        }
        | (
            {}
            if target is None
            else {f"target:{n}": {"provenance": fs.provenance} for n, fs in target.items()}
        ),
    )
