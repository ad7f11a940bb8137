"""Dense optical flow between consecutive sampled frames, encoded as three-channel images as the
thesis does (Section 4.3): the x and y flow scaled and shifted so that no motion is 128, and the flow
magnitude as the third channel. With ``scale`` s (16 by default, the setting of the LRCN release) a
pixel holds ``clip(128 + s * f, 0, 255)`` for f = dx, dy and |(dx, dy)|, rounded; motions beyond
128 / s pixels per frame saturate.

Methods (OpenCV): ``farneback`` (``cv2.calcOpticalFlowFarneback``, polynomial expansion, fast) and
``tvl1`` (TV-L1, ``cv2.optflow.DualTVL1OpticalFlow`` from opencv-contrib: closer to the Brox et al.
flow the thesis used, much slower). ``benchmarks/bench_video.py`` states the frames/s of each.

:class:`FlowDataset` makes the flow images of videos an image dataset (one item per consecutive pair
of sampled frames, ``<video id>#flow<frame number>``, named by the later frame), so that they go
through the backbone and the feature store like RGB frames. The flow images of a video are computed
once and cached in ``cache_dir`` (one compressed ``.npz`` of uint8 images per video, keyed by the
video file, the frames and the flow settings, written atomically; a damaged file is computed again).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deepfeat.data.frames import FrameDataset, SharedCache
from deepfeat.data.images import DEFAULT_MAX_PIXELS, DraftRule
from deepfeat.data.video import VideoError, opencv
from deepfeat.data.videosets import file_key
from deepfeat.errors import ConfigError
from deepfeat.fileio import atomic_write_bytes
from deepfeat.validation import check_choice, check_float, check_int

log = logging.getLogger(__name__)

FLOW_METHODS = ("farneback", "tvl1")


@dataclass(frozen=True)
class FlowOptions:
    """How flow images are made: ``method`` (farneback or tvl1), ``scale`` (image units per pixel of
    motion) and ``max_side`` (frames with a longer side are shrunk to it before the flow; None: full
    size)."""

    method: str = "farneback"
    scale: float = 16.0
    max_side: int | None = None

    def __post_init__(self) -> None:
        check_choice("flow method", self.method, FLOW_METHODS)
        check_float("flow scale", self.scale, 0, low_open=True)
        if self.max_side is not None:
            check_int("flow max_side", self.max_side, 8)

    def validate(self) -> None:
        """Check that this OpenCV provides the method (TV-L1 needs opencv-contrib)."""
        cv2 = opencv()
        if self.method == "tvl1" and not hasattr(getattr(cv2, "optflow", None), "DualTVL1OpticalFlow_create"):
            raise ConfigError(
                "flow method 'tvl1' needs cv2.optflow from opencv-contrib-python-headless; "
                "install it (one OpenCV distribution per environment) or use 'farneback'"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _gray(cv2, frame: np.ndarray, max_side: int | None) -> np.ndarray:
    gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    if max_side is not None and max(h, w) > max_side:
        f = max_side / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return gray


def optical_flow(frames: np.ndarray, options: FlowOptions | None = None) -> np.ndarray:
    """Flow (dx, dy) in pixels per frame between consecutive frames of ``frames`` (T, H, W, 3) RGB:
    float32 (T - 1, H', W', 2), where H', W' follow ``max_side``."""
    options = options or FlowOptions()
    options.validate()
    cv2 = opencv()
    if len(frames) < 2:
        return np.zeros((0, 1, 1, 2), np.float32)
    grays = [_gray(cv2, f, options.max_side) for f in frames]
    if options.method == "tvl1":
        algo = cv2.optflow.DualTVL1OpticalFlow_create()

        def pair(a, b):
            return algo.calc(a, b, None)
    else:

        def pair(a, b):
            return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)

    return np.stack([pair(a, b) for a, b in itertools.pairwise(grays)]).astype(np.float32)


def flow_to_image(flow: np.ndarray, scale: float = 16.0) -> np.ndarray:
    """Flow (..., H, W, 2) as uint8 images (..., H, W, 3): x and y centred at 128, magnitude third."""
    flow = np.asarray(flow, dtype=np.float32)
    mag = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)
    stacked = np.stack([flow[..., 0], flow[..., 1], mag], axis=-1)
    return np.clip(np.rint(128.0 + scale * stacked), 0, 255).astype(np.uint8)


def flow_images(frames: np.ndarray, options: FlowOptions | None = None) -> np.ndarray:
    """Flow images (T - 1, H', W', 3) uint8 of consecutive frames."""
    options = options or FlowOptions()
    return flow_to_image(optical_flow(frames, options), options.scale)


@dataclass
class FlowDataset(FrameDataset):
    """Flow images between consecutive sampled frames of videos (see the module docstring); build it
    with :func:`flow_dataset`."""

    frames: FrameDataset | None = None
    flow: FlowOptions = field(default_factory=FlowOptions)
    cache_dir: Path | None = None
    pair_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # position in the video

    def __post_init__(self) -> None:
        super().__post_init__()
        self._flows = SharedCache(self.cache_videos)

    def flows_of(self, video_row: int) -> tuple[np.ndarray | None, str | None]:
        """(flow images, problem) of one video: from the cache folder, else computed (and saved)."""
        return self._flows.get(("flow", video_row), lambda: self._load_or_compute(video_row))

    def _cache_path(self, video_row: int) -> Path | None:
        if self.cache_dir is None:
            return None
        frames = self.frames
        key = file_key(frames.videos.ids[video_row], frames.videos.paths[video_row])
        numbers = frames.frame_numbers[frames.slices[video_row]]
        text = key + repr(numbers.tolist()) + repr(sorted(self.flow.to_dict().items()))
        return (
            Path(self.cache_dir)
            / f"{hashlib.sha256(text.encode('utf-8', 'surrogateescape')).hexdigest()[:24]}.npz"
        )

    def _load_or_compute(self, video_row: int) -> tuple[np.ndarray | None, str | None]:
        path = self._cache_path(video_row)
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    images, problem = data["flow"], str(data["problem"])
                return images, problem or None
            except Exception as exc:  # damaged: compute again
                log.warning("flow cache file %s unreadable (%s); computing it again", path, exc)
        frames, problem = self.frames.frames_of(video_row)
        if frames is None:
            return None, problem
        images = flow_images(frames, self.flow)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.savez_compressed(buf, flow=images, problem=np.array(problem or ""))
            atomic_write_bytes(path, buf.getvalue())
        return images, problem

    def source(self, index: int) -> str:
        row = int(self.video_rows[index])
        return f"{self.frames.videos.source(row)} (flow to frame {int(self.frame_numbers[index])})"

    def load(
        self, index: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: DraftRule | None = None
    ) -> Image.Image:
        row = int(self.video_rows[index])
        images, problem = self.flows_of(row)
        position = int(self.pair_index[index])
        if images is None or position >= len(images):
            raise VideoError(self.source(index), problem or "flow not computed")
        return Image.fromarray(images[position])

    def image_size(self, index: int) -> tuple[int, int] | None:
        info = self.infos.get(int(self.video_rows[index]))
        if info is None:
            return None
        w, h, side = info.width, info.height, self.flow.max_side
        if side is not None and max(w, h) > side:
            f = side / max(w, h)
            return max(1, round(w * f)), max(1, round(h * f))
        return w, h

    def _hash_content(self, h) -> None:
        super()._hash_content(h)
        h.update(repr(sorted(self.flow.to_dict().items())).encode())


def flow_dataset(
    frames: FrameDataset, options: FlowOptions | None = None, cache_dir: str | os.PathLike | None = None
) -> FlowDataset:
    """The flow images of the videos of ``frames``: one item per consecutive pair of its frames."""
    options = options or FlowOptions()
    options.validate()
    rows, numbers, pairs = [], [], []
    for row, sl in frames.slices.items():
        count = sl.stop - sl.start
        if count >= 2:
            rows.append(np.full(count - 1, row, np.int64))
            numbers.append(frames.frame_numbers[sl][1:])
            pairs.append(np.arange(count - 1))
    if not rows:
        raise ConfigError(f"{frames.videos.name}: every video has fewer than 2 sampled frames; no flow")
    video_rows, numbers, pairs = np.concatenate(rows), np.concatenate(numbers), np.concatenate(pairs)
    videos = frames.videos
    with_flow = set(video_rows.tolist())
    short_rows = [r for r in frames.slices if r not in with_flow]
    too_short = [(videos.source(r), "fewer than 2 frames: no flow") for r in short_rows]
    return FlowDataset(
        name=f"{videos.name} flow",
        ids=[f"{videos.ids[r]}#flow{n}" for r, n in zip(video_rows.tolist(), numbers.tolist())],
        classes=list(videos.classes),
        targets=videos.targets[video_rows],
        splits=None if videos.splits is None else videos.splits[video_rows],
        ignored=list(frames.ignored) + too_short,
        videos=videos,
        video_rows=video_rows,
        frame_numbers=numbers,
        sampling=frames.sampling,
        infos=frames.infos,
        # videos left without flow count as failed too (they were dropped without being counted)
        failed_videos=list(frames.failed_videos) + [(r, "fewer than 2 frames: no flow") for r in short_rows],
        max_pixels=frames.max_pixels,
        cache_videos=frames.cache_videos,
        frames=frames,
        flow=options,
        cache_dir=None if cache_dir is None else Path(cache_dir),
        pair_index=pairs,
    )
