"""EvaluationResult: every fitted probe's scores on held-out data, their summary over splits, and the
provenance needed to reproduce them, in memory (reports are written from it separately)."""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from deepfeat.evaluation.protocols import Split

SINGLE_LABEL_METRICS = ("mean_class_accuracy", "accuracy", "top5_accuracy")
MULTI_LABEL_METRICS = ("map", "map_voc07")


@dataclass
class EvaluationResult:
    """Per-split records and their mean / std summary, with everything needed to reproduce them.

    ``records``: one dict per (split, features, probe): metrics, per-class scores, chosen C and the
    cross-validation record, sizes and fit time. ``features``: provenance, kind and size of every
    feature set (and its per-split encoder, if any). ``provenance``: what the job knew (data, backbone,
    preprocessing, versions, ...). ``extraction``: per dataset, the images that failed and why.
    ``voc07``: report the VOC07 11-point mAP as the headline metric (the papers' numbers on VOC 2007).
    """

    records: list[dict]
    splits: list[Split]
    classes: list[str]
    multilabel: bool
    protocol: dict
    probes: dict[str, dict]
    features: dict[str, dict] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    extraction: dict = field(default_factory=dict)
    voc07: bool = False

    @property
    def primary_metric(self) -> str:
        """The headline metric: mAP for multi-label data (VOC07 11-point for VOC 2007), mean
        per-class accuracy otherwise."""
        if self.multilabel:
            return "map_voc07" if self.voc07 else "map"
        return "mean_class_accuracy"

    @property
    def metric_names(self) -> tuple[str, ...]:
        if not self.multilabel:
            return SINGLE_LABEL_METRICS
        return ("map_voc07", "map") if self.voc07 else MULTI_LABEL_METRICS

    def summary(self) -> list[dict]:
        """One row per (features, probe, mode): mean and standard deviation (population form, ddof = 0,
        as NumPy's default) of every metric over the splits."""
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
            per_class = np.array(
                [[np.nan if v is None else v for v in r["per_class"]] for r in recs], dtype=float
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a class without test samples
                mean = np.nanmean(per_class, axis=0) if per_class.size else np.zeros(0)
            row["per_class"] = [None if np.isnan(v) else float(v) for v in mean]
            row["C"] = [r["C"] for r in recs]
            rows.append(row)
        return rows

    def c_notes(self) -> dict[str, int]:
        """Why C was not cross-validated in some fits (e.g. a class with fewer than 2 training samples),
        with the number of such fits: {note: count}."""
        notes: dict[str, int] = {}
        for r in self.records:
            cv = r.get("cv")
            if isinstance(cv, dict) and cv.get("note"):
                notes[cv["note"]] = notes.get(cv["note"], 0) + 1
        return notes

    def best(self) -> dict:
        """The summary row with the highest mean primary metric."""
        rows = [r for r in self.summary() if r.get(self.primary_metric)]
        return max(rows, key=lambda r: r[self.primary_metric]["mean"])

    def table(self, metric: str | None = None) -> tuple[list[str], list[list[str]]]:
        """Header and rows of a table of ``metric`` (default: the primary one), mean ± std in %:
        feature sets down, probes (and modes) across."""
        metric = metric or self.primary_metric
        summary = self.summary()
        series = list(dict.fromkeys((r["probe"], r.get("mode")) for r in summary))
        features = list(dict.fromkeys(r["features"] for r in summary))
        cells = {(r["features"], r["probe"], r.get("mode")): (r.get(metric), r["n_splits"]) for r in summary}
        header = ["features"] + [p if m is None else f"{p} ({m})" for p, m in series]
        rows = [[f] + [format_score(*cells.get((f, p, m), (None,))) for p, m in series] for f in features]
        return header, rows

    @property
    def splits_per_cell(self) -> int:
        """Splits behind each (features, probe, mode) score: ``len(splits)`` but for domain
        adaptation, whose splits are one per mode and seed."""
        return max((r["n_splits"] for r in self.summary()), default=0)

    def splits_text(self) -> str:
        """How many splits each score is over, in words: "5 splits", "2 splits per mode" (domain
        adaptation) or "1 split"."""
        n = self.splits_per_cell
        per_mode = n != 1 and any(r.get("mode") is not None for r in self.records)
        return f"{n} split{'s' if n != 1 else ''}" + (" per mode" if per_mode else "")

    def to_dict(self) -> dict:
        """Plain data: protocol, probes, features, provenance, splits (with row indices), records,
        summary."""
        return {
            "primary_metric": self.primary_metric,
            "classes": self.classes,
            "multilabel": self.multilabel,
            "protocol": self.protocol,
            "probes": self.probes,
            "features": self.features,
            "provenance": self.provenance,
            "extraction": self.extraction,
            "splits": [s.to_dict() for s in self.splits],
            "records": self.records,
            "summary": self.summary(),
        }


def format_score(value: dict | None, n_splits: int | None = None) -> str:
    """``mean ± std`` in percent with two decimals (the mean alone for one split), '-' when missing."""
    if not value:
        return "-"
    if n_splits == 1:
        return f"{100 * value['mean']:.2f}"
    return f"{100 * value['mean']:.2f} ± {100 * value['std']:.2f}"
