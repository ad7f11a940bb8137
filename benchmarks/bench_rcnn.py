"""R-CNN region-feature speed on EfficientNet-Lite0 (bundled weights), one VOC photo.

(a) Warped crops: regions/s of deepfeat's ``RegionEncoder`` in warp mode (normalise the image once,
    warp every dilated box with one ``roi_align`` call, capture the layers in one pass, pool) against
    the bare forward pass of the same network on crops of the same size already in memory (the
    ceiling; target: >= 0.9x of it), and against the common way of warping (PIL crop + resize of every
    region, then normalise and stack, then the same forward pass).
(b) Shared-map region features (one forward pass per image, regions RoI-aligned from the map) against
    warped crops, per image, for several proposal counts (target: >= 20x faster at the thesis' ~2000
    proposals). Warped time grows linearly with the number of regions (fixed batches): it is
    measured at the smaller counts and, at the larger ones, extrapolated from its measured
    per-region time (said so in the JSON); the shared-map time is measured at every count.

Timings are interleaved medians (benchmarks/_timing.py) with the load average recorded; this machine
is shared, so a run taken under load says ``quiet: false``.

Writes benchmarks/results/bench_rcnn.json. Usage: python benchmarks/bench_rcnn.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine
from _timing import LoadGuard, interleaved, pinned_threads

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = Path(
    os.environ.get("DEEPFEAT_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)
SHARED = DATASETS / "voc07_5class" / "JPEGImages"


def photo() -> np.ndarray:
    """A VOC photo when ../shared is present, else scikit-image's coffee at VOC size."""
    from PIL import Image

    if (SHARED / "000005.jpg").is_file():
        return np.asarray(Image.open(SHARED / "000005.jpg").convert("RGB"))
    import skimage.data

    return np.asarray(Image.fromarray(skimage.data.coffee()).resize((500, 375)))


