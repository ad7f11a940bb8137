"""Reference points for generated captions, scored like the models:

- **constant caption**: the one training caption that, given to every training image, scores the
  highest CIDEr-D against the training references (document frequencies of the training set), then
  given to every evaluated image;
- **nearest neighbour**: for each evaluated image, the training image closest in feature space (cosine
  similarity of the conditioning vectors the LSTMs see); of its captions, the consensus one, whose
  mean CIDEr-D against the image's other captions is highest (Devlin et al. 2015's consensus re-ranking
  within one neighbour);
- **human agreement**: each reference caption scored against the image's other references, pooled over
  the choices of the held-out reference (so five times as many candidates, each with four references).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepfeat.tasks.text.metrics import CiderD


def constant_caption(
    train_refs: Sequence[Sequence[Sequence[str]]],
    *,
    max_candidates: int | None = 4000,
    progress: bool = False,
) -> tuple[list[str], float]:
    """The best constant caption of the training set and its training CIDEr-D (exact, every candidate
    against every training image).

    Candidates: the distinct training captions; beyond ``max_candidates`` of them, those whose words
    are most frequent in the training captions (mean log count), which is where a caption that fits
    every image is found."""
    distinct: dict[tuple, int] = {}
    for refs in train_refs:
        for r in refs:
            distinct.setdefault(tuple(r), len(distinct))
    candidates = [list(c) for c in distinct]
    if max_candidates is not None and len(candidates) > max_candidates:
        counts: dict[str, int] = {}
        for refs in train_refs:
            for r in refs:
                for w in r:
                    counts[w] = counts.get(w, 0) + 1
        typical = [np.mean([np.log(counts.get(w, 1)) for w in c]) if c else 0.0 for c in candidates]
        keep = np.argsort(typical, kind="stable")[::-1][:max_candidates]
        candidates = [candidates[i] for i in sorted(keep)]
    scores = CiderD(train_refs).score_matrix(candidates, progress=progress).mean(axis=1)
    best = int(np.argmax(scores))
    return candidates[best], float(scores[best])


def nearest_neighbour_captions(
    query: np.ndarray,
    train: np.ndarray,
    train_refs: Sequence[Sequence[Sequence[str]]],
    *,
    chunk: int = 1024,
) -> tuple[list[list[str]], np.ndarray]:
    """For each query row, the consensus caption of the most similar training row (cosine), and the
    index of that training image."""
    q = np.asarray(query, dtype=np.float64)
    t = np.asarray(train, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    nearest = np.concatenate(
        [np.argmax(q[i : i + chunk] @ t.T, axis=1) for i in range(0, len(q), chunk)]
    ).astype(int)
    consensus = consensus_captions(train_refs)
    return [list(consensus[j]) for j in nearest], nearest


def consensus_captions(refs: Sequence[Sequence[Sequence[str]]]) -> list[list[str]]:
    """Per image, the caption with the highest mean CIDEr-D against the image's other captions
    (document frequencies over all images' caption sets); a single caption is its own consensus."""
    scorer = CiderD(refs)
    out = []
    for caps in refs:
        if len(caps) == 1:
            out.append(list(caps[0]))
            continue
        scores = [scorer.score_one(c, [o for k, o in enumerate(caps) if k != j]) for j, c in enumerate(caps)]
        out.append(list(caps[int(np.argmax(scores))]))
    return out


def human_agreement_sets(
    refs: Sequence[Sequence[Sequence[str]]],
) -> tuple[list[list[list[str]]], list[list[str]], list[int]]:
    """(references, candidates, image index) for the human baseline: every reference of every image with
    at least two as a candidate against the others."""
    out_refs, out_cands, owner = [], [], []
    for i, caps in enumerate(refs):
        if len(caps) < 2:
            continue
        for j, cand in enumerate(caps):
            out_refs.append([list(c) for k, c in enumerate(caps) if k != j])
            out_cands.append(list(cand))
            owner.append(i)
    return out_refs, out_cands, owner
