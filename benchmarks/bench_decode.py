"""JPEG decoding for a 256-pixel resize: draft mode (DCT-domain downscaling) against a full decode.

Generated photo-like JPEGs (smooth gradients plus noise, quality 90) at several sizes, each decoded by
:func:`deepfeat.data.images.load_image` in full and with the draft rule deepfeat uses for a shorter-side
resize to 256 (the smallest scale of 1/2, 1/4, 1/8 that still covers it), interleaved, median of the
repeats. Besides wall time the process CPU time is recorded (on a shared machine the wall time also
measures the wait for a core).
Writes benchmarks/results/bench_decode.json. Usage: python benchmarks/bench_decode.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine
from _timing import LoadGuard, interleaved
from PIL import Image

from deepfeat.data.images import load_image
from deepfeat.data.transforms import Preprocess

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SIZES = ((500, 375), (1024, 768), (2048, 1536), (4000, 3000))


def photo(width: int, height: int, path: Path) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([(np.sin(x / 97) + np.cos(y / 53)) * 60 + 128, (x % 511) / 2, (y % 300) * 0.8], -1)
    img += rng.normal(0, 8, img.shape).astype(np.float32)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def timed(path: Path, cpu: list[float], **kw):
    """A call decoding ``path`` that appends its process CPU time to ``cpu``."""

    def call():
        start = time.process_time()
        img = load_image(path, **kw)
        cpu.append(time.process_time() - start)
        return img.size

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_decode.json")
    args = parser.parse_args(argv)
    rule = Preprocess(resize="shorter", size=256, crop=224).draft_size
    rows = {}
    with tempfile.TemporaryDirectory() as tmp, LoadGuard() as load:
        for w, h in SIZES:
            path = Path(tmp) / f"{w}x{h}.jpg"
            photo(w, h, path)
            cpu: dict[str, list[float]] = {"full": [], "draft": []}
            timings, sizes = interleaved(
                {"full": timed(path, cpu["full"]), "draft": timed(path, cpu["draft"], draft=rule)},
                repeats=args.repeats,
            )
            cpu_med = {k: statistics.median(v[1:]) for k, v in cpu.items()}
            rows[f"{w}x{h}"] = {
                "decoded_size": {k: list(v) for k, v in sizes.items()},
                "wall_ms": {k: round(1000 * d["median"], 2) for k, d in timings.items()},
                "cpu_ms": {k: round(1000 * v, 2) for k, v in cpu_med.items()},
                "cpu_speedup": round(cpu_med["full"] / cpu_med["draft"], 2),
                "wall_speedup": round(timings["full"]["median"] / timings["draft"]["median"], 2),
            }
    result = {
        "benchmark": "decode",
        "problem": "photo-like JPEG, quality 90, decoded for a shorter-side resize to 256",
        "repeats": args.repeats,
        "sizes": rows,
        "load": load.to_dict(),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
