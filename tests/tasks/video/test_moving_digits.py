"""The moving-digit generator: UCF-101 layout, determinism, time-reversed twins, checked settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepfeat.data.video import probe_video, read_frames
from deepfeat.data.videosets import open_videos
from deepfeat.errors import ConfigError, DataError
from deepfeat.tasks.video.moving_digits import (
    MOTIONS,
    MovingDigits,
    load_digit_images,
    make_moving_digits,
    render_clip,
)
from tests.conftest import SHARED_DATASETS
from tests.tasks.video.conftest import TINY


def test_layout_split_lists_and_reader(tiny_videos: Path):
    assert (tiny_videos / "classInd.txt").read_text() == "1 0-left\n2 0-right\n"
    assert (tiny_videos / "trainlist01.txt").read_text().splitlines()[:2] == [
        "0-left/v_0-left_c001.mp4 1",
        "0-left/v_0-left_c002.mp4 1",
    ]
    assert (tiny_videos / "testlist01.txt").read_text().splitlines() == [
        "0-left/v_0-left_c004.mp4",
        "0-right/v_0-right_c004.mp4",
    ]
    record = json.loads((tiny_videos / "moving_digits.json").read_text())
    assert record["complete"] and record["n_train"] == 6 and record["n_test"] == 2
    videos = open_videos(tiny_videos)
    assert videos.classes == ["0-left", "0-right"] and len(videos) == 8
    assert videos.splits.tolist().count("test") == 2
    info = probe_video(videos.paths[0])
    assert (info.n_frames, info.width, info.height, info.fps) == (8, 56, 56, 25.0)


def test_same_seed_same_videos_and_a_rerun_keeps_them(tiny_videos: Path, tmp_path: Path):
    make_moving_digits(tmp_path / "again", TINY, progress=False)
    for path in sorted(tiny_videos.glob("*/*.mp4")):
        other = tmp_path / "again" / path.relative_to(tiny_videos)
        np.testing.assert_array_equal(read_frames(path)[0], read_frames(other)[0])
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "again").glob("*/*.mp4")}
    make_moving_digits(tmp_path / "again", TINY, progress=False)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # written once
    with pytest.raises(ConfigError, match="other settings"):
        make_moving_digits(tmp_path / "again", MovingDigits(seed=99), progress=False)


def test_twin_motions_are_time_reversals():
    """A clip of the second motion of a pair is a clip of the first played backwards (same draws),
    so no frame tells the two apart."""
    spec = MovingDigits(frames=10, size=56)
    digit = load_digit_images(None)[0]["train"][0][0]
    for forward, backward in [
        ("right", "left"),
        ("down", "up"),
        ("zoom-in", "zoom-out"),
        ("rotate-cw", "rotate-ccw"),
    ]:
        a, _ = render_clip(spec, forward, [digit], np.random.default_rng(5))
        b, _ = render_clip(spec, backward, [digit], np.random.default_rng(5))
        np.testing.assert_array_equal(a[::-1], b)
        assert not np.array_equal(a[0], a[-1])  # it moves
    clip, params = render_clip(spec, "right", [digit, digit], np.random.default_rng(1))
    assert clip.shape == (10, 56, 56, 3) and len(params) == 2
    right = params[0]["cx"]
    assert right[1] > right[0]  # the centre moves right


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="motion"):
        MovingDigits(motions=("sideways",)).validate()
    with pytest.raises(ConfigError, match="<digit>-<motion>"):
        MovingDigits(classes=("left",)).validate()
    with pytest.raises(ConfigError, match="clips_per_class"):
        MovingDigits(clips_per_class=1).validate()
    assert len(MovingDigits(digits=(1, 2), motions=MOTIONS).class_names()) == 16
    with pytest.raises(DataError, match="not found"):
        load_digit_images("/nonexistent/mnist.npz")


@pytest.mark.realdata
def test_mnist_digits_as_source(tmp_path: Path):
    mnist = SHARED_DATASETS / "mnist" / "mnist.npz"
    if not mnist.exists():
        pytest.skip("../shared/datasets/mnist is absent")
    pools, source = load_digit_images(mnist)
    assert pools["train"][0].shape[1:] == (28, 28) and "mnist.npz" in source
    record = make_moving_digits(tmp_path / "m", MovingDigits(digits=(7,), clips_per_class=2, frames=4), mnist)
    assert record["n_train"] == 4 and record["settings"]["digit_source"].startswith("mnist.npz")


def test_the_generators_own_description_is_not_reported_as_a_stray_file(tiny_videos):
    from deepfeat.data.videosets import video_folder

    assert (tiny_videos / "moving_digits.json").is_file()
    assert not any("moving_digits.json" in where for where, _ in video_folder(tiny_videos).ignored)
