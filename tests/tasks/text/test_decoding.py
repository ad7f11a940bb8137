"""Beam search, sampling and scoring against brute force on a tiny vocabulary."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from deepfeat.tasks.text.decoders import ConditionedDecoder, DecoderConfig
from deepfeat.tasks.text.decoding import (
    beam_search,
    pair_log_likelihood,
    sample,
    sequence_log_likelihood,
)
from deepfeat.tasks.text.vocabulary import EOS_ID

WORDS = [2, 3, 4, 5]  # <eos>, <unk>, two words: every index a sentence may hold


def make(arch="lrcn_2f", unit="lstm", seed=0, vocab=6) -> ConditionedDecoder:
    torch.manual_seed(seed)
    cfg = DecoderConfig(
        vocab_size=vocab, cond_dim=4, architecture=arch, unit=unit, hidden_size=8, embed_size=5
    )
    dec = ConditionedDecoder(cfg).eval()
    with torch.no_grad():  # sharper distributions, so that searches differ
        dec.out.weight.mul_(6.0)
    return dec


def all_sentences(max_length):
    """Every sentence of up to max_length words over WORDS minus <eos>, ending with <eos>."""
    content = [w for w in WORDS if w != EOS_ID]
    for n in range(max_length + 1):
        for words in itertools.product(content, repeat=n):
            yield [*words, EOS_ID]


def greedy(dec, cond, max_length, min_length=0):
    out = []
    for i in range(len(cond)):
        state = dec.start(cond[i : i + 1])
        word, sent = torch.tensor([1]), []
        for t in range(max_length):
            logits, state = dec.step(word, state)
            logits[:, :2] = -1e30  # <pad> and <bos> are never produced
            if t < min_length:
                logits[:, EOS_ID] = -1e30  # no <eos> before min_length words
            word = logits.argmax(-1)
            if int(word) == EOS_ID:
                break
            sent.append(int(word))
        out.append(sent)
    return out


@pytest.mark.parametrize("arch", ["lrcn_1u", "lrcn_2u", "lrcn_2f"])
def test_width_one_is_greedy(arch):
    dec = make(arch)
    cond = torch.randn(6, 4)
    got = beam_search(dec, cond, width=1, max_length=7)
    assert got.tokens == greedy(dec, cond, 7)
    one_word = beam_search(dec, cond, width=1, max_length=7, min_length=1)
    assert one_word.tokens == greedy(dec, cond, 7, min_length=1) and all(one_word.tokens)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_finds_the_most_probable_sentence(seed):
    dec = make(seed=seed)
    cond = torch.randn(3, 4)
    sents = list(all_sentences(4))
    scores = pair_log_likelihood(dec, cond, sents)
    got = beam_search(dec, cond, width=len(sents), max_length=4)
    for i in range(3):
        best = int(np.argmax(scores[i]))
        assert got.tokens[i] == sents[best][:-1]
        assert got.log_prob[i] == pytest.approx(scores[i, best], abs=1e-4)


def test_beam_scores_are_the_sentences_log_probabilities():
    dec = make("lrcn_2u")
    cond = torch.randn(5, 4)
    for width in (1, 3, 5):
        got = beam_search(dec, cond, width=width, max_length=6)
        want = sequence_log_likelihood(dec, cond, [[*t, EOS_ID] for t in got.tokens])
        np.testing.assert_allclose(got.log_prob, want.numpy(), atol=1e-4)


def test_batched_beam_search_equals_one_input_at_a_time():
    dec = make()
    cond = torch.randn(4, 4)
    batched = beam_search(dec, cond, width=3, max_length=6)
    for i in range(4):
        alone = beam_search(dec, cond[i : i + 1], width=3, max_length=6)
        assert alone.tokens[0] == batched.tokens[i]


def test_sampling_is_seeded_per_input_and_keeps_the_most_probable():
    dec = make()
    cond = torch.randn(3, 4)
    a = sample(dec, cond, n_samples=20, temperature=1.0, seeds=[7, 8, 9], keep_all=True)
    b = sample(dec, cond[1:2], n_samples=20, temperature=1.0, seeds=[8], keep_all=True)
    assert a.samples[1] == b.samples[0]  # independent of the batch it is drawn in
    for i in range(3):
        want = sequence_log_likelihood(
            dec, cond[i : i + 1].expand(20, -1), [[*s, EOS_ID] for s in a.samples[i]]
        )
        np.testing.assert_allclose(a.sample_log_prob[i], want.numpy(), atol=1e-4)
        assert a.tokens[i] == a.samples[i][int(np.argmax(a.sample_log_prob[i]))]
    c = sample(dec, cond, n_samples=20, temperature=1.0, seeds=[7, 8, 10], keep_all=True)
    assert c.samples[:2] == a.samples[:2] and c.samples[2] != a.samples[2]


def test_sampling_follows_the_tempered_softmax():
    dec = make(seed=3)
    cond = torch.randn(1, 4)
    for temp in (0.5, 2.0):
        got = sample(dec, cond, n_samples=4000, temperature=temp, seeds=[1], max_length=1, keep_all=True)
        first = [s[0] if s else EOS_ID for s in got.samples[0]]
        logits, _ = dec.step(torch.tensor([1]), dec.start(cond))
        logits[:, :2] = -torch.inf
        p = torch.softmax(logits[0] * temp, -1).detach().numpy()
        freq = np.bincount(first, minlength=len(p)) / len(first)
        np.testing.assert_allclose(freq, p, atol=0.03)


def test_high_inverse_temperature_sampling_is_greedy():
    dec = make()
    cond = torch.randn(4, 4)
    got = sample(dec, cond, n_samples=3, temperature=1e4, seeds=[0, 1, 2, 3], max_length=6)
    assert got.tokens == greedy(dec, cond, 6)


@pytest.mark.parametrize("arch", ["lrcn_1u", "lrcn_2u", "lrcn_2f"])
@pytest.mark.parametrize("unit", ["lstm", "rnn"])
def test_pair_scores_equal_one_pair_at_a_time(arch, unit):
    dec = make(arch, unit)
    cond = torch.randn(5, 4)
    sents = [[3, 4, EOS_ID], [EOS_ID], [5, 5, 5, 4, EOS_ID], [4, EOS_ID]]
    got = pair_log_likelihood(dec, cond, sents, pairs_per_batch=3, sentences_per_block=2)
    for i in range(5):
        want = sequence_log_likelihood(dec, cond[i : i + 1].expand(len(sents), -1), sents)
        np.testing.assert_allclose(got[i], want.numpy(), atol=1e-5)


def test_a_minimum_length_reaches_beam_search_and_sampling_through_the_strategy():
    from deepfeat.tasks.text.decoding import Strategy, generate

    dec = make(seed=4)
    with torch.no_grad():  # a model that prefers to end at once, as a briefly trained one does
        dec.out.bias.zero_()
        dec.out.bias[EOS_ID] = 8.0
    cond = torch.randn(5, 4)
    assert not any(generate(dec, cond, Strategy(beam=3), max_length=6).tokens[i] for i in range(5))
    for strategy in (Strategy(beam=3, min_length=2), Strategy(samples=8, min_length=2)):
        got = generate(dec, cond, strategy, max_length=6)
        assert all(len(t) >= 2 for t in got.tokens), strategy
    drawn = sample(dec, cond, n_samples=8, seeds=range(5), max_length=6, min_length=1, keep_all=True)
    assert all(s for row in drawn.samples for s in row)
    assert Strategy(beam=3, min_length=1).name == "beam 3, at least 1 word"
    assert Strategy(samples=8, min_length=2).to_dict()["min_length"] == 2
    assert "min_length" not in Strategy().to_dict()  # results of the exact search keep their keys
    with pytest.raises(Exception, match="min_length"):
        Strategy(min_length=-1).validate()
