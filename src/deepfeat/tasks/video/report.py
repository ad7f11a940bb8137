"""Files of a video evaluation: ``results.json`` (the one writer's layout: every row's scores, the
video probabilities, failures and provenance), ``report.md`` (Table 4.1's rows, the per-class
differences of Tables 4.2 and 4.3, per-class accuracy) and the PNG plots it shows (the confusion
matrix of the best row, per-class accuracy)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepfeat.report import plots
from deepfeat.report.document import Report
from deepfeat.report.writer import write_result
from deepfeat.tasks.video.evaluation import MODEL_LABELS, VideoEvaluation


def confusion_plot(confusion, classes: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class down, predicted across) as a PNG."""
    m = np.asarray(confusion, dtype=float)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = max(4.5, 0.32 * len(classes) + 2.5)
    fig, ax = plots.figure((side + 1, side))
    shown = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    small = 7 if len(classes) > 12 else 9
    ax.set_xticks(ticks, classes, rotation=90, fontsize=small)
    ax.set_yticks(ticks, classes, fontsize=small)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if m[i, j]:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=small - 1, color=colour)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return plots.save(fig, path, title)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def build_report(result: VideoEvaluation, title: str, context: dict | None = None) -> Report:
    doc = Report(title)
    facts = dict(context or {})
    facts["scored videos"] = f"{len(result.video_ids)} (of {result.provenance.get('n_videos', '?')})"
    facts["models"] = "; ".join(
        f"{name}: {cfg.get('features', {}).get('layer')} grid {cfg.get('features', {}).get('grid')}, "
        + (f"LSTM {cfg.get('hidden')} units, " if cfg.get("model") == "lrcn" else "")
        + f"clips {cfg.get('clip_length')}/{cfg.get('clip_stride')}, {cfg.get('epochs')} epochs"
        + (", top stages fine-tuned" if cfg.get("top") else "")
        for name, cfg in result.models.items()
    )
    clips = sorted(
        {
            (cfg.get("clip_length"), cfg.get("clip_stride"))
            for cfg in result.models.values()
            if cfg.get("model") == "lrcn"
        },
        key=str,
    )
    lrcn = " / ".join(f"{n}-frame clip, then over the clips (stride {s})" for n, s in clips)
    facts["prediction per video"] = (
        f"LRCN: softmax averaged over the steps of each {lrcn}; " if clips else ""
    ) + "single frame: averaged over all frames; fused: w * RGB + (1 - w) * flow"
    doc.facts(facts)
    doc.heading("Accuracy per video (%), as Table 4.1")
    doc.table(*result.table("accuracy"))
    doc.heading("Mean per-class accuracy (%)")
    doc.table(*result.table("mean_class_accuracy"))
    best = result.best()
    doc.heading(f"Confusion matrix: {best}")
    doc.image("confusion.png", f"confusion matrix of {best}")
    doc.image("per_class.png", f"per-class accuracy of {best}")
    pairs = [(f"lrcn/{s}", f"single/{s}", f"LRCN minus single frame, {s}") for s in ("rgb", "flow")]
    pairs.append(("lrcn/flow", "lrcn/rgb", "LRCN flow minus LRCN RGB (as Table 4.3)"))
    for a, b, label in pairs:
        if a in result.scores and b in result.scores:
            diffs = result.delta(a, b)
            shown = diffs[:5] + [d for d in diffs[-5:] if d not in diffs[:5]]
            doc.heading(f"Per-class difference: {label}")
            doc.table(["class", "Δ accuracy (points)"], [[c, f"{100 * d:+.1f}"] for c, d in shown])
    names = list(result.scores)
    doc.heading("Per-class accuracy (%)")
    doc.table(
        ["class", *names],
        [[c] + [_pct(result.scores[n]["per_class"][i]) for n in names] for i, c in enumerate(result.classes)],
    )
    if result.unscored:
        doc.heading("Videos not scored")
        doc.table(["video", "why"], [list(u) for u in result.unscored[:50]])
    n_fail = sum(len(v) for v in result.failures.values())
    if n_fail:
        doc.text(f"{n_fail} frames or videos could not be used; every one is listed in `results.json`.")
    doc.text("Every number above, with each video's probabilities per row, is in `results.json`.")
    return doc


def write_report(
    result: VideoEvaluation, out: str | os.PathLike, *, title: str = "deepfeat video evaluation", context=None
) -> dict[str, Path]:
    """Write results.json, report.md, confusion.png and per_class.png into ``out``."""
    out = Path(out)
    best = result.best()
    s = result.scores[best]
    drawings = {
        "confusion": lambda p: confusion_plot(s["confusion"], result.classes, p, title=f"{best}"),
        "per_class": lambda p: plots.per_class(
            s["per_class"], result.classes, p, "accuracy (%)", title=f"per class: {best}"
        ),
    }
    body = {"context": context or {}, "row_labels": MODEL_LABELS, **result.to_dict()}
    paths = write_result(
        out,
        "results",
        body,
        kind="video-evaluation",
        provenance=result.provenance,
        plots=drawings,
        plot_prefix="",
        device=result.provenance.get("device"),
    )
    paths["results"] = paths.pop("json")
    paths["report"] = build_report(result, title, context).write(out / "report.md")
    return paths
