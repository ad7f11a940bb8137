"""Files of a captioning evaluation: ``results.json`` (every number, per-image scores and captions, in
the layout of :mod:`deepfeat.report.writer`), ``report.md`` (generation table per model and strategy
with the baselines, retrieval table with chance, training summary) and two PNGs: example images with
generated and reference captions, and CIDEr-D per row."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

from deepfeat.report import plots
from deepfeat.report.document import Report
from deepfeat.report.writer import write_result
from deepfeat.tasks.captioning.evaluate import CaptionEvaluation, empty_note
from deepfeat.tasks.text.metrics import LABELS, METRICS


def generation_table(evaluation: CaptionEvaluation) -> tuple[list[str], list[list[str]]]:
    """Header and rows: model (or baseline), strategy, then B1 B2 B3 B4 C M R (Table 4.6's columns)."""
    present = [m for m in METRICS if any(m in r["corpus"] for r in evaluation.rows)]
    header = ["model", "strategy", *[LABELS[m] for m in present]]
    rows = []
    for r in evaluation.rows:
        cells = [f"{r['corpus'][m]:.3f}" if m in r["corpus"] else "-" for m in present]
        rows.append([r["name"], r.get("strategy_name") or "-", *cells])
    return header, rows


def retrieval_table(evaluation: CaptionEvaluation) -> tuple[list[str], list[list[str]]]:
    """Header and rows: model, direction, R@1, R@5, R@10 (%), median rank; chance rows last."""
    header = ["model", "direction", "R@1", "R@5", "R@10", "Medr"]
    rows, chance = [], None
    for name, r in evaluation.retrieval.items():
        for direction in ("caption_to_image", "image_to_caption"):
            v = r[direction]
            rows.append(
                [
                    name,
                    direction.replace("_", " "),
                    *[f"{v[k]:.1f}" for k in ("R@1", "R@5", "R@10")],
                    f"{v['medr']:g}",
                ]
            )
        chance = r["chance"]
    if chance:
        for direction in ("caption_to_image", "image_to_caption"):
            v = chance[direction]
            rows.append(
                [
                    "chance",
                    direction.replace("_", " "),
                    *[f"{v[k]:.1f}" for k in ("R@1", "R@5", "R@10")],
                    f"{v['medr']:g}",
                ]
            )
    return header, rows


def examples_grid(evaluation: CaptionEvaluation, path: Path, max_generated: int = 3) -> Path:
    """Example images, each with up to ``max_generated`` generated captions and one reference."""
    from PIL import Image

    shown = [e for e in evaluation.examples if Path(e["path"]).is_file()]
    fig, axes = plots.grid(max(1, len(shown)), ncols=4, size=(4.2, 5.0))
    for ax, ex in zip(axes, shown):
        with Image.open(ex["path"]) as img:
            ax.imshow(np.asarray(img.convert("RGB")))
        ax.axis("off")
        lines = []
        models = [(k, v) for k, v in ex["generated"].items() if v is not None]
        for name, caption in models[:max_generated]:
            lines.append(textwrap.fill(f"{name}: {caption}", 46))
        lines.append(textwrap.fill(f"reference: {ex['references'][0]}", 46))
        ax.set_title("\n".join(lines), fontsize=6.5, loc="left")
    return plots.save(fig, path)


def cider_bars(evaluation: CaptionEvaluation, path: Path) -> Path:
    rows = [r for r in evaluation.rows if "cider_d" in r["corpus"]]
    fig, ax = plots.figure((max(6.0, 0.45 * len(rows) + 2), 4.2))
    names = [f"{r['name']}\n{r.get('strategy_name') or ''}" for r in rows]
    colours = ["tab:blue" if r["kind"] == "model" else "tab:gray" for r in rows]
    ax.bar(np.arange(len(rows)), [r["corpus"]["cider_d"] for r in rows], color=colours)
    ax.set_xticks(np.arange(len(rows)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("CIDEr-D")
    ax.grid(axis="y", alpha=0.3)
    return plots.save(fig, path, title=f"CIDEr-D on {evaluation.about['data']} ({evaluation.about['on']})")


def build_report(evaluation: CaptionEvaluation, title: str, context: dict | None = None) -> Report:
    about = evaluation.about
    doc = Report(title)
    facts = dict(context or {})
    facts["images"] = (
        f"{about['n_images']} ({about['on']} of {about['data']}), {about['n_references']} reference captions"
    )
    skipped = about.get("skipped") or []
    if skipped:
        facts["images"] += f"; {len(skipped)} skipped (their files could not be used; listed below)"
    if about.get("training_images_evaluated"):
        facts["images"] += (
            f"; {about['training_images_evaluated']} of them are a model's training images (not held-out)"
        )
    for m in about["models"]:
        c, f = m["decoder"], m["features"]
        tr = m["training"].get("training", {})
        facts[f"model {m['name']}"] = (
            f"hidden {c['hidden_size']}, embedding {c['embed_size']}, dropout {c['dropout']}, vocabulary "
            f"{m['vocabulary']}; features {f['backbone']} {f['layer']}"
            + (f", fine-tuned above {f['finetune_from']}" if f.get("finetune_from") else "")
            + (f"; best epoch {tr.get('best_epoch')} of {len(tr.get('history', []))}" if tr else "")
        )
    missing = {k: v for r in evaluation.rows for k, v in r.get("unavailable", {}).items()}
    if missing:
        facts["not computed"] = "; ".join(f"{k}: {v}" for k, v in missing.items())
    doc.facts(facts)
    doc.heading("Generation (COCO caption metrics)")
    doc.table(*generation_table(evaluation))
    doc.text(
        "B1-B4: BLEU, C: CIDEr-D, M: METEOR, R: ROUGE-L, corpus level as the COCO caption evaluation "
        "computes them; per-image scores and every caption are in results.json."
    )
    for r in evaluation.rows:
        if r.get("empty_captions"):
            doc.text(
                f"{r['name']}, {r['strategy_name']}: {empty_note(r['empty_captions'], len(r['captions']))}."
            )
    doc.image("cider_d.png", "CIDEr-D per model, strategy and baseline")
    if evaluation.retrieval:
        doc.heading("Retrieval (ranking by caption log-likelihood)")
        doc.table(*retrieval_table(evaluation))
        doc.text("R@K: % of queries whose first correct item ranks K or better; Medr: median of that rank.")
    if skipped:
        doc.heading("Images skipped")
        doc.table(["file", "reason"], [list(f) for f in skipped[:50]])
        if len(skipped) > 50:
            doc.text(f"... and {len(skipped) - 50} more, all in results.json.")
    if evaluation.examples:
        doc.heading("Examples")
        doc.image("examples.png", "generated and reference captions")
    return doc


def write_report(
    evaluation: CaptionEvaluation,
    out: str | os.PathLike,
    *,
    title: str = "deepfeat captioning",
    context: dict | None = None,
) -> dict[str, Path]:
    """Write results.json, report.md and the PNGs into folder ``out``; returns their paths."""
    out = Path(out)
    drawings = {"cider_d": lambda p: cider_bars(evaluation, p)}
    if evaluation.examples:
        drawings["examples"] = lambda p: examples_grid(evaluation, p)
    paths = write_result(
        out,
        "results",
        {"context": context or {}, **evaluation.to_dict()},
        kind="captioning",
        provenance=evaluation.provenance,
        plots=drawings,
        plot_prefix="",
        device=evaluation.provenance.get("device"),
    )
    paths["results"] = paths.pop("json")
    paths["report"] = build_report(evaluation, title, context).write(out / "report.md")
    return paths
