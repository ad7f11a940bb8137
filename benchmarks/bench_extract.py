"""Extraction speed: deepfeat vs a bare forward pass (the ceiling) vs torchvision's feature extractor.

(a) On one preprocessed batch in memory: images/s of a bare ``model(x)`` in inference mode, of deepfeat
    capturing 4 layers (stage4, stage6, head, pool; average-pooled) in one pass, and of a
    straightforward ``torchvision.models.feature_extraction.create_feature_extractor`` loop (timm's
    FX-traceable wrapper, channels-last) pooling the same 4 layers.
(b) End to end from JPEG files on disk into a feature store (decode, resize, crop, forward, write,
    journal) vs the bare forward on the same images already decoded (the ceiling), and vs a plain
    PIL + torchvision-transforms loop without prefetching.
(c) Peak resident memory of the end-to-end extraction for two dataset sizes (separate processes).

Writes benchmarks/results/bench_extract.json. Usage: python benchmarks/bench_extract.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
LAYERS = ["stage4", "stage6", "head", "pool"]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera"


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_jpegs(folder: Path, n: int) -> list[Path]:
    """n JPEG photos: hymenoptera's when ../shared is present, else scikit-image photos re-encoded."""
    from PIL import Image

    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    if SHARED.is_dir():  # links, so that repeated photos are distinct items
        sources = sorted(p for p in SHARED.rglob("*.jpg"))
        for i in range(n):
            link = folder / f"{i:05d}.jpg"
            link.symlink_to(sources[i % len(sources)])
            paths.append(link)
        return paths
    import skimage.data

    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    for i in range(n):
        img = Image.fromarray(photos[i % len(photos)]).resize((500, 375))
        path = folder / f"{i:05d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def bench_tensors(backbone, batch_size: int, repeats: int) -> dict:
    from timm.models import create_feature_extractor

    from deepfeat.features.capture import LayerCapture
    from deepfeat.features.pooling import pool_maps

    model = backbone.module.to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
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
    t_bare, t_ours, t_fx = timed(bare, repeats), timed(ours, repeats), timed(fx, repeats)
    return {
        "batch_size": batch_size,
        "bare_forward_img_s": batch_size / t_bare,
        "deepfeat_4_layers_img_s": batch_size / t_ours,
        "torchvision_fx_4_layers_img_s": batch_size / t_fx,
        "ratio_deepfeat_vs_bare": t_bare / t_ours,
        "ratio_deepfeat_vs_fx": t_fx / t_ours,
        "max_abs_diff_deepfeat_vs_fx": max_diff,
        "target_ratio_vs_bare": 0.9,
    }


def bench_jpeg(backbone, n: int, batch_size: int, workdir: Path) -> dict:
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

    t_bare = timed(bare, 1)

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

    t_plain = timed(plain, 1)

    runs = []
    for r in range(2):
        store = workdir / f"store{r}"
        t = time.perf_counter()
        extract(
            ds,
            backbone,
            [LayerActivations(LAYERS, "avg")],
            store=store,
            batch_size=batch_size,
            progress=False,
        )
        runs.append(time.perf_counter() - t)
    t_ours = min(runs)
    t = time.perf_counter()
    extract(ds, backbone, [LayerActivations(LAYERS, "avg")], store=workdir / "store0", progress=False)
    t_reread = time.perf_counter() - t
    return {
        "n_images": n,
        "source": "hymenoptera" if SHARED.is_dir() else "scikit-image photos at 500x375",
        "bare_forward_predecoded_img_s": n / t_bare,
        "deepfeat_from_jpeg_to_store_img_s": n / t_ours,
        "plain_pil_torchvision_loop_img_s": n / t_plain,
        "ratio_deepfeat_vs_bare": t_bare / t_ours,
        "ratio_deepfeat_vs_plain_loop": t_plain / t_ours,
        "rerun_from_store_seconds": t_reread,
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
    method = LayerActivations(LAYERS, "avg")
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
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    args = parser.parse_args()
    from deepfeat.backbones import load_backbone

    backbone = load_backbone()
    n = 64 if args.quick else 256
    result = {
        "benchmark": "bench_extract",
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
        },
        "tensors": bench_tensors(backbone, 32, 3 if args.quick else 5),
    }
    result["memory"] = bench_memory([64, 256] if args.quick else [128, 1024])
    with tempfile.TemporaryDirectory() as tmp:
        result["jpeg_end_to_end"] = bench_jpeg(backbone, n, 32, Path(tmp))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "bench_extract.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
