"""The extraction checks of benchmarks/gpu_check.py: each a function returning a dict with ``ok``.

All on EfficientNet-Lite0 with its bundled ImageNet weights (offline), real-photo JPEGs made from
scikit-image's sample photos, 224 x 224 inputs:

- ``extraction``: images/s of ``extract(device="cuda")`` from JPEG files (worker processes, pinned
  memory; and with threads) vs a bare forward pass on batches already on the GPU (the ceiling), and
  the CPU/GPU difference of the features (4 layers, average-pooled);
- ``amp``: the same with ``amp=True`` (float16 autocast): images/s and its accuracy cost against the
  float32 CPU features (largest difference relative to the largest value, smallest row cosine);
- ``gradients``: Deep Fishing factored gradients of ``head`` and ``logits`` (one backward pass), CUDA vs
  CPU, and images/s;
- ``activeness``: InterActive features of stage5 / stage6 (config last, p = 2), CUDA vs CPU, images/s;
- ``fisher``: ``FisherEncoder`` fitted on the CPU, then encoding the unrolled stage6 maps on CUDA and
  on the CPU: difference and descriptors/s.

Tolerances (float32; cuDNN's TF32 convolutions are torch's default on Ampere and later): features
within 1e-2 of the largest value and every row's cosine above 0.9999 (AMP: 5e-2 and 0.999).
``device`` is a parameter so that the checks can be tried on the CPU (``gpu_check.py --cpu``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

LAYERS = ["stage4", "stage6", "head", "pool"]
TOL = {"float32": (1e-2, 0.9999), "amp": (5e-2, 0.999)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable, device: str):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def photos(folder: Path, n: int) -> list[Path]:
    """n JPEG photos (scikit-image's sample photos, resized and flipped in turn), 500 x 375."""
    import skimage.data
    from PIL import Image

    sources = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = Image.fromarray(sources[i % 4]).resize((500 + i % 7, 375))
        if (i // 4) % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / "photos" / f"{i:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        img.save(path, quality=90)
        paths.append(path)
    return paths


def compare(ref: np.ndarray, other: np.ndarray) -> dict:
    """Largest absolute difference relative to the largest |value|, and the smallest row cosine."""
    ref = np.asarray(ref, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    scale = max(np.abs(ref).max(), 1e-30)
    cos = (ref * other).sum(1) / np.maximum(
        np.linalg.norm(ref, axis=1) * np.linalg.norm(other, axis=1), 1e-30
    )
    return {"max_rel_diff": float(np.abs(ref - other).max() / scale), "min_cosine": float(cos.min())}


def _within(diffs: dict, kind: str) -> bool:
    rel, cos = TOL[kind]
    return all(d["max_rel_diff"] <= rel and d["min_cosine"] >= cos for d in diffs.values())


class _Setup:
    """Backbone, photos and datasets shared by the checks (built once)."""

    def __init__(self, n_speed: int, n_equal: int):
        from deepfeat.backbones import load_backbone
        from deepfeat.data.datasets import dataset_from_paths

        self.tmp = tempfile.TemporaryDirectory(prefix="deepfeat-gpu-")
        paths = photos(Path(self.tmp.name), n_speed)
        self.speed = dataset_from_paths(paths)
        self.equal = dataset_from_paths(paths[:n_equal])
        self.backbone = load_backbone("efficientnet_lite0")


_SETUP: dict = {}


def setup(n_speed: int = 1024, n_equal: int = 64) -> _Setup:
    key = (n_speed, n_equal)
    if key not in _SETUP:
        _SETUP[key] = _Setup(n_speed, n_equal)
    return _SETUP[key]


def _features(ds, backbone, methods, device, **kw) -> dict[str, np.ndarray]:
    from deepfeat.features.pipeline import extract

    res = extract(ds, backbone, methods, device=device, progress=False, **kw)
    return {k: np.asarray(fs.features) for k, fs in res.features.items()}, res


def check_extraction(device: str = "cuda", n_speed: int = 1024, n_equal: int = 64, batch: int = 64) -> dict:
    """extract() on the GPU: images/s vs a bare forward pass, and equal to the CPU."""
    from deepfeat.features.activations import LayerActivations

    s = setup(n_speed, n_equal)
    methods = [LayerActivations(LAYERS, "avg")]
    cpu, _ = _features(s.equal, s.backbone, methods, "cpu", batch_size=batch)
    gpu, _ = _features(s.equal, s.backbone, methods, device, batch_size=batch)
    diffs = {k: compare(cpu[k], gpu[k]) for k in cpu}
    module = s.backbone.module.to(device)
    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    n_batches = max(1, n_speed // batch)

    def bare():
        with torch.inference_mode():
            for _ in range(n_batches):
                module(x)

    bare()  # warm-up: cuDNN autotuning, allocator
    _, bare_s = _timed(bare, device)
    speeds = {"bare_forward_on_device": n_batches * batch / bare_s}
    workers = {"processes": 8, "threads": 4}
    for loader, n_workers in workers.items():
        _, res = _features(
            s.speed, s.backbone, methods, device, batch_size=batch, loader=loader, workers=n_workers
        )
        speeds[f"extract_{loader}_{n_workers}"] = res.images_per_second
    best = max(v for k, v in speeds.items() if k.startswith("extract"))
    return {
        "data": f"{n_speed} JPEG photos 500x375 -> 224x224, EfficientNet-Lite0, layers {LAYERS} (avg)",
        "batch_size": batch,
        "images_per_second": speeds,
        "extract_over_bare": best / speeds["bare_forward_on_device"],
        "cpu_vs_device": diffs,
        "tolerance": TOL["float32"],
        "ok": _within(diffs, "float32"),
    }


def check_amp(device: str = "cuda", n_speed: int = 1024, n_equal: int = 64, batch: int = 64) -> dict:
    """Mixed precision: images/s and the accuracy cost against float32 CPU features."""
    from deepfeat.features.activations import LayerActivations

    s = setup(n_speed, n_equal)
    methods = [LayerActivations(LAYERS, "avg")]
    cpu, _ = _features(s.equal, s.backbone, methods, "cpu", batch_size=batch)
    f32, _ = _features(s.equal, s.backbone, methods, device, batch_size=batch)
    amp, _ = _features(s.equal, s.backbone, methods, device, batch_size=batch, amp=True)
    _, res32 = _features(s.speed, s.backbone, methods, device, batch_size=batch, workers=8)
    _, res16 = _features(s.speed, s.backbone, methods, device, batch_size=batch, workers=8, amp=True)
    diffs = {k: compare(cpu[k], amp[k]) for k in cpu}
    return {
        "amp_vs_cpu_float32": diffs,
        "float32_device_vs_cpu": {k: compare(cpu[k], f32[k]) for k in cpu},
        "images_per_second": {"float32": res32.images_per_second, "amp": res16.images_per_second},
        "tolerance": TOL["amp"],
        "ok": _within(diffs, "amp"),
    }


def _method_check(method, device: str, n_speed: int, n_equal: int, batch: int) -> dict:
    s = setup(n_speed, n_equal)
    cpu, _ = _features(s.equal, s.backbone, [method], "cpu", batch_size=batch)
    gpu, _ = _features(s.equal, s.backbone, [method], device, batch_size=batch)
    diffs = {k: compare(cpu[k], gpu[k]) for k in cpu}
    _, res = _features(s.speed, s.backbone, [method], device, batch_size=batch, workers=8)
    return {
        "cpu_vs_device": diffs,
        "images_per_second": res.images_per_second,
        "tolerance": TOL["float32"],
        "ok": _within(diffs, "float32"),
    }


def check_gradients(device: str = "cuda", n_speed: int = 512, n_equal: int = 64, batch: int = 64) -> dict:
    """Deep Fishing factored gradients (head, logits) on the GPU vs the CPU."""
    from deepfeat.features.gradients import GradientFeatures

    method = GradientFeatures(["head", "logits"], forms=["factored", "input"])
    return {"layers": ["head", "logits"], **_method_check(method, device, n_speed, n_equal, batch)}


def check_activeness(device: str = "cuda", n_speed: int = 512, n_equal: int = 64, batch: int = 64) -> dict:
    """InterActive activeness (stage5, stage6; last, p=2) on the GPU vs the CPU."""
    from deepfeat.features.activeness import Activeness

    method = Activeness(["stage5", "stage6"], config="last", p=2)
    return {"layers": ["stage5", "stage6"], **_method_check(method, device, n_speed, n_equal, batch)}


def check_fisher(device: str = "cuda", n_speed: int = 512, n_equal: int = 64, batch: int = 64) -> dict:
    """FisherEncoder on unrolled stage6 maps: fitted once on the CPU, encoding on the GPU vs the CPU."""
    from deepfeat.features.activations import LayerActivations
    from deepfeat.features.fisher import FisherEncoder

    s = setup(n_speed, n_equal)
    feats, res = _features(
        s.speed, s.backbone, [LayerActivations("stage6", "unroll")], device, batch_size=batch
    )
    maps = feats["stage6/unroll"]
    shape = tuple(res.features["stage6/unroll"].layer_shape)
    enc = FisherEncoder(n_components=64, pca_dim=64, layer_shape=shape, random_state=0, progress=False).fit(
        maps
    )
    cpu, cpu_s = _timed(lambda: enc.transform(maps), "cpu")
    enc.set_params(device=device)  # the fitted encoder, now encoding on the device
    enc.transform(maps[:8])  # warm-up
    gpu, gpu_s = _timed(lambda: enc.transform(maps), device)
    diff = compare(cpu, gpu)
    descriptors = len(maps) * shape[1] * shape[2]
    return {
        "shape": {"images": len(maps), "layer_shape": shape, "components": 64, "pca_dim": 64},
        "cpu_vs_device": diff,
        "descriptors_per_second": {"cpu": descriptors / cpu_s, "device": descriptors / gpu_s},
        "tolerance": TOL["float32"],
        "ok": _within({"fv": diff}, "float32"),
    }


#: (name, check) in the order gpu_check.py runs them
CHECKS: list[tuple[str, Callable[..., dict]]] = [
    ("extraction", check_extraction),
    ("amp", check_amp),
    ("gradients", check_gradients),
    ("activeness", check_activeness),
    ("fisher", check_fisher),
]
