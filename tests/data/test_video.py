"""Video files: writing, probing, exact decoding, sampling, clip windows, and damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from deepfeat.data.video import (
    FrameSampling,
    VideoError,
    VideoInfo,
    clip_windows,
    probe_video,
    read_frames,
    write_video,
)
from deepfeat.errors import ConfigError, ImageError


def ramp_frames(n: int = 12, side: int = 32, seed: int = 0) -> np.ndarray:
    """Frames whose mean brightness tells their number (robust to lossy codecs)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 40, (side, side, 3))
    return np.stack([np.clip(base + 15 * i, 0, 255) for i in range(n)]).astype(np.uint8)


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_write_probe_read_round_trip(tmp_path: Path, ext: str):
    frames = ramp_frames()
    path = write_video(tmp_path / f"clip.{ext}", frames, fps=20)
    info = probe_video(path)
    assert info == VideoInfo(12, 20.0, 32, 32)
    decoded, problem = read_frames(path)
    assert problem is None and decoded.shape == frames.shape and decoded.dtype == np.uint8
    means = decoded.reshape(12, -1).mean(1)
    assert np.all(np.abs(means - frames.reshape(12, -1).mean(1)) < 6)  # lossy, but each frame in place
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed


def test_subset_of_frames_is_frame_exact(tmp_path: Path):
    path = write_video(tmp_path / "clip.mp4", ramp_frames(20))
    full, _ = read_frames(path)
    some, problem = read_frames(path, [0, 3, 4, 11, 19])
    assert problem is None
    np.testing.assert_array_equal(some, full[[0, 3, 4, 11, 19]])
    with pytest.raises(ConfigError, match="increasing"):
        read_frames(path, [3, 2])


def test_asking_past_the_end_keeps_the_frames_before(tmp_path: Path):
    path = write_video(tmp_path / "clip.mp4", ramp_frames(6))
    frames, problem = read_frames(path, [1, 5, 9])
    assert len(frames) == 2 and "ends" in problem and "frame 9" in problem


def test_damaged_files_are_errors_naming_the_path(tmp_path: Path):
    good = write_video(tmp_path / "good.avi", ramp_frames(40))
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.avi").write_text("not a video")
    data = good.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: int(0.6 * len(data))])
    for name, reason in [
        ("empty.mp4", "empty file"),
        ("text.avi", "not a video"),
        ("missing.mp4", "cannot read"),
    ]:
        with pytest.raises(VideoError, match=reason) as err:
            probe_video(tmp_path / name)
        assert name in str(err.value) and isinstance(err.value, ImageError)
    # a truncated AVI opens (its header claims 40 frames) but its stream ends early: reported, not hidden
    info = probe_video(tmp_path / "cut.avi")
    frames, problem = read_frames(tmp_path / "cut.avi", range(info.n_frames))
    assert 0 < len(frames) < 40 and problem is not None


def test_writer_refuses_what_it_cannot_write(tmp_path: Path):
    with pytest.raises(ConfigError, match="valid extensions"):
        write_video(tmp_path / "clip.gif", ramp_frames(2))
    with pytest.raises(ConfigError, match="uint8"):
        write_video(tmp_path / "clip.mp4", [np.zeros((8, 8, 3), np.float32)])


def test_frame_sampling():
    info = VideoInfo(n_frames=100, fps=25.0, width=8, height=8)
    assert FrameSampling().indices(info).tolist() == list(range(100))
    assert FrameSampling("count", 5).indices(info).tolist() == [0, 25, 50, 74, 99]
    assert FrameSampling("count", 500).indices(info).tolist() == list(range(100))
    assert FrameSampling("fps", 5).indices(info).tolist() == list(range(0, 100, 5))
    assert FrameSampling("fps", 50).indices(info).tolist() == list(range(100))  # never more than all
    assert FrameSampling("fps", 10).indices(VideoInfo(10, 0.0, 8, 8)).tolist() == [0, 3, 5, 8]  # 25/s assumed
    assert FrameSampling.parse("count:7") == FrameSampling("count", 7)
    assert FrameSampling.parse("fps:2.5") == FrameSampling("fps", 2.5)
    for bad in ("every", "count:x", "fps:0", "all:3"):
        with pytest.raises(ConfigError):
            FrameSampling.parse(bad)


def test_clip_windows_cover_the_video_as_the_thesis_tests():
    assert clip_windows(40) == [(0, 16), (8, 24), (16, 32), (24, 40)]
    assert clip_windows(20) == [(0, 16), (4, 20)]  # the last window ends at the last frame
    assert clip_windows(16) == [(0, 16)]
    assert clip_windows(10) == [(0, 10)]  # shorter than a clip: one clip of all of it
    assert clip_windows(0) == []
    assert clip_windows(9, length=4, stride=4) == [(0, 4), (4, 8), (5, 9)]
    with pytest.raises(ConfigError):
        clip_windows(10, stride=0)
