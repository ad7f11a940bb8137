"""Extraction speed: deepfeat vs a bare forward pass (the ceiling) vs torchvision's feature extractor.

(a) On one preprocessed batch in memory: images/s of a bare ``model(x)`` in inference mode, of deepfeat
    capturing 4 layers (stage4, stage6, head, pool; average-pooled) in one pass, and of a
    straightforward ``torchvision.models.feature_extraction.create_feature_extractor`` loop (timm's
    FX-traceable wrapper, channels-last) pooling the same 4 layers.
(b) End to end from JPEG files on disk into a feature store (decode, resize, crop, forward, write,
    journal) vs the bare forward on the same images already decoded (the ceiling), and vs a plain
    PIL + torchvision-transforms loop without prefetching; then the same extraction re-run over the
    complete store (its journal says every batch is done: nothing decoded or computed), timed as
    often as the others.
(c) Peak resident memory of the end-to-end extraction for two dataset sizes (separate processes).

Every comparison interleaves its methods (A, B, C, A, B, C, ...) and reports medians with their spread
(``benchmarks/_timing.py``), with the same torch / BLAS threads and allocator setting for all; the load
average before and after is recorded and a run under load is flagged. Sizes: (a) at 224, 320 and 448
pixels, (b) on 256 JPEGs (64 with ``--quick``).

Writes benchmarks/results/bench_extract.json (``--quick``: bench_extract.quick.json, not kept in git).
Usage: python benchmarks/bench_extract.py [--quick]
    [--parts tensors,memory,jpeg]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from _timing import LoadGuard, earlier_results, interleaved, pinned_threads, ratio

RESULTS = Path(__file__).resolve().parent / "results"
LAYERS = ["stage4", "stage6", "head", "pool"]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera"


def make_jpegs(folder: Path, n: int) -> list[Path]:
    """n JPEG photos: hymenoptera's when ../shared is present, else scikit-image photos re-encoded."""
    from PIL import Image

    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    if SHARED.is_dir():  # links to each photo once, then copies (a dataset refuses one file twice)
        sources = sorted(p for p in SHARED.rglob("*.jpg"))
        for i in range(n):
            path = folder / f"{i:05d}.jpg"
            if i < len(sources):
                path.symlink_to(sources[i])
            else:
                shutil.copyfile(sources[i % len(sources)], path)
            paths.append(path)
        return paths
    import skimage.data

    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    for i in range(n):
        img = Image.fromarray(photos[i % len(photos)]).resize((500, 375))
        path = folder / f"{i:05d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def bench_tensors(backbone, batch_size: int, repeats: int, side: int = 224) -> dict:
    from timm.models import create_feature_extractor

    from deepfeat.features.capture import LayerCapture
    from deepfeat.features.pooling import pool_maps

    model = backbone.module.to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, side, side).contiguous(memory_format=torch.channels_last)
    layers = backbone.catalog.resolve(LAYERS)

    def bare():
        with torch.inference_mode():
            model(x)

    capture = LayerCapture(backbone, layers)

    def ours():
        with torch.inference_mode(), capture:
            out = capture.run(x)
            return [pool_maps(out[layer.name], "avg").numpy() for layer in layers]

    nodes = {layer.module: layer.name for layer in layers}
    fx_model = create_feature_extractor(model, return_nodes=nodes)

    def fx():
        with torch.inference_mode():
            out = fx_model(x)
            return [v.float().mean((2, 3)) if v.dim() == 4 else v for v in out.values()]

    # the three agree
    a = ours()
    b = [t.numpy() for t in fx()]
    max_diff = max(float(np.abs(u - v).max()) for u, v in zip(a, b))
    times, _ = interleaved({"bare": bare, "deepfeat": ours, "fx": fx}, repeats=repeats)
    return {
        "batch_size": batch_size,
        "side": side,
        "timings": times,
        "bare_forward_img_s": batch_size / times["bare"]["median"],
        "deepfeat_4_layers_img_s": batch_size / times["deepfeat"]["median"],
        "torchvision_fx_4_layers_img_s": batch_size / times["fx"]["median"],
        "ratio_deepfeat_vs_bare": ratio(times, "bare", "deepfeat"),
        "ratio_deepfeat_vs_fx": ratio(times, "fx", "deepfeat"),
        "max_abs_diff_deepfeat_vs_fx": max_diff,
        "target_ratio_vs_bare": 0.9,
    }


