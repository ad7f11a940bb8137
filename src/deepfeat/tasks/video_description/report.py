"""Files of a video-description evaluation: ``results.json`` (the one writer's layout) and
``report.md`` (Table 4.9's rows with BLEU-1..4 and CIDEr-D, example sentences)."""

from __future__ import annotations

import os
from pathlib import Path

from deepfeat.report.document import Report
from deepfeat.report.writer import write_result
from deepfeat.tasks.video_description.evaluation import DescribeEvaluation


def build_report(result: DescribeEvaluation, examples: int = 5) -> Report:
    doc = Report("Video description (LRCN, thesis Section 4.5)")
    prov = result.provenance
    doc.facts(
        {
            "split": f"{result.split} ({prov.get('n_videos')} videos, "
            f"{prov.get('n_references')} reference sentences)",
            "slot predictions": prov.get("slot_source", "?"),
            "slots (values)": ", ".join(f"{s} ({n})" for s, n in prov.get("slots", {}).items()),
            "mean max probability per slot": ", ".join(
                f"{s} {v:.2f}" for s, v in prov.get("slot_agreement", {}).items()
            ),
        }
    )
    doc.heading("Scores (%), as Table 4.9 (which reports BLEU-4)")
    doc.table(*result.table())
    if examples:
        doc.heading("Examples")
        header = ["video", "reference", *result.sentences]
        body = []
        for i, vid in enumerate(result.ids[:examples]):
            body.append(
                [vid, " ".join(result.references[i][0]), *(" ".join(s[i]) for s in result.sentences.values())]
            )
        doc.table(header, body)
    return doc


def write_report(result: DescribeEvaluation, out: str | os.PathLike, examples: int = 5) -> dict[str, Path]:
    """Write ``results.json`` and ``report.md`` into ``out``; returns their paths."""
    out = Path(out)
    paths = write_result(
        out, "results", result.to_dict(), kind="video-description", provenance=result.provenance
    )
    paths["report"] = build_report(result, examples).write(out / "report.md")
    return {"results": paths["json"], "report": paths["report"]}
