"""Caption metrics: worked examples computed by hand (always run), and agreement with the COCO
caption evaluation's own code (pycocoevalcap) on the same tokens to 1e-6 (skipped without it)."""

from __future__ import annotations

import importlib.util
import math
import os
import random
import shutil

import numpy as np
import pytest

from deepfeat.errors import ConfigError
from deepfeat.tasks.text.metrics import (
    CiderD,
    bleu,
    cider_d,
    meteor,
    meteor_unavailable,
    rouge_l,
    score_captions,
)

HAVE_REFERENCE = importlib.util.find_spec("pycocoevalcap") is not None
needs_reference = pytest.mark.skipif(not HAVE_REFERENCE, reason="pycocoevalcap is not installed")


def t(s: str) -> list[str]:
    return s.split()


# -- worked examples -------------------------------------------------------------------------------
def test_bleu_worked_example():
    refs = [[t("the cat sat on the mat"), t("a cat is on the mat")]]
    cand = [t("the cat the cat on the mat")]
    corpus, per = bleu(refs, cand)
    # clipped matches / candidate n-grams, counted by hand: 5/7, 3/6, 1/5, 0/4; closest reference
    # length 6 < 7, so no brevity penalty
    p = [5 / 7, 3 / 6, 1 / 5, 1e-15 / 4]
    want = [math.prod(p[: k + 1]) ** (1 / (k + 1)) for k in range(4)]
    np.testing.assert_allclose(corpus, want, rtol=1e-6)
    np.testing.assert_allclose(per[0], want, rtol=1e-6)


def test_bleu_brevity_penalty_uses_the_closest_reference_length():
    refs = [[t("a b c d e f"), t("a b c")]]
    corpus, _ = bleu(refs, [t("a b")])  # closest length 3 (|2-3| < |2-6|)
    assert corpus[0] == pytest.approx(1.0 * math.exp(1 - 3 / 2), rel=1e-6)


def test_rouge_l_worked_example():
    refs = [[t("the cat sat on the mat"), t("a cat is on the mat")]]
    _, per = rouge_l(refs, [t("the cat the cat on the mat")])
    p, r = 5 / 7, 5 / 6  # best LCS: "the cat on the mat" (5) with the first reference
    assert per[0] == pytest.approx((1 + 1.2**2) * p * r / (r + 1.2**2 * p), rel=1e-9)


def test_cider_d_worked_example():
    refs = [[t("a b")], [t("c d")]]
    corpus, per = cider_d(refs, [t("a b"), t("a b")])
    # image 1: identical unigram and bigram vectors (cosine 1), no trigrams or 4-grams: 10 x mean(1,1,0,0)
    assert per[0] == pytest.approx(5.0) and per[1] == 0.0 and corpus == pytest.approx(2.5)
    # clipping and the length penalty: candidate "a b a b" against "a b"; every idf is log 2
    _, per = cider_d(refs, [t("a b a b"), t("c d")])
    sim1 = 2 / (math.sqrt(8) * math.sqrt(2))  # min(2,1)*1 twice over |(2,2)| |(1,1)|
    sim2 = 1 / math.sqrt(5)  # min(2,1)*1 over |(2,1)| |(1)|
    penalty = math.exp(-((3 - 1) ** 2) / (2 * 6.0**2))  # 3 bigrams against 1
    assert per[0] == pytest.approx(10 * (sim1 + sim2) / 4 * penalty, rel=1e-9)


def test_cider_d_document_frequency_comes_from_the_scored_references():
    refs = [[t("a dog runs")], [t("a dog sits")], [t("a cat runs")]]
    scorer = CiderD(refs)
    assert scorer.df[("a",)] == 3 and scorer.df[("dog",)] == 2 and scorer.df[("cat",)] == 1
    # a word every image has carries no weight: "a" alone scores 0 everywhere
    assert scorer.score([t("a")] * 3)[0] == 0.0


