"""The frames of videos as an image dataset: one item per sampled frame, so per-frame features go
through the extraction pipeline and its store like images do (computed once, cached, resumable).

Items of one video are consecutive, in frame order, with ids ``<video id>#<frame number>``; every item
carries its video's label and split. A video is decoded once for all its frames (a small cache of
decoded videos, shared by the loading threads); a frame that cannot be decoded fails like a bad
image, with the video's path, the frame number and the reason, and the frames before it are kept.
Videos that cannot be opened at all are listed in ``ignored`` (and ``failed_videos``) with the reason.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from deepfeat.data.base import ImageDataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS, DraftRule
from deepfeat.data.video import FrameSampling, VideoError, VideoInfo, probe_video, read_frames
from deepfeat.data.videosets import VideoDataset, file_key
from deepfeat.errors import DataError, ImageError
from deepfeat.validation import check_int


class SharedCache:
    """A small LRU of computed values, safe for threads: a value asked for by several threads at once
    is computed by one of them while the others wait for it."""

    def __init__(self, size: int = 4):
        self.size = max(1, int(size))
        self._lock = threading.Lock()
        self._items: OrderedDict = OrderedDict()
        self._pending: dict[Hashable, threading.Event] = {}

    def get(self, key: Hashable, compute: Callable[[], object]) -> object:
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
                event = self._pending.get(key)
                owner = event is None
                if owner:
                    event = self._pending[key] = threading.Event()
            if not owner:
                event.wait()
                continue
            try:
                value = compute()
                with self._lock:
                    self._items[key] = value
                    while len(self._items) > self.size:
                        self._items.popitem(last=False)
                return value
            finally:
                with self._lock:
                    self._pending.pop(key).set()


@dataclass
class FrameDataset(ImageDataset):
    """Sampled frames of the videos of ``videos``; see the module docstring."""

    videos: VideoDataset | None = None
    video_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    frame_numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sampling: FrameSampling = field(default_factory=FrameSampling)
    infos: dict[int, VideoInfo] = field(default_factory=dict)
    failed_videos: list[tuple[int, str]] = field(default_factory=list)
    max_pixels: int = DEFAULT_MAX_PIXELS
    cache_videos: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        self._cache = SharedCache(self.cache_videos)
        starts = np.flatnonzero(np.r_[True, self.video_rows[1:] != self.video_rows[:-1]])
        stops = np.r_[starts[1:], len(self.video_rows)]
        self.slices = {int(self.video_rows[a]): slice(int(a), int(b)) for a, b in zip(starts, stops)}

    def frames_of(self, video_row: int) -> tuple[np.ndarray | None, str | None]:
        """(decoded sampled frames, problem) of one video, decoded once and cached."""
        numbers = self.frame_numbers[self.slices[video_row]]

        def decode():
            try:
                return read_frames(self.videos.paths[video_row], numbers, max_pixels=self.max_pixels)
            except ImageError as exc:
                return None, exc.reason

        return self._cache.get(("frames", video_row), decode)

    def source(self, index: int) -> str:
        return f"{self.videos.source(int(self.video_rows[index]))} (frame {int(self.frame_numbers[index])})"

    def load(
        self, index: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: DraftRule | None = None
    ) -> Image.Image:
        row = int(self.video_rows[index])
        frames, problem = self.frames_of(row)
        position = index - self.slices[row].start
        if frames is None or position >= len(frames):
            raise VideoError(self.source(index), problem or "frame not decoded")
        return Image.fromarray(frames[position])

    def image_size(self, index: int) -> tuple[int, int] | None:
        info = self.infos.get(int(self.video_rows[index]))
        return None if info is None else (info.width, info.height)

    def _hash_content(self, h) -> None:
        h.update(repr(self.sampling.to_dict()).encode())
        for row in self.slices:
            h.update(
                file_key(self.videos.ids[row], self.videos.paths[row]).encode("utf-8", "surrogateescape")
            )

    def sequences(self, rows: np.ndarray) -> dict[int, np.ndarray]:
        """Item rows (e.g. those with features) grouped by video: {video row: item rows in frame order}."""
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        out: dict[int, np.ndarray] = {}
        if rows.size == 0:
            return out
        videos = self.video_rows[rows]
        cuts = np.flatnonzero(np.diff(videos)) + 1
        for chunk in np.split(rows, cuts):
            out[int(self.video_rows[chunk[0]])] = chunk
        return out


def probe_all(
    videos: VideoDataset, *, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 2, progress: bool = True
) -> tuple[dict[int, VideoInfo], list[tuple[int, str]]]:
    """Headers of every video (threads): ({row: info}, [(row, reason)] for the videos that fail)."""
    check_int("workers", workers, 0)

    def one(row: int):
        try:
            return row, probe_video(videos.paths[row], max_pixels=max_pixels), None
        except ImageError as exc:
            return row, None, exc.reason

    rows = range(len(videos))
    bar = tqdm(total=len(videos), unit="video", desc="probe", disable=not progress, dynamic_ncols=True)
    results = []
    if workers == 0:
        for r in rows:
            results.append(one(r))
            bar.update()
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepfeat-probe") as pool:
            for res in pool.map(one, rows):
                results.append(res)
                bar.update()
    bar.close()
    infos = {r: info for r, info, _ in results if info is not None}
    failed = [(r, reason) for r, info, reason in results if info is None]
    return infos, failed


def frame_dataset(
    videos: VideoDataset,
    sampling: FrameSampling | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 2,
    progress: bool = True,
    probed: tuple[dict[int, VideoInfo], list[tuple[int, str]]] | None = None,
) -> FrameDataset:
    """The sampled frames of ``videos`` as a :class:`FrameDataset` (headers probed with ``workers``
    threads unless ``probed`` gives them)."""
    sampling = sampling or FrameSampling()
    infos, failed = (
        probed
        if probed is not None
        else probe_all(videos, max_pixels=max_pixels, workers=workers, progress=progress)
    )
    video_rows, numbers = [], []
    for row in range(len(videos)):
        if row in infos:
            idx = sampling.indices(infos[row])
            video_rows.append(np.full(len(idx), row, np.int64))
            numbers.append(idx)
    if not video_rows:
        shown = "; ".join(f"{videos.source(r)}: {why}" for r, why in failed[:3])
        raise DataError(f"{videos.name}: no video could be opened ({shown})")
    video_rows = np.concatenate(video_rows)
    numbers = np.concatenate(numbers)
    splits = None if videos.splits is None else videos.splits[video_rows]
    return FrameDataset(
        name=f"{videos.name} frames",
        ids=[f"{videos.ids[r]}#{n}" for r, n in zip(video_rows.tolist(), numbers.tolist())],
        classes=list(videos.classes),
        targets=videos.targets[video_rows],
        splits=splits,
        ignored=list(videos.ignored) + [(videos.source(r), why) for r, why in failed],
        videos=videos,
        video_rows=video_rows,
        frame_numbers=numbers,
        sampling=sampling,
        infos=infos,
        failed_videos=list(failed),
        max_pixels=max_pixels,
    )