def boxes_for(image: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    from deepfeat.tasks.detection.proposals import ProposalOptions, selective_search

    found = selective_search(image, ProposalOptions(max_proposals=max(n, 1)))
    if len(found) >= n:
        return found[:n]
    rng = np.random.default_rng(seed)  # pad with random boxes (a small image has fewer proposals)
    h, w = image.shape[:2]
    xy = rng.uniform(0, [w * 0.7, h * 0.7], (n - len(found), 2))
    wh = rng.uniform(20, [w * 0.3, h * 0.3], (n - len(found), 2))
    return np.concatenate([found, np.concatenate([xy, xy + wh], axis=1).astype(np.float32)])


def pil_warp(image: np.ndarray, boxes: np.ndarray, size: int, padding: int, prep) -> torch.Tensor:
    """The common loop: crop every dilated box with PIL (outside: black), resize, normalise, stack."""
    from PIL import Image

    from deepfeat.tasks.detection.boxes import context_boxes

    pil = Image.fromarray(image)
    crops = [
        np.asarray(pil.crop(tuple(float(v) for v in b)).resize((size, size), Image.Resampling.BILINEAR))
        for b in context_boxes(boxes, size, padding)
    ]
    return prep.to_batch(crops, channels_last=True)


def bench_warp(backbone, image, n: int, size: int, batch: int, repeats: int) -> dict:
    from deepfeat.tasks.detection.regions import RegionEncoder, RegionOptions, normalised, warp_regions

    boxes = boxes_for(image, n)
    opts = RegionOptions(size=size, padding=16)
    enc_one = RegionEncoder(backbone, [("pool", "avg")], opts, batch_size=batch)
    enc_two = RegionEncoder(backbone, [("pool", "avg"), ("stage7", "grid3")], opts, batch_size=batch)
    crops = warp_regions(normalised(image, backbone.preprocess), boxes, size, 16)
    crops = crops.contiguous(memory_format=torch.channels_last)
    model = backbone.module

    def bare():
        with torch.inference_mode():
            for i in range(0, n, batch):
                model(crops[i : i + batch])

    def pil_loop():
        x = pil_warp(image, boxes, size, 16, backbone.preprocess)
        with torch.inference_mode():
            for i in range(0, n, batch):
                model(x[i : i + batch])

    timings, _ = interleaved(
        {
            "bare_forward": bare,
            "deepfeat_warp_pool": lambda: enc_one.encode(image, boxes),
            "deepfeat_warp_pool+stage7grid3": lambda: enc_two.encode(image, boxes),
            "pil_crop_resize_loop": pil_loop,
        },
        repeats=repeats,
    )
    out = {"regions": n, "crop": size, "batch": batch, "timings_s": timings}
    out["regions_per_s"] = {k: n / v["median"] for k, v in timings.items()}
    out["rate_vs_bare"] = {k: timings["bare_forward"]["median"] / v["median"] for k, v in timings.items()}
    return out


def bench_shared(backbone, image, counts: list[int], warp_counts: list[int], repeats: int) -> dict:
    from deepfeat.tasks.detection.regions import RegionEncoder, RegionOptions

    shared = RegionEncoder(backbone, [("head", "avg")], RegionOptions(mode="shared"), batch_size=64)
    warped = RegionEncoder(backbone, [("pool", "avg")], RegionOptions(), batch_size=64)
    rows = []
    per_region = None
    for n in counts:
        boxes = boxes_for(image, n)
        methods = {"shared_map": lambda b=boxes: shared.encode(image, b)}
        if n in warp_counts:
            methods["warped"] = lambda b=boxes: warped.encode(image, b)
        timings, _ = interleaved(methods, repeats=repeats)
        row = {
            "regions": n,
            "shared_s": timings["shared_map"]["median"],
            "shared_spread": timings["shared_map"]["spread"],
        }
        if "warped" in timings:
            row["warped_s"] = timings["warped"]["median"]
            row["warped_measured"] = True
            per_region = row["warped_s"] / n
        else:
            row["warped_s"] = per_region * n
            row["warped_measured"] = False  # extrapolated from the measured per-region time
        row["speedup"] = row["warped_s"] / row["shared_s"]
        rows.append(row)
    return {"image_size": list(image.shape[:2]), "shared_size": 600, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer regions (the same 5 repeats)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    from deepfeat import tune_allocator
    from deepfeat.backbones import load_backbone

    tuned = tune_allocator()  # as the command line does; the same for every method compared

    backbone = load_backbone("efficientnet_lite0")
    image = photo()
    repeats = 5
    report = {
        "machine": machine(),
        "settings": {**vars(args), "allocator_tuned": tuned, "repeats": repeats},
    }
    with pinned_threads(args.threads) as threads, LoadGuard() as guard:
        report["threads"] = threads
        report["warp"] = [
            bench_warp(backbone, image, n, size, 32, repeats)
            for n, size in ([(64, 224)] if args.quick else [(128, 224), (128, 128)])
        ]
        counts = [64, 500, 2000] if args.quick else [64, 128, 500, 2000]
        report["shared_vs_warped"] = bench_shared(
            backbone, image, counts, counts[: 1 if args.quick else 2], repeats
        )
    report["load"] = guard.to_dict()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "bench_rcnn.json"
    path.write_text(json.dumps(report, indent=1))
    for w in report["warp"]:
        print(
            f"warp {w['regions']} x {w['crop']}px:",
            {k: f"{v:.1f}/s ({w['rate_vs_bare'][k]:.2f}x bare)" for k, v in w["regions_per_s"].items()},
        )
    for r in report["shared_vs_warped"]["rows"]:
        print(
            f"{r['regions']} regions: shared {r['shared_s']:.2f} s, warped {r['warped_s']:.1f} s"
            f"{'' if r['warped_measured'] else ' (extrapolated)'}: {r['speedup']:.0f}x"
        )
    print(f"load: {guard.to_dict()}\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
