"""Optical flow: the thesis' flow-image encoding, the direction of the flow, and flow images as a
cached image dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from deepfeat.data import flow as flow_module  # noqa: E402
from deepfeat.data.flow import FlowOptions, flow_dataset, flow_images, flow_to_image, optical_flow  # noqa: E402
from deepfeat.data.frames import frame_dataset  # noqa: E402
from deepfeat.data.video import write_video  # noqa: E402
from deepfeat.data.videosets import open_videos  # noqa: E402
from deepfeat.errors import ConfigError  # noqa: E402


def moving_square(n: int = 4, step: int = 2, axis: int = 1) -> np.ndarray:
    """A smooth bright blob moving ``step`` pixels per frame along ``axis`` (1: x, 0: y)."""
    yy, xx = np.mgrid[0:48, 0:48]
    frames = []
    for t in range(n):
        cy, cx = (16 + step * t, 20) if axis == 0 else (20, 16 + step * t)
        blob = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)
        frames.append(np.repeat(blob[..., None], 3, axis=2))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def test_encoding_centres_at_128_and_adds_the_magnitude():
    flow = np.array([[[0.0, 0.0], [1.0, -2.0], [3.0, 4.0], [100.0, -100.0]]], dtype=np.float32)
    img = flow_to_image(flow, scale=16)
    assert img.dtype == np.uint8 and img.shape == (1, 4, 3)
    assert img[0, 0].tolist() == [128, 128, 128]  # no motion
    assert img[0, 1].tolist() == [144, 96, round(128 + 16 * np.sqrt(5))]
    assert img[0, 2].tolist() == [176, 192, 208]  # |(3, 4)| = 5
    assert img[0, 3].tolist() == [255, 0, 255]  # saturates


@pytest.mark.parametrize("method", ["farneback", "tvl1"])
@pytest.mark.parametrize("axis", [0, 1])
def test_flow_points_the_way_things_move(method: str, axis: int):
    if method == "tvl1" and not hasattr(cv2, "optflow"):
        pytest.skip("TV-L1 needs opencv-contrib")
    for step in (2, -2):
        frames = moving_square(step=2, axis=axis)
        if step < 0:
            frames = frames[::-1]  # the same blob moving back
        flow = optical_flow(frames, FlowOptions(method))
        assert flow.shape == (3, 48, 48, 2)
        on_blob = frames[:-1, ..., 0] > 100
        along = flow[..., 1 - axis][on_blob].mean()  # channel 0 is x, 1 is y
        assert np.sign(along) == np.sign(step) and 0.8 < abs(along) < 3
    img = flow_images(moving_square(axis=axis), FlowOptions(method))
    assert img[..., 1 - axis][moving_square(axis=axis)[:-1, ..., 0] > 100].mean() > 140


def test_options_are_checked():
    with pytest.raises(ConfigError, match="farneback"):
        FlowOptions("brox")
    with pytest.raises(ConfigError):
        FlowOptions(scale=0)
    shrunk = optical_flow(moving_square(), FlowOptions(max_side=24))
    assert shrunk.shape[1:3] == (24, 24)


def test_flow_dataset_is_cached_per_video(tmp_path: Path, monkeypatch):
    write_video(tmp_path / "v" / "right" / "a.mp4", moving_square(6))
    write_video(tmp_path / "v" / "down" / "b.mp4", moving_square(5, axis=0))
    frames = frame_dataset(open_videos(tmp_path / "v"), progress=False)
    flows = flow_dataset(frames, FlowOptions(), cache_dir=tmp_path / "cache")
    assert len(flows) == 4 + 5  # consecutive pairs of each video
    assert flows.ids[:2] == ["down/b.mp4#flow1", "down/b.mp4#flow2"]
    assert flows.source(0).endswith("b.mp4 (flow to frame 1)")
    first = np.asarray(flows.load(5))
    assert first.shape == (48, 48, 3) and first[..., 0].max() > 140  # moving right
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # the whole video's flow, once
    # a new dataset over the same files reads the cache: no flow is computed again
    monkeypatch.setattr(flow_module, "flow_images", lambda *a, **k: pytest.fail("flow computed again"))
    again = flow_dataset(
        frame_dataset(open_videos(tmp_path / "v"), progress=False), cache_dir=tmp_path / "cache"
    )
    np.testing.assert_array_equal(np.asarray(again.load(5)), first)
    assert again.fingerprint() == flows.fingerprint()
    assert flow_dataset(frames, FlowOptions(scale=8)).fingerprint() != flows.fingerprint()
    monkeypatch.undo()
    # a damaged cache file is computed again, not trusted
    (cached,) = (tmp_path / "cache").glob("*.npz")
    cached.write_bytes(b"garbage")
    fresh = flow_dataset(
        frame_dataset(open_videos(tmp_path / "v"), progress=False), cache_dir=tmp_path / "cache"
    )
    np.testing.assert_array_equal(np.asarray(fresh.load(5)), first)


def test_a_video_too_short_for_flow_is_a_failed_video(tmp_path: Path):
    """(A one-frame video was listed as ignored but not counted among the failed videos, so the
    training warning under-counted what was left out.)"""
    write_video(tmp_path / "v" / "right" / "a.mp4", moving_square(4))
    write_video(tmp_path / "v" / "right" / "one.mp4", moving_square(1))
    frames = frame_dataset(open_videos(tmp_path / "v"), progress=False)
    flows = flow_dataset(frames)
    one = frames.videos.ids.index("right/one.mp4")
    assert (one, "fewer than 2 frames: no flow") in flows.failed_videos
    assert len(flows) == 3
