"""Video files: probing, decoding, writing, frame sampling and clip windows, with OpenCV.

Why OpenCV (``opencv-contrib-python-headless``) and not PyAV: optical flow needs OpenCV anyway
(Farneback; TV-L1 from contrib's ``cv2.optflow``), and its wheels bundle FFmpeg, so one dependency
reads and writes the codecs users meet (UCF-101's XVID AVI, MPEG-4 and H.264 MP4, MJPEG) where PyAV
would add a second FFmpeg build (about 100 MB more). ``benchmarks/bench_video.py`` measured both on
the generated clips: decode speed, behaviour on damaged files and frame-accurate seeking (results in
``benchmarks/results/bench_video.json``). Decoding here is sequential (grab every frame, convert only
the ones kept), so frame numbers are exact whatever the container's index says.

What becomes a :class:`VideoError` naming the file and the reason: missing, empty and unreadable
files, files no decoder opens, frames larger than ``max_pixels``; a stream that ends before the
frames its header announces is reported by :func:`read_frames` (the frames before are kept).

Frame numbers count from 0 in decoding order. Clip windows follow the thesis (Section 4.3): 16
frames with a stride of 8 at test time, plus a last window ending at the last frame when the stride
does not reach it, so every frame is covered.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfeat.data.images import DEFAULT_MAX_PIXELS, printable
from deepfeat.errors import ConfigError, ImageError
from deepfeat.validation import check_choice, check_float, check_int

VIDEO_EXTENSIONS = (".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv")
#: FourCC used by :func:`write_video` per file extension (all encode with OpenCV's bundled FFmpeg).
WRITER_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "XVID", ".mkv": "XVID", ".mov": "mp4v"}
SAMPLING_MODES = ("all", "fps", "count")
#: Frames per second assumed for fixed-rate sampling when a file does not state its rate.
FALLBACK_FPS = 25.0


class VideoError(ImageError):
    """A video (or one of its frames) cannot be used; carries the path and the reason. A subclass
    of ImageError, so the extraction pipeline reports bad frames like bad images."""


def opencv():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - a declared extra
        raise ConfigError(
            "video input needs OpenCV: pip install 'deepfeat[video]' (opencv-contrib-python-headless)"
        ) from exc
    return cv2


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: frame count, frame rate (0 when unknown), frame size."""

    n_frames: int
    fps: float
    width: int
    height: int

    def to_dict(self) -> dict:
        return {"n_frames": self.n_frames, "fps": self.fps, "width": self.width, "height": self.height}


