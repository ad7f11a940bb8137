"""Caption metrics with the COCO caption evaluation's definitions: BLEU-1..4, METEOR (Java), ROUGE-L
and CIDEr-D, corpus-level with the per-image scores kept. Inputs are tokenised captions
(:func:`deepfeat.tasks.text.tokenizer.tokenize`): ``references[i]`` the reference captions of image i,
``candidates[i]`` its candidate. Each scorer agrees with ``pycocoevalcap`` to 1e-6 on the same tokens
(``tests/tasks/text/test_metrics.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from deepfeat.errors import ConfigError
from deepfeat.tasks.text.metrics.bleu import bleu
from deepfeat.tasks.text.metrics.cider import CiderD, cider_d
from deepfeat.tasks.text.metrics.meteor import Meteor, meteor, meteor_unavailable
from deepfeat.tasks.text.metrics.rouge import rouge_l

#: metric names in the order of the thesis' Table 4.6 columns (B1-B4, C, M, R)
METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider_d", "meteor", "rouge_l")
LABELS = {
    "bleu_1": "B1",
    "bleu_2": "B2",
    "bleu_3": "B3",
    "bleu_4": "B4",
    "cider_d": "C",
    "meteor": "M",
    "rouge_l": "R",
}
FAMILIES = ("bleu", "cider_d", "meteor", "rouge_l")


@dataclass
class CaptionScores:
    """Corpus scores by metric, per-image scores (same order as the inputs), and why any metric is
    missing (METEOR without Java)."""

    corpus: dict[str, float]
    per_image: dict[str, np.ndarray]
    unavailable: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        return self.corpus[name]

    def to_dict(self, ids: Sequence[str] | None = None) -> dict:
        """Plain data; per-image scores keyed by ``ids`` when given."""
        per = {
            m: (dict(zip(ids, v.tolist())) if ids is not None else v.tolist())
            for m, v in self.per_image.items()
        }
        return {"corpus": dict(self.corpus), "per_image": per, "unavailable": dict(self.unavailable)}


def score_captions(
    references: Sequence[Sequence[Sequence[str]]],
    candidates: Sequence[Sequence[str]],
    *,
    metrics: Sequence[str] = FAMILIES,
    meteor_scorer: Meteor | None = None,
) -> CaptionScores:
    """Score tokenised ``candidates`` against ``references`` with the metric families in ``metrics``
    (``bleu``, ``cider_d``, ``meteor``, ``rouge_l``); METEOR is skipped, with the reason recorded,
    where Java or its jar is missing. ``meteor_scorer``: a running :class:`Meteor` to reuse."""
    unknown = [m for m in metrics if m not in FAMILIES]
    if unknown:
        raise ConfigError(f"unknown caption metric {unknown[0]!r}; valid: {', '.join(FAMILIES)}")
    corpus: dict[str, float] = {}
    per_image: dict[str, np.ndarray] = {}
    unavailable: dict[str, str] = {}
    if "bleu" in metrics:
        values, per = bleu(references, candidates, 4)
        for k in range(4):
            corpus[f"bleu_{k + 1}"] = float(values[k])
            per_image[f"bleu_{k + 1}"] = per[:, k]
    if "cider_d" in metrics:
        corpus["cider_d"], per_image["cider_d"] = cider_d(references, candidates)
    if "meteor" in metrics:
        why = None if meteor_scorer is not None else meteor_unavailable()
        got = None if why else meteor(references, candidates, scorer=meteor_scorer)
        if got is None:
            unavailable["meteor"] = why or "the METEOR jar failed"
        else:
            corpus["meteor"], per_image["meteor"] = got
    if "rouge_l" in metrics:
        corpus["rouge_l"], per_image["rouge_l"] = rouge_l(references, candidates)
    order = {m: i for i, m in enumerate(METRICS)}
    corpus = dict(sorted(corpus.items(), key=lambda kv: order[kv[0]]))
    return CaptionScores(corpus=corpus, per_image=per_image, unavailable=unavailable)


__all__ = [
    "FAMILIES",
    "LABELS",
    "METRICS",
    "CaptionScores",
    "CiderD",
    "Meteor",
    "bleu",
    "cider_d",
    "meteor",
    "meteor_unavailable",
    "rouge_l",
    "score_captions",
]
