"""InterActive activeness features vs plain forward features on the same images at the same resolution.

For each case, the time of average-pooled forward features vs activeness-weighted features in the
``last`` configuration (one backward pass per batch shared by all layers) and in the ``next``
configuration (one short backward per layer), both with p = 2, and of the InterActive recipe's whole
row set (avg and max pooling plus last / next x p = 1, 2 from one forward pass per batch). Images of two
aspect ratios (400x300 and 300x450), batch size 8, in memory. Cases:

- ``lite0_512``: EfficientNet-Lite0 (bundled weights), stage4, stage5, stage6, head, at the InterActive
  resolution (whole image, area about 512^2, sides multiples of 32, batched by shape);
- ``lite0_224``: the same layers at the backbone's own preprocessing (shorter side 256, 224 crop);
- ``alexnet_512``: AlexNet (random weights, the poster's architecture) run fully convolutionally, conv4,
  conv5, fc6, at the InterActive resolution.

The four are interleaved (``benchmarks/_timing.py``: median of ``--repeats`` >= 5 runs after a warm-up,
with the spread); the row set must give the same features as the single methods (the script exits
with status 1 when it does not). Target: ``last`` at most 2.5x the forward-only time.

Threads (torch and BLAS) are pinned to the same number for every method, the allocator is tuned once as
the ``deepfeat`` command does, and the load average before and after is recorded (``--strict`` refuses
to start on a busy machine). Writes benchmarks/results/bench_interactive.json (``--quick``:
bench_interactive.quick.json, not kept in git).

Usage: python benchmarks/bench_interactive.py [--quick] [--threads N] [--cases lite0_512,alexnet_512]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _machine import machine
from _timing import LoadGuard, interleaved, pinned_threads, ratio

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import ArrayDataset
from deepfeat.data.transforms import preset
from deepfeat.evaluation import InteractiveRecipe
from deepfeat.features.activations import LayerActivations
from deepfeat.features.activeness import Activeness
from deepfeat.features.pipeline import extract
from deepfeat.fileio import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ASPECTS = ((400, 300), (300, 450))  # (width, height) of the images
BATCH_SIZE = 8
LITE0 = ["stage4", "stage5", "stage6", "head"]
CASES = {  # name -> backbone, weights, fully convolutional, layers, preprocessing, images per aspect ratio
    "lite0_512": ("efficientnet_lite0", None, False, LITE0, "interactive", 16),
    "lite0_224": ("efficientnet_lite0", None, False, LITE0, "backbone", 16),
    "alexnet_512": ("alexnet", "random", True, ["conv4", "conv5", "fc6"], "interactive", 8),
}
TARGET_LAST = 2.5


def smooth_images(n: int, width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        f, ph = rng.uniform(2, 12, size=(3, 2)), rng.uniform(0, 6, size=(3, 2))
        for c in range(3):
            out[i, :, :, c] = 127 + 120 * np.sin(f[c, 0] * xx * 6 + ph[c, 0]) * np.cos(
                f[c, 1] * yy * 6 + ph[c, 1]
            )
    return out


def datasets(n: int) -> list[ArrayDataset]:
    """n images of each aspect ratio, one dataset per ratio."""
    return [
        ArrayDataset(
            name=f"a{w}x{h}",
            ids=[str(i) for i in range(n)],
            classes=["x"],
            targets=np.zeros(n, int),
            images=smooth_images(n, w, h, w),
        )
        for w, h in ASPECTS
    ]


def max_rel_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def run_case(name: str, n: int, repeats: int) -> dict:
    backbone, weights, dense, layers, preprocess, _ = CASES[name]
    bb = load_backbone(backbone, weights=weights, fully_convolutional=dense)
    data = datasets(n)
    sets = {
        "forward_avg": [LayerActivations(layers, ["avg"])],
        "last_p2": [Activeness(layers, "last", 2)],
        "next_p2": [Activeness(layers, "next", 2)],
        "table_row_set": InteractiveRecipe(layers).methods(),
    }

    def run(methods) -> list[dict[str, np.ndarray]]:
        out = []
        for ds in data:
            res = extract(
                ds, bb, methods, preprocess=preprocess, batch_size=BATCH_SIZE, progress=False, workers=1
            )
            out.append({key: np.asarray(fs.features) for key, fs in res.features.items()})
        return out

    times, out = interleaved({k: (lambda ms=ms: run(ms)) for k, ms in sets.items()}, repeats=repeats)
    checks = {}
    for single in ("forward_avg", "last_p2", "next_p2"):
        for key in out[single][0]:
            checks[f"{key}: {single} alone vs in the row set"] = max(
                max_rel_diff(rows[key], together[key])
                for rows, together in zip(out[single], out["table_row_set"])
            )
    prep = preset(preprocess, bb.preprocess)
    sizes = [
        list(prep.resized_size(w, h)) if prep.crop is None else [prep.crop, prep.crop] for w, h in ASPECTS
    ]
    total = n * len(ASPECTS)
    row = {
        "case": name,
        "backbone": backbone,
        "weights": weights or "bundled",
        "fully_convolutional": dense,
        "layers": layers,
        "preprocess": preprocess,
        "images": total,
        "image_sizes": [list(a) for a in ASPECTS],
        "input_sizes": sizes,
        "batch_size": BATCH_SIZE,
        "timings": times,
        "images_per_s": {k: total / t["median"] for k, t in times.items()},
        "ratio_last_over_forward": ratio(times, "last_p2", "forward_avg"),
        "ratio_next_over_forward": ratio(times, "next_p2", "forward_avg"),
        "ratio_all_rows_over_forward": ratio(times, "table_row_set", "forward_avg"),
        "target": {"last_at_most": TARGET_LAST},
        "max_relative_difference": checks,
        "agree": max(checks.values()) <= 1e-5,
    }
    row["meets_target"] = row["ratio_last_over_forward"] <= TARGET_LAST
    print(
        f"{name:12s} {total} images at {sizes}: forward {times['forward_avg']['median']:6.2f} s "
        f"(spread {times['forward_avg']['spread']:.0%}); last x{row['ratio_last_over_forward']:.2f}, "
        f"next x{row['ratio_next_over_forward']:.2f}, all rows x{row['ratio_all_rows_over_forward']:.2f}"
        + ("" if row["agree"] else "  DISAGREE"),
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images per aspect ratio, 3 repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch / BLAS threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method (5; quick: 3)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--strict", action="store_true", help="refuse to start on a busy machine")
    parser.add_argument("--out", type=Path, help="default: results/bench_interactive[.quick].json")
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; valid: {', '.join(CASES)}")
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 5 and not args.quick:
        parser.error("--repeats must be at least 5 (medians of fewer runs are for --quick only)")
    from deepfeat import tune_allocator

    tuned = tune_allocator()  # as the command line does; the same for every method compared
    with pinned_threads(args.threads) as threads, LoadGuard(strict=args.strict) as guard:
        info = machine(allocator_tuned=str(tuned), threads=str(threads))
        results = [run_case(c, 2 if args.quick else CASES[c][5], repeats) for c in cases]
    report = {
        "benchmark": "bench_interactive",
        "quick": args.quick,
        "protocol": {
            "repeats": repeats,
            "timing": "interleaved (forward_avg, last_p2, next_p2, table_row_set) after one warm-up round; "
            "medians with min, max and spread = (max - min) / median; each run extracts both aspect ratios",
            "extraction": "deepfeat.features.extract in memory (workers=1)",
            "table_row_set": "InteractiveRecipe(layers).methods(): avg and max pooling plus last / next x "
            "p = 1, 2 from one forward pass per batch",
            "check": "max_relative_difference: each single method's features vs the same rows in the row set",
        },
        "machine": info,
        "load": guard.to_dict(),
        "cases": results,
    }
    out = args.out or RESULTS / ("bench_interactive.quick.json" if args.quick else "bench_interactive.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    print(f"wrote {out}")
    if not guard.quiet:
        print(f"measured under load (load average {guard.before} -> {guard.after}): flagged quiet: false")
    if not all(r["agree"] for r in results):
        print("the row set and the single methods disagree: see max_relative_difference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
