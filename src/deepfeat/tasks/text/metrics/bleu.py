"""BLEU-1..4 as the COCO caption evaluation computes it (Papineni et al. 2002, coco-caption's scorer).

For each image: clipped n-gram matches (a candidate n-gram counts at most as often as in the
reference where it is most frequent) and the candidate's n-gram count, and the reference length
closest to the candidate's (the shorter on a tie). Corpus BLEU-n: the geometric mean of the pooled
modified precisions up to n, times the brevity penalty exp(1 - r/c) when the pooled candidate length
c is below the pooled reference length r. Per image: the same from that image's counts alone. As in
the reference, 1e-15 is added to every numerator and 1e-9 to every denominator, so that an empty
candidate scores ~0 rather than failing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

TINY = 1e-15
SMALL = 1e-9


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """Counts of every k-gram of ``tokens`` for k = 1..n (as tuples)."""
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


def _stats(refs: Sequence[Sequence[str]], cand: Sequence[str], n: int) -> tuple[int, int, list, list]:
    """(candidate length, closest reference length, matches per order, n-grams per order)."""
    max_ref: dict[tuple, int] = {}
    for ref in refs:
        for gram, c in ngram_counts(ref, n).items():
            if c > max_ref.get(gram, 0):
                max_ref[gram] = c
    length = len(cand)
    ref_len = min((abs(len(r) - length), len(r)) for r in refs)[1]
    correct = [0] * n
    for gram, c in ngram_counts(cand, n).items():
        correct[len(gram) - 1] += min(max_ref.get(gram, 0), c)
    guess = [max(0, length - k + 1) for k in range(1, n + 1)]
    return length, ref_len, correct, guess


def _bleu(correct: Sequence[float], guess: Sequence[float], length: float, ref_len: float) -> list[float]:
    out, product = [], 1.0
    for k in range(len(correct)):
        product *= (correct[k] + TINY) / (guess[k] + SMALL)
        out.append(product ** (1.0 / (k + 1)))
    ratio = (length + TINY) / (ref_len + SMALL)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


def bleu(
    references: Sequence[Sequence[Sequence[str]]], candidates: Sequence[Sequence[str]], n: int = 4
) -> tuple[list[float], np.ndarray]:
    """Corpus BLEU-1..n and the per-image scores (array (n_images, n)).

    ``references[i]``: the tokenised reference captions of image i (at least one);
    ``candidates[i]``: its tokenised candidate caption.
    """
    _check(references, candidates)
    per_image = np.zeros((len(candidates), n))
    total_correct, total_guess = [0] * n, [0] * n
    total_len = total_ref = 0.0
    for i, (refs, cand) in enumerate(zip(references, candidates)):
        length, ref_len, correct, guess = _stats(refs, cand, n)
        per_image[i] = _bleu(correct, guess, length, ref_len)
        total_len += length
        total_ref += ref_len
        for k in range(n):
            total_correct[k] += correct[k]
            total_guess[k] += guess[k]
    return _bleu(total_correct, total_guess, total_len, total_ref), per_image


def _check(references, candidates) -> None:
    from deepfeat.errors import ConfigError

    if len(references) != len(candidates):
        raise ConfigError(f"{len(candidates)} candidates for {len(references)} reference sets")
    if not candidates:
        raise ConfigError("no caption to score")
    for i, refs in enumerate(references):
        if len(refs) == 0:
            raise ConfigError(f"image {i} has no reference caption")
