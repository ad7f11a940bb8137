"""Retrieval ranks and chance levels, and the baselines, against brute force."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest

from deepfeat.tasks.captioning.baselines import (
    consensus_captions,
    constant_caption,
    human_agreement_sets,
    nearest_neighbour_captions,
)
from deepfeat.tasks.captioning.retrieval import chance, first_ranks, retrieval
from deepfeat.tasks.text.metrics import cider_d


def test_ranks_of_a_known_score_matrix():
    # 3 images, 2 captions each (captions 0,1 -> image 0; 2,3 -> 1; 4,5 -> 2)
    scores = np.array(
        [
            [-1.0, -5.0, -2.0, -9.0, -9.0, -9.0],  # image 0: its caption 0 first
            [-1.0, -9.0, -3.0, -2.5, -9.0, -9.0],  # image 1: captions 3 (-2.5) at rank 2
            [-9.0, -9.0, -9.0, -9.0, -9.2, -9.5],  # image 2: caption 4 behind four captions at -9
        ]
    )
    r = retrieval(scores, [0, 0, 1, 1, 2, 2])
    assert r["ranks"]["image_to_caption"] == [1, 2, 5]
    # caption j ranks the images by column j; caption 0's tie between images 0 and 1 counts against it
    assert r["ranks"]["caption_to_image"] == [2, 1, 2, 1, 3, 3]
    assert r["image_to_caption"]["R@1"] == pytest.approx(100 / 3)
    assert r["image_to_caption"]["medr"] == 2
    assert r["caption_to_image"]["R@1"] == pytest.approx(200 / 6)
    assert r["caption_to_image"]["medr"] == 2


def test_ties_are_not_in_the_querys_favour():
    assert first_ranks(np.zeros((1, 4)), np.array([[False, True, False, False]])).tolist() == [4]


def test_chance_equals_enumeration():
    n, k_correct = 8, 2
    ranks = []
    for pos in itertools.combinations(range(n), k_correct):
        ranks.append(min(pos) + 1)
    ranks = np.array(ranks)
    c = chance(n, k_correct, ks=(1, 3))
    assert c["R@1"] == pytest.approx(100 * np.mean(ranks <= 1))
    assert c["R@3"] == pytest.approx(100 * np.mean(ranks <= 3))
    assert c["R@1"] == pytest.approx(100 * (1 - comb(6, 1) / comb(8, 1)))


def test_constant_caption_is_the_best_single_training_caption():
    refs = [
        [["a", "dog", "runs"], ["a", "dog", "on", "grass"]],
        [["a", "dog", "sits"], ["the", "brown", "dog"]],
        [["a", "cat", "sleeps"], ["a", "cat"]],
    ]
    caption, score = constant_caption(refs)
    candidates = {tuple(c) for r in refs for c in r}
    brute = {c: cider_d(refs, [list(c)] * 3)[0] for c in candidates}
    best = max(brute, key=brute.get)
    assert tuple(caption) == best and score == pytest.approx(brute[best])


def test_nearest_neighbour_takes_the_consensus_caption_of_the_closest_image():
    train_refs = [
        [["a", "red", "ball"], ["a", "red", "ball", "on", "grass"], ["blue", "sky"]],
        [["a", "cat"], ["a", "black", "cat"], ["a", "black", "cat", "sleeps"]],
    ]
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    query = np.array([[0.1, 2.0], [3.0, 0.2]])
    captions, nearest = nearest_neighbour_captions(query, train, train_refs)
    assert nearest.tolist() == [1, 0]
    assert captions == [["a", "black", "cat"], ["a", "red", "ball"]]
    assert consensus_captions([[["x"]]]) == [["x"]]


def test_human_sets_hold_each_reference_out_once():
    refs, cands, owner = human_agreement_sets([[["a"], ["b"], ["c"]], [["d"]]])
    assert cands == [["a"], ["b"], ["c"]] and owner == [0, 0, 0]
    assert refs[1] == [["a"], ["c"]]
