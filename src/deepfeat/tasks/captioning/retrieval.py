"""Retrieval as in the thesis' Tables 4.4 / 4.5: images and captions ranked by the model's caption
log-likelihood log p(caption | image).

- Image to caption: for each image, every caption of the evaluated set ranked by its likelihood given
  the image; the rank of the first of the image's own captions.
- Caption to image: for each caption, every image ranked by the caption's likelihood given the image;
  the rank of the caption's own image.

R@K: the share of queries whose first correct item is ranked K or better (in %); Medr: the median of
those ranks. Chance: the same numbers for a random ranking, exactly (hypergeometric for image to
caption, where an image has several correct captions).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import numpy as np

KS = (1, 5, 10)


def first_ranks(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """1-based rank of the best-ranked correct item per query (row). Ties count against the query:
    an incorrect item scored equal to the best correct one ranks before it."""
    scores = np.asarray(scores, dtype=float)
    best_correct = np.where(correct, scores, -np.inf).max(axis=1)
    return 1 + ((scores >= best_correct[:, None]) & ~correct).sum(axis=1)


def summarize(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict:
    out = {f"R@{k}": 100.0 * float(np.mean(ranks <= k)) for k in ks}
    out["medr"] = float(np.median(ranks))
    out["queries"] = len(ranks)
    return out


def chance(n_items: int, n_correct: int, ks: Sequence[int] = KS) -> dict:
    """R@K and median rank of the first of ``n_correct`` correct items among ``n_items`` in random order."""

    def p_within(k: int) -> float:  # P(first correct at rank <= k)
        k = min(k, n_items)
        return 1.0 - comb(n_items - n_correct, k) / comb(n_items, k)

    out = {f"R@{k}": 100.0 * p_within(k) for k in ks}
    out["medr"] = float(next(k for k in range(1, n_items + 1) if p_within(k) >= 0.5))
    return out


def retrieval(scores: np.ndarray, caption_image: Sequence[int], ks: Sequence[int] = KS) -> dict:
    """Both directions from ``scores`` (n_images, n_captions) = log p(caption j | image i), with
    ``caption_image[j]`` the image of caption j; with the chance levels for the same sizes."""
    scores = np.asarray(scores, dtype=float)
    owner = np.asarray(caption_image)
    n_images, n_captions = scores.shape
    truth = owner[None, :] == np.arange(n_images)[:, None]
    i2c = first_ranks(scores, truth)
    c2i = first_ranks(scores.T, truth.T)
    per_image = round(n_captions / max(1, n_images))
    return {
        "image_to_caption": summarize(i2c, ks),
        "caption_to_image": summarize(c2i, ks),
        "chance": {
            "image_to_caption": chance(n_captions, per_image, ks),
            "caption_to_image": chance(n_images, 1, ks),
        },
        "ranks": {"image_to_caption": i2c.tolist(), "caption_to_image": c2i.tolist()},
        "n_images": n_images,
        "n_captions": n_captions,
    }
