"""Video input speed and the decoder choice.

(a) Decoder choice, OpenCV vs PyAV (when ``av`` is importable): installed size, decode speed (frames/s,
    every frame to an RGB array) on generated clips of the two shapes users meet here (64x64 MPEG-4
    moving digits; 320x240 XVID AVI like UCF-101's), behaviour on damaged files (empty, text, random
    bytes, truncated at 30% and 60%), and frame-accurate seeking (seek to frame k, compare with the
    k-th frame of a sequential decode) for both codecs.
(b) Frames decoded and through the CNN (deepfeat's frame dataset into ``extract``: decoding threads
    ahead of the forward pass) against the bare forward pass of the same frames already decoded and
    preprocessed in memory (the ceiling; target: >= 0.8x its rate), and against a plain loop (decode
    with OpenCV in the main thread, preprocess, forward; no prefetch). Interleaved medians.
(c) Optical flow frames/s (Farneback; TV-L1 from opencv-contrib) at both shapes, and flow images
    through the CNN.

Writes benchmarks/results/bench_video.json (``--quick``: bench_video.quick.json, not kept in git).
Usage: python benchmarks/bench_video.py [--quick]
(PyAV is not a dependency: ``pip install av`` into a separate folder and put it on PYTHONPATH to
include it.)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from _timing import LoadGuard, interleaved, pinned_threads

RESULTS = Path(__file__).resolve().parent / "results"


# -- clips ---------------------------------------------------------------------------------------
def digit_clips(folder: Path, n: int, frames: int) -> list[Path]:
    from deepfeat.tasks.video import MovingDigits, make_moving_digits

    spec = MovingDigits(digits=(3,), motions=("left", "right"), clips_per_class=max(2, n // 2), frames=frames)
    make_moving_digits(folder, spec, progress=False)
    return sorted(folder.glob("*/*.mp4"))[:n]


def panning_clips(folder: Path, n: int, frames: int) -> list[Path]:
    """320x240 XVID AVIs panning over scikit-image photos (UCF-101's size and codec)."""
    import skimage.data
    from PIL import Image

    from deepfeat.data.video import write_video

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    paths = []
    for i in range(n):
        big = np.asarray(Image.fromarray(photos[i % 4]).resize((480, 360)))
        clip = np.stack([big[20 : 20 + 240, 3 * t : 3 * t + 320] for t in range(frames)])
        paths.append(write_video(folder / "pan" / f"v_{i:03d}.avi", clip))
    return paths


# -- (a) decoders --------------------------------------------------------------------------------
def dist_size(name: str) -> float | None:
    """Installed size of a distribution (MiB), from its RECORD."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    return total / 2**20


def decode_cv2(path) -> np.ndarray:
    from deepfeat.data.video import read_frames

    return read_frames(path)[0]


def decode_av(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def seek_cv2(path, k: int) -> np.ndarray:
    from deepfeat.data.video import opencv

    cv2 = opencv()
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    cap.set(cv2.CAP_PROP_POS_FRAMES, k)
    ok, frame = cap.read()
    cap.release()
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok else None


def seek_av(path, k: int) -> np.ndarray:
    """PyAV: seek to the keyframe at or before frame k by its timestamp, decode forward to frame k."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        target = round(k / float(rate) / float(stream.time_base)) + (stream.start_time or 0)
        container.seek(target, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is not None and frame.pts >= target:
                return frame.to_ndarray(format="rgb24")
    return None


def damaged_files(folder: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {
        "empty": b"",
        "text": b"this is not a video\n",
        "random_bytes": np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes(),
        "truncated_30pct": data[: int(0.3 * len(data))],
        "truncated_60pct": data[: int(0.6 * len(data))],
    }
    out = {}
    for name, content in files.items():
        p = folder / f"{name}{good.suffix}"
        p.write_bytes(content)
        out[name] = p
    return out


def read_as_deepfeat(path):
    """How deepfeat's frame dataset reads a file: the header's frame count, then those frames."""
    from deepfeat.data.video import probe_video, read_frames

    return read_frames(path, range(probe_video(path).n_frames))


def robustness(decode, files: dict[str, Path], n_good: int) -> dict:
    out = {}
    for name, path in files.items():
        try:
            frames = decode(path)
            problem = None
            if isinstance(frames, tuple):
                frames, problem = frames
            said = f"; reported: {problem}" if problem else " without an error"
            out[name] = f"returned {len(frames)} of {n_good} frames{said}"
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {str(exc).replace(str(path.parent), '')[:110]}"
    return out


def bench_decoders(clips: dict[str, list[Path]], work: Path, repeats: int) -> dict:
    try:
        import av

        have_av = av.__version__
    except ImportError:
        have_av = None
    out = {
        "installed_mib": {
            "opencv-contrib-python-headless": dist_size("opencv-contrib-python-headless"),
            "av": dist_size("av"),
        },
        "pyav_version": have_av,
    }
    for shape, paths in clips.items():
        methods = {"opencv": lambda p=paths: [decode_cv2(x) for x in p]}
        if have_av:
            methods["pyav"] = lambda p=paths: [decode_av(x) for x in p]
        timings, results = interleaved(methods, repeats=repeats)
        n_frames = sum(len(v) for v in results["opencv"])
        entry = {name: n_frames / t["median"] for name, t in timings.items()}
        entry = {
            "frames": n_frames,
            "frames_per_s": entry,
            "spread": {k: t["spread"] for k, t in timings.items()},
        }
        if have_av:
            entry["same_pixels"] = all(
                np.array_equal(a, b) for a, b in zip(results["opencv"], results["pyav"])
            )
        seq = decode_cv2(paths[0])
        ks = list(range(0, len(seq), max(1, len(seq) // 8)))
        entry["seek_exact_frames"] = {
            "opencv": sum(np.array_equal(seek_cv2(paths[0], k), seq[k]) for k in ks) / len(ks)
        }
        if have_av:
            entry["seek_exact_frames"]["pyav"] = sum(
                np.array_equal(seek_av(paths[0], k), seq[k]) for k in ks
            ) / len(ks)
        entry["seek_positions_tried"] = ks
        folder = work / f"damaged-{shape}"
        folder.mkdir(parents=True, exist_ok=True)
        damaged = damaged_files(folder, paths[0])
        entry["damaged_files"] = {
            "opencv (deepfeat.data.video)": robustness(read_as_deepfeat, damaged, len(seq))
        }
        if have_av:
            entry["damaged_files"]["pyav"] = robustness(decode_av, damaged, len(seq))
        out[shape] = entry
    return out


# -- (b) frames through the CNN ------------------------------------------------------------------
def bench_cnn(paths: list[Path], backbone, input_size: int | None, repeats: int, batch: int = 32) -> dict:
    from deepfeat.data.frames import frame_dataset
    from deepfeat.data.video import opencv
    from deepfeat.data.videosets import VideoDataset
    from deepfeat.features.capture import LayerCapture
    from deepfeat.features.pipeline import extract
    from deepfeat.tasks.video import FrameFeatures, GridPooled
    from deepfeat.tasks.video.features import grid_pool

    videos = VideoDataset(
        "bench", [p.name for p in paths], list(paths), ["x"], np.zeros(len(paths), np.int64)
    )
    spec = FrameFeatures(layer="head", grid=2, input_size=input_size, batch_size=batch)
    prep = spec.resolve_preprocess(backbone)
    frames = frame_dataset(videos, progress=False)
    n = len(frames)
    from PIL import Image

    decoded = [prep(frames.load(i)) for i in range(n)]
    batches = [prep.to_batch(decoded[i : i + batch]) for i in range(0, n, batch)]
    model = backbone.module
    layer = backbone.catalog.resolve(["head"])

    def bare():
        with torch.inference_mode():
            for x in batches:
                model(x.contiguous(memory_format=torch.channels_last))

    def ours():
        fresh = frame_dataset(videos, progress=False)  # nothing cached: every video decoded again
        return extract(
            fresh, backbone, [GridPooled("head", 2)], preprocess=prep, batch_size=batch, progress=False
        )

    cv2 = opencv()

    def plain():
        out = []
        with torch.inference_mode(), LayerCapture(backbone, layer) as cap:
            pending = []
            for p in paths:
                c = cv2.VideoCapture(str(p))
                while True:
                    ok, f = c.read()
                    if not ok:
                        break
                    pending.append(prep(Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))))
                    if len(pending) == batch:
                        out.append(grid_pool(cap.run(prep.to_batch(pending))["head"], 2))
                        pending = []
            if pending:
                out.append(grid_pool(cap.run(prep.to_batch(pending))["head"], 2))
        return torch.cat(out)

    timings, results = interleaved(
        {"bare_forward": bare, "deepfeat": ours, "plain_loop": plain}, repeats=repeats
    )
    ours_feats = np.asarray(next(iter(results["deepfeat"].features.values())).features)
    diff = float(np.abs(ours_feats - results["plain_loop"].numpy()).max())
    rate = {k: n / t["median"] for k, t in timings.items()}
    return {
        "frames": n,
        "frame_size": [frames.infos[0].width, frames.infos[0].height],
        "preprocess": prep.to_dict(),
        "frames_per_s": rate,
        "spread": {k: t["spread"] for k, t in timings.items()},
        "ratio_deepfeat_vs_bare": rate["deepfeat"] / rate["bare_forward"],
        "ratio_deepfeat_vs_plain_loop": rate["deepfeat"] / rate["plain_loop"],
        "max_abs_diff_deepfeat_vs_plain_loop": diff,
        "target_ratio_vs_bare": 0.8,
    }


# -- (c) flow ------------------------------------------------------------------------------------
def bench_flow(clips: dict[str, list[Path]], repeats: int) -> dict:
    from deepfeat.data.flow import FlowOptions, flow_images

    out = {}
    for shape, paths in clips.items():
        frames = decode_cv2(paths[0])
        methods = {m: (lambda m=m, f=frames: flow_images(f, FlowOptions(m))) for m in ("farneback", "tvl1")}
        timings, _ = interleaved(methods, repeats=repeats, warmup=0 if shape == "320x240" else 1)
        out[shape] = {
            "pairs": len(frames) - 1,
            "flow_images_per_s": {m: (len(frames) - 1) / t["median"] for m, t in timings.items()},
            "spread": {m: t["spread"] for m, t in timings.items()},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer clips and repeats (3, not 5)")
    args = parser.parse_args()
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    from deepfeat.backbones import load_backbone

    repeats = 3 if args.quick else 5
    backbone = load_backbone()
    result = {"benchmark": "bench_video"}
    with tempfile.TemporaryDirectory() as tmp, pinned_threads() as threads, LoadGuard() as guard:
        work = Path(tmp)
        start = time.perf_counter()
        clips = {
            "64x64": digit_clips(work / "digits", 4 if args.quick else 8, 24),
            "320x240": panning_clips(work, 2 if args.quick else 4, 24),
        }
        result["decoders"] = bench_decoders(clips, work, repeats)
        result["cnn"] = {
            "64x64 frames at 64 (warped whole)": bench_cnn(clips["64x64"], backbone, 64, repeats),
            "320x240 frames at 224 (backbone preprocessing)": bench_cnn(
                clips["320x240"], backbone, None, repeats
            ),
        }
        result["flow"] = bench_flow(clips, repeats)
        result["seconds"] = time.perf_counter() - start
    result["machine"] = machine(threads=str(threads))
    result["load"] = guard.to_dict()
    result["repeats"] = repeats
    result["note"] = (
        "quiet machine: other processes used at most 10% of the cores (load.others_cpu_fraction)"
        if guard.quiet
        else "NOT quiet: other processes shared the cores during the run (see load)"
    )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("bench_video.quick.json" if args.quick else "bench_video.json")
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps(result, indent=2, default=float))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
