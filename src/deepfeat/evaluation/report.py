"""Files of an evaluation: ``results.json`` (every number with its provenance, in the layout of
:mod:`deepfeat.report.writer`), ``report.md`` and ``report.html`` (tables and plots; the HTML page
self-contained) and the PNG plots they show."""

from __future__ import annotations

import os
from pathlib import Path

from deepfeat.evaluation.result import EvaluationResult, format_score
from deepfeat.report import plots
from deepfeat.report.document import Report
from deepfeat.report.writer import write_result

#: skipped files named in the report's facts (all of them are in results.json)
SKIPPED_LISTED = 5


def _best_name(row: dict) -> str:
    return row["features"] + f" / {row['probe']}" + (f" ({row['mode']})" if row.get("mode") else "")


def build_report(result: EvaluationResult, title: str, context: dict | None = None) -> Report:
    """The Markdown report of ``result``: context, headline table, other metrics, per-class scores."""
    metric = result.primary_metric
    label = plots.METRIC_LABELS[metric]
    summary = result.summary()
    doc = Report(title)
    protocol = result.protocol
    facts = dict(context or {})
    n = result.splits_per_cell
    settings = ", ".join(f"{k}={v}" for k, v in protocol.items() if k != "name")
    facts["protocol"] = (
        f"{protocol['name']} ({result.splits_text()}" + (f"; {settings}" if settings else "") + ")"
    )
    facts["probes"] = ", ".join(
        f"{k} ({v.get('loss', v.get('class'))}, C={v.get('C')}"
        + (", features L2-normalised per image" if v.get("normalize") is True else "")
        + (f", kernel normalisation {v['normalize']}" if isinstance(v.get("normalize"), str) else "")
        + (f", dropout {v['dropout']:g}" if v.get("dropout") else "")
        + (f", class_weight={v['class_weight']}" if v.get("class_weight") is not None else "")
        + ")"
        for k, v in result.probes.items()
    )
    encoders = {k: v["encoder"] for k, v in result.features.items() if v.get("encoder")}
    if encoders:
        facts["per-split encoders"] = "; ".join(
            f"{k}: {e['class']} fitted on each split's training images" for k, e in encoders.items()
        )
    if result.voc07:
        facts["headline"] = "VOC07 11-point mAP (the papers' measure on VOC 2007); area mAP beside it"
    excluded = {r: e["excluded_classes"] for r, e in result.extraction.items() if e.get("excluded_classes")}
    if excluded:
        facts["EXCLUDED classes (no usable image)"] = "; ".join(
            f"{r}: {', '.join(c)}" for r, c in excluded.items()
        )
    skipped = {r: e["failures"] for r, e in result.extraction.items() if e.get("failures")}
    if skipped:
        facts["skipped files (unreadable: in no split)"] = "; ".join(
            f"{r}: {len(f)} ("
            + ", ".join(f"{Path(path).name}: {reason}" for path, reason in f[:SKIPPED_LISTED])
            + (f", ... {len(f) - SKIPPED_LISTED} more in results.json" if len(f) > SKIPPED_LISTED else "")
            + ")"
            for r, f in skipped.items()
        )
    doc.facts(facts)
    doc.heading(f"{label}, mean ± std over splits" if n != 1 else f"{label}, one split")
    if n != 1:
        doc.text("std: the standard deviation of the splits' scores (population form, ddof = 0).")
    doc.table(*result.table())
    doc.image("metric_by_features.png", f"{label} by features")
    other = [m for m in result.metric_names if m != metric]
    if other:
        with_mode = any(r.get("mode") is not None for r in summary)
        head = ["features", "probe"] + (["mode"] if with_mode else []) + other
        rows = [
            [r["features"], r["probe"]]
            + ([str(r.get("mode"))] if with_mode else [])
            + [format_score(r.get(m), r["n_splits"]) for m in other]
            for r in summary
        ]
        doc.heading("Other metrics").table(head, rows)
    best = result.best()
    per_class_label = "AP (%)" if result.multilabel else "accuracy (%)"
    doc.heading(f"Per class: {_best_name(best)}")
    doc.image("per_class.png", "per class")
    doc.table(
        ["class", per_class_label],
        [[c, "-" if v is None else f"{100 * v:.1f}"] for c, v in zip(result.classes, best["per_class"])],
    )
    given = {name for name, params in result.probes.items() if _given_C(params)}
    rows = [r for r in summary if any(c is not None for c in r["C"])]  # estimators without a C: none
    chosen = "; ".join(
        f"{r['features']}/{r['probe']}{_mode_tag(r)}: {r['C']}" + (" (given)" if r["probe"] in given else "")
        for r in rows[:8]
    )
    how = "cross-validated on each training split" + "".join(
        f"; not searched in {n} of {len(result.records)} fits ({note}): the probe's fallback C"
        for note, n in result.c_notes().items()
    )
    if rows:
        doc.text(f"Chosen C per split ({how}): " + chosen + ("; ..." if len(rows) > 8 else ""))
    doc.text("Every number above, with the split seeds and row indices, is in `results.json`.")
    return doc


def _given_C(params) -> bool:
    """Whether a probe's parameters fix its C (a number, not "cv"; CV estimators have no such C)."""
    C = params.get("C") if isinstance(params, dict) else None
    return isinstance(C, int | float) and not isinstance(C, bool)


def _mode_tag(row: dict) -> str:
    """' (ST)' for a domain-adaptation row of mode ST, '' for rows without a mode."""
    return "" if row.get("mode") is None else f" ({row['mode']})"


def write_report(
    result: EvaluationResult,
    out: str | os.PathLike,
    *,
    title: str = "deepfeat evaluation",
    context: dict | None = None,
) -> dict[str, Path]:
    """Write results.json, report.md, report.html (self-contained) and the plots into folder ``out``;
    returns their paths."""
    out = Path(out)
    metric = result.primary_metric
    summary = result.summary()
    best = result.best()
    per_class_label = "AP (%)" if result.multilabel else "accuracy (%)"
    drawings = {
        "metric_by_features": lambda p: plots.metric_by_features(
            summary, metric, p, title=plots.METRIC_LABELS[metric]
        ),
        "per_class": lambda p: plots.per_class(
            best["per_class"], result.classes, p, per_class_label, title=f"per class: {_best_name(best)}"
        ),
    }
    body = {"context": context or {}, **result.to_dict()}
    provenance = body.pop("provenance")
    paths = write_result(
        out,
        "results",
        body,
        kind="evaluation",
        provenance=provenance,
        plots=drawings,
        plot_prefix="",
        device=provenance.get("device"),
    )
    paths["results"] = paths.pop("json")
    paths["by_features"] = paths.pop("metric_by_features")
    paths["report"] = build_report(result, title, context).write(out / "report.md")
    paths["report_html"] = paths["report"].with_suffix(".html")
    return paths
