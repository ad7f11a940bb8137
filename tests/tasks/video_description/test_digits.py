"""The described moving-digit generator: layout, determinism, sentences that say the true slots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepfeat.data.video import read_frames
from deepfeat.data.videosets import video_manifest
from deepfeat.errors import ConfigError
from deepfeat.tasks.text.tokenizer import tokenize
from deepfeat.tasks.video_description import DescribedDigits, make_described_digits, read_descriptions
from deepfeat.tasks.video_description.digits import MOTION_PHRASES, NUMBER_WORDS, PALETTE, describe

from .conftest import TINY


def test_layout_and_sentences_follow_the_truth(described):
    truth = json.loads((described / "truth.json").read_text())
    data = read_descriptions(described)
    parts = {t["part"] for t in truth["clips"].values()}
    assert parts == {"slots", "train", "val", "test"}
    assert sorted(set(data.splits)) == ["test", "train", "val"]
    assert len(data) == sum(TINY.clips[1:])
    for vid, sentences in zip(data.ids, data.sentences):
        t = truth["clips"][vid]
        assert len(sentences) == TINY.sentences_per_clip == len(set(sentences))
        for s in sentences:
            words = " ".join(tokenize(s))
            assert NUMBER_WORDS[int(t["digit"])] in words or t["digit"] in words
            assert any(p in words for p in MOTION_PHRASES[t["motion"]])
            other = [c for c in TINY.colours if c != t["colour"]]
            assert not any(c in words.split() for c in other)
    # every slot classifier's training list is a video manifest of the 'slots' clips
    for slot in ("digit", "motion", "colour"):
        videos = video_manifest(described / f"slot_{slot}.csv")
        assert len(videos) == TINY.clips[0]
        assert set(videos.classes) <= set(TINY.slot_values()[slot])
        for vid, target in zip(videos.ids, videos.targets):
            assert truth["clips"][vid][slot] == videos.classes[target]


def test_clips_are_coloured_as_their_slot(described):
    truth = json.loads((described / "truth.json").read_text())
    vid, t = next(iter(truth["clips"].items()))
    frames, _ = read_frames(described / vid)
    bright = frames.reshape(-1, 3)[frames.reshape(-1, 3).max(1) > 100].mean(0)
    colour = np.asarray(PALETTE[t["colour"]], float)
    assert np.argmax(bright) == np.argmax(colour)


def test_same_seed_same_set_and_rerun_keeps_files(described, tmp_path):
    again = tmp_path / "again"
    make_described_digits(again, TINY, progress=False)
    assert (again / "descriptions.csv").read_text() == (described / "descriptions.csv").read_text()
    assert json.loads((again / "truth.json").read_text()) == json.loads(
        (described / "truth.json").read_text()
    )
    stamp = (again / "clips/train/train_0000.mp4").stat().st_mtime_ns
    make_described_digits(again, TINY, progress=False)
    assert (again / "clips/train/train_0000.mp4").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="other settings"):
        make_described_digits(again, DescribedDigits(**{**TINY.__dict__, "seed": 6}), progress=False)


def test_grammar_is_varied_and_seeded():
    slots = {"digit": "7", "motion": "left", "colour": "red"}
    a = describe(slots, np.random.default_rng(1), 6)
    assert a == describe(slots, np.random.default_rng(1), 6)
    assert len(set(a)) == 6


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"digits": (1, 12)}, "digits"),
        ({"colours": ("red", "mauve")}, "colour"),
        ({"clips": (1, 2)}, "clips"),
    ],
)
def test_settings_checked(bad, match):
    with pytest.raises(ConfigError, match=match):
        DescribedDigits(**bad).validate()


def test_digits_may_be_numpy_integers():
    settings = DescribedDigits(**{**TINY.__dict__, "digits": tuple(np.arange(3))}).validate()
    assert settings.to_dict()["digits"] == [0, 1, 2]  # and written as plain JSON numbers
    assert settings.to_dict() == {**TINY.to_dict(), "digits": [0, 1, 2]}