def bench_jpeg(backbone, n: int, batch_size: int, workdir: Path, repeats: int) -> dict:
    from PIL import Image

    from deepfeat.data.datasets import dataset_from_paths
    from deepfeat.features import LayerActivations, extract

    paths = make_jpegs(workdir / "jpegs", n)
    ds = dataset_from_paths(paths)
    prep = backbone.preprocess
    model = backbone.module.to(memory_format=torch.channels_last)

    # ceiling: the same images, already decoded and preprocessed, through the bare model
    decoded = [prep(Image.open(p).convert("RGB")) for p in paths]
    batches = [prep.to_batch(decoded[i : i + batch_size]) for i in range(0, n, batch_size)]

    def bare():
        with torch.inference_mode():
            for x in batches:
                model(x)

    # a plain loop: decode + transform in the main thread, then forward (no prefetch), same layers
    from torchvision.transforms import v2 as T

    tv = T.Compose(
        [
            T.Resize(prep.size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(prep.crop),
            T.PILToTensor(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(prep.mean, prep.std),
        ]
    )
    from deepfeat.features.capture import LayerCapture

    layers = backbone.catalog.resolve(LAYERS)

    def plain():
        feats = []
        with torch.inference_mode(), LayerCapture(backbone, layers) as cap:
            for i in range(0, n, batch_size):
                x = torch.stack([tv(Image.open(p).convert("RGB")) for p in paths[i : i + batch_size]])
                out = cap.run(x.contiguous(memory_format=torch.channels_last))
                feats.append([v.mean((2, 3)) if v.dim() == 4 else v for v in out.values()])
        return feats

    stores = iter(range(1000))

    def ours():  # a fresh store every time: decode, resize, forward, write, journal
        extract(
            ds,
            backbone,
            [LayerActivations(LAYERS, ["avg"])],
            store=workdir / f"store{next(stores)}",
            batch_size=batch_size,
            progress=False,
        )

    times, _ = interleaved({"bare": bare, "plain": plain, "deepfeat": ours}, repeats=repeats)

    def rerun():  # the warm-up's store is complete: nothing is decoded or computed
        res = extract(
            ds,
            backbone,
            [LayerActivations(LAYERS, ["avg"])],
            store=workdir / "store0",
            batch_size=batch_size,
            progress=False,
        )
        if res.n_forward:
            raise RuntimeError(f"the re-run from a complete store computed {res.n_forward} images")

    reread, _ = interleaved({"rerun_from_store": rerun}, repeats=repeats, warmup=0)
    return {
        "n_images": n,
        "source": "hymenoptera" if SHARED.is_dir() else "scikit-image photos at 500x375",
        "timings": times,
        "bare_forward_predecoded_img_s": n / times["bare"]["median"],
        "deepfeat_from_jpeg_to_store_img_s": n / times["deepfeat"]["median"],
        "plain_pil_torchvision_loop_img_s": n / times["plain"]["median"],
        "ratio_deepfeat_vs_bare": ratio(times, "bare", "deepfeat"),
        "ratio_deepfeat_vs_plain_loop": ratio(times, "plain", "deepfeat"),
        "rerun_from_store_seconds": reread["rerun_from_store"]["median"],
        "rerun_from_store_timings": reread["rerun_from_store"],
        "target_ratio_vs_bare": 0.7,
    }


MEMORY_CHILD = """
import sys, tempfile
from pathlib import Path
sys.path.insert(0, {here!r})
from bench_extract import make_jpegs, LAYERS
from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import dataset_from_paths
from deepfeat.features import LayerActivations, extract
n = int(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    paths = make_jpegs(Path(tmp) / "j", n)
    bb = load_backbone()
    method = LayerActivations(LAYERS, ["avg"])
    extract(dataset_from_paths(paths), bb, [method], store=Path(tmp) / "s", progress=False)
# VmHWM is this process's own peak (ru_maxrss would carry the parent's peak across exec)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""


def bench_memory(sizes: list[int]) -> dict:
    out = {}
    code = MEMORY_CHILD.format(here=str(Path(__file__).resolve().parent))
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(n)], capture_output=True, text=True, check=True
        )
        out[str(n)] = int(proc.stdout.strip().splitlines()[-1]) / 1024.0
    return {"peak_rss_mib_by_n_images": out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer images, sizes and repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch / BLAS threads (default: all cores)")
    parser.add_argument(
        "--parts",
        default="tensors,memory,jpeg",
        help="what to measure (default all); a subset updates the existing JSON, keeping its other parts",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts or not parts <= {"tensors", "memory", "jpeg"}:
        parser.error(f"--parts: a comma-separated subset of tensors,memory,jpeg, not {args.parts!r}")
    from deepfeat import tune_allocator
    from deepfeat.backbones import load_backbone

    tuned = tune_allocator()  # as the command line does; the same for every method compared
    backbone = load_backbone()
    n = 64 if args.quick else 256
    repeats = 3 if args.quick else 5
    sides = [224] if args.quick else [224, 320, 448]
    path = RESULTS / ("bench_extract.quick.json" if args.quick else "bench_extract.json")
    result: dict = {}
    if parts != {"tensors", "memory", "jpeg"}:
        result = earlier_results(path, "load_of_earlier_parts")
    with pinned_threads(args.threads) as threads, LoadGuard() as guard:
        result["benchmark"] = "bench_extract"
        result["machine"] = machine(allocator_tuned=str(tuned), threads=str(threads))
        result["parts_measured"] = sorted(parts)
        if "tensors" in parts:
            result["tensors"] = [
                bench_tensors(backbone, 32 if side <= 320 else 16, repeats, side) for side in sides
            ]
        if "memory" in parts:
            result["memory"] = bench_memory([64, 256] if args.quick else [128, 1024])
        if "jpeg" in parts:
            with tempfile.TemporaryDirectory() as tmp:
                result["jpeg_end_to_end"] = bench_jpeg(backbone, n, 32, Path(tmp), repeats=repeats)
    result["load"] = guard.to_dict()
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