def _check_file(path: Path) -> str:
    where = printable(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VideoError(where, f"cannot read file ({exc.strerror or exc})") from exc
    if not path.is_file():
        raise VideoError(where, "not a regular file")
    if size == 0:
        raise VideoError(where, "empty file (0 bytes)")
    return where


def _open(path: Path):
    cv2 = opencv()
    where = _check_file(path)
    cap = cv2.VideoCapture(os.fspath(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not cap.isOpened():
        cap.release()
        raise VideoError(where, "not a video file any decoder opens (damaged, truncated or unknown format)")
    return cap, where


def probe_video(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """Frame count, rate and size of the video at ``path`` from its header; when the header gives no
    frame count the frames are counted by decoding. Raises :class:`VideoError`."""
    cv2 = opencv()
    cap, where = _open(Path(path))
    try:
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            n = 0
            while cap.grab():
                n += 1
    finally:
        cap.release()
    if width * height > max_pixels:
        raise VideoError(where, f"frames of {width}x{height} exceed the limit of {max_pixels} pixels")
    if n == 0 or width <= 0 or height <= 0:
        raise VideoError(where, "the video holds no frame")
    return VideoInfo(n, fps if math.isfinite(fps) and fps > 0 else 0.0, width, height)


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, str | None]:
    """Decode the frames ``indices`` (sorted frame numbers; None: all) of the video at ``path``.

    Returns (frames, problem): a uint8 array (k, H, W, 3) in RGB holding the first k requested frames,
    and None when all were decoded, else why the others were not (the stream ended early or broke).
    Raises :class:`VideoError` when the file cannot be opened at all.
    """
    cv2 = opencv()
    wanted = None if indices is None else np.asarray(indices, dtype=np.int64)
    if wanted is not None and wanted.size and (np.any(np.diff(wanted) <= 0) or wanted[0] < 0):
        raise ConfigError("frame indices must be increasing and non-negative")
    cap, where = _open(Path(path))
    frames: list[np.ndarray] = []
    problem = None
    try:
        last = None if wanted is None else (int(wanted[-1]) if wanted.size else -1)
        k, i = 0, 0
        while last is None or i <= last:
            if not cap.grab():
                if last is not None:
                    problem = (
                        f"the stream ends (or breaks) after {i} frames; frame {int(wanted[k])} was asked"
                    )
                break
            if wanted is None or i == wanted[k]:
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    problem = f"frame {i} cannot be decoded"
                    break
                if bgr.shape[0] * bgr.shape[1] > max_pixels:
                    raise VideoError(
                        where,
                        f"frames of {bgr.shape[1]}x{bgr.shape[0]} exceed the limit of {max_pixels} pixels",
                    )
                frames.append(_to_rgb(cv2, bgr))
                k += 1
            i += 1
    finally:
        cap.release()
    if not frames:
        if problem is None and wanted is not None and wanted.size == 0:
            return np.zeros((0, 1, 1, 3), np.uint8), None
        raise VideoError(where, problem or "the video holds no decodable frame")
    return np.stack(frames), problem


def _to_rgb(cv2, frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: float = 25.0,
    codec: str | None = None,
) -> Path:
    """Write RGB uint8 frames (T, H, W, 3) as a video file; the codec follows the extension (see
    :data:`WRITER_CODECS`) unless ``codec`` (a FourCC) is given; missing folders are made. Written to
    a temporary name and renamed, so an interrupted write never leaves a half file under ``path``."""
    cv2 = opencv()
    path = Path(path)
    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise ConfigError(f"{printable(path)}: no frames to write")
    h, w = frames[0].shape[:2]
    if any(f.shape != (h, w, 3) or f.dtype != np.uint8 for f in frames):
        raise ConfigError(f"{printable(path)}: frames must all be uint8 ({h}, {w}, 3) RGB arrays")
    ext = path.suffix.lower()
    fourcc = codec or WRITER_CODECS.get(ext)
    if fourcc is None:
        raise ConfigError(
            f"{printable(path)}: cannot choose a codec for {ext!r}; "
            f"valid extensions: {', '.join(WRITER_CODECS)}"
        )
    check_float("fps", fps, 0, low_open=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{ext}")
    writer = cv2.VideoWriter(os.fspath(tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
    try:
        if not writer.isOpened():
            raise ConfigError(f"{printable(path)}: OpenCV cannot write {fourcc!r} video here")
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
        os.replace(tmp, path)
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a video are used: ``"all"``, a fixed rate (``"fps"``: ``value`` frames per
    second of video, by the file's own rate) or a fixed number (``"count"``: ``value`` frames evenly
    spread over the video; fewer when the video is shorter)."""

    mode: str = "all"
    value: float | None = None

    def __post_init__(self) -> None:
        check_choice("frame sampling", self.mode, SAMPLING_MODES)
        if self.mode == "all":
            if self.value is not None:
                raise ConfigError("frame sampling 'all' takes no value")
        elif self.mode == "fps":
            check_float("frame sampling rate (frames per second)", self.value, 0, low_open=True)
        else:
            check_int("frame sampling count", self.value, 1)

    def indices(self, info: VideoInfo) -> np.ndarray:
        """Frame numbers (increasing) chosen from a video described by ``info``."""
        n = info.n_frames
        if self.mode == "all":
            return np.arange(n)
        if self.mode == "count":
            k = min(int(self.value), n)
            return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))
        rate = info.fps or FALLBACK_FPS
        step = rate / float(self.value)
        if step <= 1:
            return np.arange(n)
        return np.unique(np.floor(np.arange(0, n - 0.5, step) + 0.5).astype(np.int64))

    def to_dict(self) -> dict:
        return {"mode": self.mode, "value": self.value}

    @classmethod
    def parse(cls, text: str) -> FrameSampling:
        """From ``all``, ``fps:R`` or ``count:N``."""
        mode, _, value = str(text).strip().partition(":")
        if mode not in SAMPLING_MODES:
            check_choice("frame sampling", mode, SAMPLING_MODES)
        if mode == "all":
            return cls("all") if not value else cls("all", value)  # the second raises
        try:
            number = float(value) if mode == "fps" else int(value)
        except ValueError:
            raise ConfigError(f"frame sampling {text!r}: give fps:RATE or count:N, e.g. count:32") from None
        return cls(mode, number)


def clip_windows(n_frames: int, length: int = 16, stride: int = 8) -> list[tuple[int, int]]:
    """(start, stop) windows of ``length`` frames every ``stride`` frames covering ``n_frames``; the
    last window ends at the last frame; a video shorter than ``length`` is one window of all of it."""
    check_int("clip length", length, 1)
    check_int("clip stride", stride, 1)
    if n_frames <= 0:
        return []
    if n_frames <= length:
        return [(0, n_frames)]
    out = [(s, s + length) for s in range(0, n_frames - length + 1, stride)]
    if out[-1][1] < n_frames:
        out.append((n_frames - length, n_frames))
    return out
