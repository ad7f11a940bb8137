"""Scoring video-description models on one split of a description manifest (thesis Table 4.9: BLEU-4;
here BLEU-1..4 and CIDEr-D with the COCO evaluation's definitions), one row per model, and a
nearest-neighbour baseline: each video gets the consensus sentence of the training video whose slot
probability vector is closest (cosine;
:func:`deepfeat.tasks.captioning.baselines.nearest_neighbour_captions`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from deepfeat.errors import ConfigError
from deepfeat.tasks.captioning.baselines import nearest_neighbour_captions
from deepfeat.tasks.text.decoding import Strategy
from deepfeat.tasks.text.metrics import LABELS, score_captions
from deepfeat.tasks.video_description.data import DescriptionSet, read_descriptions
from deepfeat.tasks.video_description.models import INPUTS, DescriptionModel
from deepfeat.tasks.video_description.slots import SlotPredictions, read_slots
from deepfeat.validation import check_int

log = logging.getLogger(__name__)

METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider_d")


@dataclass
class DescribeEvalJob:
    """Score ``models`` (folders or :class:`DescriptionModel`) on the ``split`` videos of ``data`` with
    their ``slots``; ``beam`` width of the search (1: greedy); ``nearest_neighbour``: add the baseline
    (needs the manifest's ``train`` split); ``examples``: sentences shown per model."""

    data: DescriptionSet | str | os.PathLike
    slots: SlotPredictions | str | os.PathLike
    models: Sequence[DescriptionModel | str | os.PathLike]
    split: str = "test"
    beam: int = 1
    nearest_neighbour: bool = True
    examples: int = 5
    device: str | None = None

    def validate(self) -> DescribeEvalJob:
        if not self.models and not self.nearest_neighbour:
            raise ConfigError(
                "nothing to evaluate: give a model (--model) or keep the nearest-neighbour baseline"
            )
        check_int("beam width", self.beam, 1)
        check_int("examples", self.examples, 0)
        return self


@dataclass
class DescribeEvaluation:
    """Rows (name, architecture, input, corpus scores), each row's sentences, the references."""

    split: str
    ids: list[str]
    rows: list[dict]
    sentences: dict[str, list[list[str]]]
    references: list[list[list[str]]]
    provenance: dict = field(default_factory=dict)

    def table(self) -> tuple[list[str], list[list[str]]]:
        header = ["Architecture", "Input", *[LABELS.get(m, m) for m in METRICS]]
        body = [
            [
                r["name"],
                r["input"],
                *[f"{100 * r['scores'][m]:.1f}" for m in METRICS[:4]],
                f"{100 * r['scores']['cider_d']:.1f}",
            ]
            for r in self.rows
        ]
        return header, body

    def score(self, name: str, metric: str = "bleu_4") -> float:
        return next(r["scores"][metric] for r in self.rows if r["name"] == name)

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "rows": self.rows,
            "sentences": {
                k: {i: " ".join(s) for i, s in zip(self.ids, v)} for k, v in self.sentences.items()
            },
        }


def evaluate(
    job: DescribeEvalJob, *, progress: bool = True, echo: Callable[[str], None] | None = None
) -> DescribeEvaluation:
    """Run ``job`` (see the module docstring); the result is in memory (write it with
    :func:`deepfeat.tasks.video_description.report.write_report`)."""
    echo = echo or log.info
    job.validate()
    data = job.data if isinstance(job.data, DescriptionSet) else read_descriptions(job.data)
    preds = job.slots if isinstance(job.slots, SlotPredictions) else read_slots(job.slots)
    models = [
        m if isinstance(m, DescriptionModel) else DescriptionModel.load(m, job.device) for m in job.models
    ]
    rows_idx = data.rows(job.split)
    ids = [data.ids[r] for r in rows_idx]
    refs = data.tokens(rows_idx)
    test_preds = preds.select(ids, f"{job.split} videos")
    rows, sentences = [], {}
    strategy = Strategy(beam=job.beam)
    for k, model in enumerate(models):
        name = model.label if sum(m.label == model.label for m in models) == 1 else f"{model.label} #{k + 1}"
        cands = model.describe(test_preds, strategy, progress=progress)
        scores = score_captions(refs, cands, metrics=("bleu", "cider_d"))
        rows.append(
            {
                "name": name,
                "kind": "model",
                "arch": model.arch,
                "input": f"slot {INPUTS[model.arch]}",
                "scores": scores.corpus,
                "strategy": strategy.to_dict(),
                "options": model.meta.get("options"),
            }
        )
        sentences[name] = cands
        echo(f"{name}: BLEU-4 {100 * scores['bleu_4']:.1f}")
    if job.nearest_neighbour:
        train_rows = data.rows("train")
        train_preds = preds.select([data.ids[r] for r in train_rows], "training videos")
        cands, _ = nearest_neighbour_captions(
            test_preds.vectors("prob"), train_preds.vectors("prob"), data.tokens(train_rows)
        )
        scores = score_captions(refs, cands, metrics=("bleu", "cider_d"))
        name = "nearest neighbour"
        rows.append(
            {"name": name, "kind": "baseline", "arch": None, "input": "slot prob", "scores": scores.corpus}
        )
        sentences[name] = cands
    return DescribeEvaluation(
        split=job.split,
        ids=ids,
        rows=rows,
        sentences=sentences,
        references=refs,
        provenance={
            "manifest": data.name,
            "data_fingerprint": data.fingerprint(),
            "slot_source": preds.source,
            "n_videos": len(ids),
            "n_references": int(sum(len(r) for r in refs)),
            "slots": {s: len(v) for s, v in preds.slots.items()},
            "slot_agreement": _slot_agreement(test_preds),
        },
    )


def _slot_agreement(preds: SlotPredictions) -> dict:
    """Mean max probability per slot (how certain the slot predictions are)."""
    return {s: float(np.mean(p.max(1))) for s, p in preds.probs.items()}
