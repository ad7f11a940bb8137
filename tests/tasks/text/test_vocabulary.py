"""The vocabulary: minimum count, unknown words, begin / end tokens, the length limit, round trips."""

from __future__ import annotations

import pytest

from deepfeat.errors import ConfigError
from deepfeat.tasks.text.vocabulary import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocabulary

CAPTIONS = [["a", "dog", "runs"], ["a", "dog", "sits"], ["a", "cat", "runs"], ["the", "dog"]]


def test_words_below_the_minimum_count_become_unknown():
    vocab = Vocabulary.build(CAPTIONS, min_count=2, max_length=10)
    assert vocab.words == [*SPECIALS, "a", "dog", "runs"]  # by count, then alphabetically
    assert vocab.encode(["a", "cat", "runs"]) == [vocab.index("a"), UNK_ID, vocab.index("runs"), EOS_ID]
    assert vocab.decode([BOS_ID, 4, 5, EOS_ID, 6]) == ["a", "dog"]
    assert vocab.decode([4, PAD_ID, 5]) == ["a", "dog"]
    assert vocab.coverage([["a", "cat"]]) == 0.5


def test_captions_are_cut_at_the_length_limit():
    vocab = Vocabulary.build(CAPTIONS, min_count=1, max_length=2)
    assert len(vocab.encode(["a", "dog", "runs"])) == 3 and vocab.encode(["a", "dog", "runs"])[-1] == EOS_ID


def test_round_trip_through_plain_data():
    vocab = Vocabulary.build(CAPTIONS, min_count=1, max_length=7)
    again = Vocabulary.from_dict(vocab.to_dict())
    assert again.words == vocab.words and again.max_length == 7 and again.counts == vocab.counts


def test_errors_name_the_remedy():
    with pytest.raises(ConfigError, match="min_count"):
        Vocabulary.build(CAPTIONS, min_count=50)
    with pytest.raises(ConfigError, match="special tokens"):
        Vocabulary(words=["a", "b"])
    with pytest.raises(ConfigError, match="damaged"):
        Vocabulary.from_dict({"nothing": 1})
