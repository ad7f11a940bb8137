"""ROUGE-L as the COCO caption evaluation computes it (Lin 2004): per image, the longest common
subsequence with each reference gives a precision (LCS / candidate length) and a recall (LCS /
reference length); the best precision and the best recall over the references, taken separately,
combine into F = (1 + beta^2) P R / (R + beta^2 P) with beta = 1.2; the corpus score is the mean over
images. As in the reference, an empty caption counts as one empty token (length 1, matching nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepfeat.tasks.text.metrics.bleu import _check

BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming, one row)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            keep = row[j]
            row[j] = prev_diag + 1 if x == y else max(row[j], row[j - 1])
            prev_diag = keep
    return row[-1]


def rouge_l_one(refs: Sequence[Sequence[str]], cand: Sequence[str], beta: float = BETA) -> float:
    """ROUGE-L F of one candidate against its references."""
    cand = list(cand) or [""]
    precision = recall = 0.0
    for ref in refs:
        ref = list(ref) or [""]
        common = lcs_length(ref, cand)
        precision = max(precision, common / len(cand))
        recall = max(recall, common / len(ref))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(
    references: Sequence[Sequence[Sequence[str]]], candidates: Sequence[Sequence[str]], beta: float = BETA
) -> tuple[float, np.ndarray]:
    """Mean ROUGE-L over images and the per-image scores."""
    _check(references, candidates)
    scores = np.array([rouge_l_one(r, c, beta) for r, c in zip(references, candidates)])
    return float(scores.mean()), scores