def test_matrix_cider_equals_per_image_cider():
    rng = random.Random(0)
    words = ["a", "the", "dog", "cat", "man", "runs", "on", "grass", "red", "ball"]
    refs = [
        [[rng.choice(words) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(1, 5))]
        for _ in range(30)
    ]
    cands = [[rng.choice(words) for _ in range(rng.randint(0, 9))] for _ in range(17)] + [
        t("zebra zebra"),
        [],
    ]
    scorer = CiderD(refs)
    matrix = scorer.score_matrix(cands, chunk=5)
    for j in range(len(refs)):
        got = matrix[:, j]
        want = [scorer.score_one(c, refs[j]) for c in cands]
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_inputs_are_checked():
    with pytest.raises(ConfigError, match="candidates"):
        bleu([[t("a")]], [t("a"), t("b")])
    with pytest.raises(ConfigError, match="no reference"):
        cider_d([[]], [t("a")])
    with pytest.raises(ConfigError, match="unknown caption metric"):
        score_captions([[t("a")]], [t("a")], metrics=["spice"])


# -- against the reference implementation ----------------------------------------------------------
def random_corpus(seed, n_images=60):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(25)]
    refs = [
        [[rng.choice(vocab) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 6))]
        for _ in range(n_images)
    ]
    cands = []
    for r in refs:
        base = list(rng.choice(r))
        if rng.random() < 0.5:
            base = base[: rng.randint(0, len(base))] + [rng.choice(vocab) for _ in range(rng.randint(0, 4))]
        cands.append(base)
    cands[0] = []  # an empty candidate
    return refs, cands


def as_coco(refs, cands):
    gts = {i: [" ".join(x) for x in r] for i, r in enumerate(refs)}
    res = {i: [" ".join(c)] for i, c in enumerate(cands)}
    return gts, res


@needs_reference
@pytest.mark.parametrize("seed", [0, 1])
def test_bleu_rouge_cider_agree_with_pycocoevalcap(seed):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs, cands = random_corpus(seed)
    gts, res = as_coco(refs, cands)
    ref_bleu, ref_bleu_img = Bleu(4).compute_score(gts, res, verbose=0)
    got_bleu, got_bleu_img = bleu(refs, cands)
    np.testing.assert_allclose(got_bleu, ref_bleu, atol=1e-6)
    np.testing.assert_allclose(got_bleu_img, np.array(ref_bleu_img).T, atol=1e-6)
    ref_c, ref_c_img = Cider().compute_score(gts, res)
    got_c, got_c_img = cider_d(refs, cands)
    assert got_c == pytest.approx(ref_c, abs=1e-6)
    np.testing.assert_allclose(got_c_img, ref_c_img, atol=1e-6)
    np.testing.assert_allclose(np.diag(CiderD(refs).score_matrix(cands)), ref_c_img, atol=1e-6)
    ref_r, ref_r_img = Rouge().compute_score(gts, res)
    got_r, got_r_img = rouge_l(refs, cands)
    assert got_r == pytest.approx(ref_r, abs=1e-6)
    np.testing.assert_allclose(got_r_img, ref_r_img, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_REFERENCE or shutil.which("java") is None, reason="needs pycocoevalcap and Java")
@pytest.mark.skipif(
    os.environ.get("DEEPFEAT_METEOR_TEST") != "1",
    reason="two METEOR JVMs load WordNet and paraphrase tables (minutes on a loaded 2-core machine); "
    "run with DEEPFEAT_METEOR_TEST=1",
)
def test_meteor_agrees_with_pycocoevalcap():
    from pycocoevalcap.meteor.meteor import Meteor

    refs = [
        [t("a man rides a horse"), t("a person on a horse")],
        [t("two dogs play in the snow")],
        [t("a red car")],
    ]
    cands = [t("a man riding a horse"), t("dogs playing in snow"), t("a blue bus")]
    gts, res = as_coco(refs, cands)
    ref, ref_img = Meteor().compute_score(gts, res)
    got = meteor(refs, cands)
    assert got is not None
    assert got[0] == pytest.approx(ref, abs=1e-6)
    np.testing.assert_allclose(got[1], ref_img, atol=1e-6)


def test_meteor_is_reported_missing_rather_than_guessed(monkeypatch):
    monkeypatch.setattr("deepfeat.tasks.text.metrics.meteor_unavailable", lambda: "no Java runtime on PATH")
    scores = score_captions([[t("a b")]], [t("a b")])
    assert "meteor" not in scores.corpus and scores.unavailable["meteor"] == "no Java runtime on PATH"
    assert set(scores.corpus) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider_d", "rouge_l"}
    assert meteor_unavailable() in (None, "no Java runtime on PATH") or "meteor" in meteor_unavailable()
