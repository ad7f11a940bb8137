"""Video collections (folders with UCF-101 split lists, manifests) and their frames as an image dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from deepfeat.data.frames import frame_dataset
from deepfeat.data.loader import iter_batches
from deepfeat.data.transforms import Preprocess
from deepfeat.data.video import FrameSampling, VideoError, read_frames, write_video
from deepfeat.data.videosets import open_videos, video_folder
from deepfeat.errors import DataError
from tests.data.test_video import ramp_frames


@pytest.fixture
def ucf_tree(tmp_path: Path) -> Path:
    """UCF-101's layout: videos in class folders, split lists in ucfTrainTestlist beside them."""
    root = tmp_path / "UCF-101"
    for c, name in enumerate(["Jump", "Run"]):
        for i in range(3):
            write_video(root / name / f"v_{name}_g0{i}_c01.avi", ramp_frames(6 + i, seed=10 * c + i))
    (root / "Run" / "notes.txt").write_text("not a video")
    (root / ".hidden").mkdir()
    (root / "Empty").mkdir()
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    # the official lists spell some class folders otherwise (HandStandPushups): matched without case
    (lists / "trainlist01.txt").write_text(
        "jump/v_Jump_g00_c01.avi 1\nJump/v_Jump_g01_c01.avi 1\n"
        "Run/v_Run_g00_c01.avi 2\nRun/v_Run_g09_c01.avi 2\n"
    )
    (lists / "testlist01.txt").write_text("Jump/v_Jump_g02_c01.avi\nRun/v_Run_g01_c01.avi\n")
    return root


def test_folder_with_split_lists(ucf_tree: Path):
    videos = open_videos(ucf_tree)
    assert videos.classes == ["Jump", "Run"]
    assert videos.ids == [
        "Jump/v_Jump_g00_c01.avi",
        "Jump/v_Jump_g01_c01.avi",
        "Jump/v_Jump_g02_c01.avi",
        "Run/v_Run_g00_c01.avi",
        "Run/v_Run_g01_c01.avi",
    ]
    assert videos.splits.tolist() == ["train", "train", "test", "train", "test"]
    reasons = dict(videos.ignored)
    assert reasons[str(ucf_tree / "Run" / "notes.txt")].startswith("not a video")
    assert reasons[str(ucf_tree / ".hidden")] == "hidden"
    assert reasons[str(ucf_tree / "Empty")] == "folder without video files"
    assert reasons["Run/v_Run_g02_c01.avi"].startswith("in neither")  # on disk, in no list
    assert any("v_Run_g09_c01.avi" in why for why in reasons.values())  # listed, not on disk
    test = videos.split("test")
    assert test.ids == ["Jump/v_Jump_g02_c01.avi", "Run/v_Run_g01_c01.avi"] and test.targets.tolist() == [
        0,
        1,
    ]
    assert videos.fingerprint() == open_videos(ucf_tree).fingerprint() != test.fingerprint()
    with pytest.raises(DataError, match="trainlist02"):
        video_folder(ucf_tree, split=2, lists=ucf_tree.parent / "ucfTrainTestlist")


def test_folder_without_lists_and_manifest(tmp_path: Path):
    for name in ("a", "b"):
        write_video(tmp_path / "v" / name / "x.mp4", ramp_frames(4))
    videos = open_videos(tmp_path / "v")
    assert videos.splits is None and videos.split("test") is videos  # no split: every video
    (tmp_path / "list.csv").write_text("path,label,split\nv/a/x.mp4,left,train\nv/b/x.mp4,right,test\n")
    listed = open_videos(tmp_path / "list.csv")
    assert listed.classes == ["left", "right"] and listed.splits.tolist() == ["train", "test"]
    with pytest.raises(DataError, match="no video files"):
        open_videos(tmp_path / "v" / "a")  # a class folder is not a dataset
    with pytest.raises(DataError, match="no such folder"):
        open_videos(tmp_path / "nothing")


def test_frames_as_an_image_dataset(ucf_tree: Path, tmp_path: Path):
    broken = ucf_tree / "Jump" / "v_Jump_g03_c01.avi"
    broken.write_bytes(b"RIFF not really")
    videos = open_videos(ucf_tree, lists=tmp_path / "ucfTrainTestlist")
    frames = frame_dataset(videos, progress=False, workers=0)
    # every listed, decodable video contributes all its frames, in order, with its label and split
    assert len(frames) == 6 + 7 + 8 + 6 + 7
    assert frames.ids[:2] == ["Jump/v_Jump_g00_c01.avi#0", "Jump/v_Jump_g00_c01.avi#1"]
    assert frames.targets.tolist() == [0] * 21 + [1] * 13
    assert frames.splits.tolist()[13:21] == ["test"] * 8
    decoded, _ = read_frames(videos.paths[2])
    np.testing.assert_array_equal(np.asarray(frames.load(13 + 3)), decoded[3])
    assert frames.source(16).endswith("v_Jump_g02_c01.avi (frame 3)")
    assert frames.sequences(np.arange(len(frames)))[2].tolist() == list(range(13, 21))
    sampled = frame_dataset(videos, FrameSampling("count", 3), progress=False)
    assert sampled.frame_numbers[:3].tolist() == [0, 2, 5] and len(sampled) == 15
    assert sampled.fingerprint() != frames.fingerprint()


def test_bad_videos_are_reported_and_good_frames_kept(tmp_path: Path):
    root = tmp_path / "v"
    good = write_video(root / "a" / "good.avi", ramp_frames(40))
    data = good.read_bytes()
    (root / "a" / "cut.avi").write_bytes(data[: int(0.6 * len(data))])
    (root / "b" / "zero.mp4").parent.mkdir(parents=True)
    (root / "b" / "zero.mp4").write_bytes(b"")
    write_video(root / "b" / "ok.mp4", ramp_frames(5))
    frames = frame_dataset(open_videos(root), progress=False)
    assert [(Path(p).name, why) for p, why in frames.ignored] == [("zero.mp4", "empty file (0 bytes)")]
    assert [(r, why) for r, why in frames.failed_videos] == [(3, "empty file (0 bytes)")]
    # the truncated AVI's header promises 40 frames: those past the break fail like bad images
    prep = Preprocess(resize="warp", size=16, crop=None)
    cut_rows = np.flatnonzero(frames.video_rows == 0)
    batches = list(iter_batches(frames, cut_rows, prep, batch_size=8, workers=2))
    ok = sum(len(b.ok) for b in batches)
    errors = {r: e for b in batches for r, e in b.errors.items()}
    assert 0 < ok < 40 and len(errors) == 40 - ok
    err = next(iter(errors.values()))
    assert isinstance(err, VideoError) and "cut.avi (frame" in err.path and "ends" in err.reason
