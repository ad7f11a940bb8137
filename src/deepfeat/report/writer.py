"""Result files of an evaluation: ``results.json`` (every number with its provenance), ``report.md``
(tables and plots) and the PNG plots it shows."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from deepfeat._version import __version__
from deepfeat.evaluation.evaluate import EvaluationResult
from deepfeat.report import plots


def _fmt(value: dict | None) -> str:
    if not value:
        return "-"
    return f"{100 * value['mean']:.2f} ± {100 * value['std']:.2f}"


def table_rows(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the headline table: features down, probe (and mode) across."""
    summary = result.summary()
    metric = result.primary_metric
    series = list(dict.fromkeys((r["probe"], r.get("mode")) for r in summary))
    features = list(dict.fromkeys(r["features"] for r in summary))
    header = ["features"] + [p if m is None else f"{p} ({m})" for p, m in series]
    rows = []
    for f in features:
        row = [f]
        for probe, mode in series:
            hit = next(
                (r for r in summary if r["features"] == f and r["probe"] == probe and r.get("mode") == mode),
                None,
            )
            row.append(_fmt(hit.get(metric) if hit else None))
        rows.append(row)
    return header, rows


def text_table(result: EvaluationResult) -> str:
    """The headline table as aligned plain text (for the terminal)."""
    header, rows = table_rows(result)
    cells = [header, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    result: EvaluationResult,
    out: str | Path,
    *,
    title: str = "deepfeat evaluation",
    context: dict | None = None,
) -> dict[str, Path]:
    """Write results.json, report.md and the plots into folder ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metric = result.primary_metric
    label = plots.METRIC_LABELS[metric]
    payload = {
        "deepfeat": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "context": context or {},
        **result.to_dict(),
    }
    try:
        import sklearn
        import torch

        payload["versions"] = {"torch": torch.__version__, "scikit-learn": sklearn.__version__}
    except ImportError:  # pragma: no cover
        pass
    paths = {"results": out / "results.json", "report": out / "report.md"}
    tmp = paths["results"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default))
    tmp.replace(paths["results"])

    summary = result.summary()
    paths["by_features"] = plots.metric_by_features(
        summary, metric, out / "metric_by_features.png", title=label
    )
    best = result.best()
    best_name = best["features"] + f" / {best['probe']}" + (f" ({best['mode']})" if best.get("mode") else "")
    per_class_label = "AP (%)" if result.multilabel else "accuracy (%)"
    paths["per_class"] = plots.per_class(
        best["per_class"],
        result.classes,
        out / "per_class.png",
        per_class_label,
        title=f"per class: {best_name}",
    )

    header, rows = table_rows(result)
    lines = [f"# {title}", ""]
    for key, value in (context or {}).items():
        lines.append(f"- **{key}**: {value}")
    protocol = result.protocol
    lines += [
        f"- **protocol**: {protocol['name']} ({len(result.splits)} splits; "
        + ", ".join(f"{k}={v}" for k, v in protocol.items() if k != "name")
        + ")",
        "- **probes**: "
        + ", ".join(f"{k} ({v.get('loss')}, C={v.get('C')})" for k, v in result.probes.items()),
        "",
        f"## {label}, mean ± std over splits",
        "",
        _markdown_table(header, rows),
        "",
        f"![{label} by features](metric_by_features.png)",
        "",
    ]
    other = [m for m in result.metric_names if m != metric]
    if other:
        lines += ["## Other metrics", ""]
        head = (
            ["features", "probe"] + ([] if all(r.get("mode") is None for r in summary) else ["mode"]) + other
        )
        rows2 = []
        for r in summary:
            row = [r["features"], r["probe"]] + ([] if len(head) == 2 + len(other) else [str(r.get("mode"))])
            rows2.append(row + [_fmt(r.get(m)) for m in other])
        lines += [_markdown_table(head, rows2), ""]
    lines += [f"## Per class: {best_name}", "", "![per class](per_class.png)", ""]
    lines += [
        _markdown_table(
            ["class", per_class_label],
            [
                [c, "-" if v is None or np.isnan(v) else f"{100 * v:.1f}"]
                for c, v in zip(result.classes, best["per_class"])
            ],
        ),
        "",
        "Chosen C per split (cross-validated on each training split): "
        + "; ".join(f"{r['features']}/{r['probe']}: {r['C']}" for r in summary[:8])
        + ("; ..." if len(summary) > 8 else ""),
        "",
        "Every number above, with the split seeds and row indices, is in `results.json`.",
    ]
    paths["report"].write_text("\n".join(lines) + "\n")
    return paths


def _json_default(obj):
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple | set):
        return list(obj)
    return str(obj)
