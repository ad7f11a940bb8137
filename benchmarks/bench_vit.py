"""Vision transformer extraction: ViT-Tiny's 12 blocks in one pass against its bare forward pass.

``timm:vit_tiny_patch16_224`` (its pretrained weights when they are in the local caches, else a seeded
random initialisation: the speed does not depend on the values), one batch of 224x224 images,
channels-last as deepfeat runs it, interleaved (median of repeats after a warm-up):

- ``bare forward``: ``module(x)`` in inference mode, the ceiling;
- ``deepfeat 12 blocks``: :class:`~deepfeat.features.capture.LayerCapture` of ``stage1``..``stage12``
  (patch tokens as (N, 192, 14, 14) maps) and their class tokens, every map average-pooled and every
  vector kept, as :class:`~deepfeat.features.activations.LayerActivations` computes them, plus the
  logits of the same pass;
- ``timm forward_intermediates``: the strongest alternative, timm's own ``forward_intermediates`` of
  the 12 blocks (NCHW maps and prefix tokens, ``intermediates_only``: it stops after the last block)
  with the same pooling;
- ``deepfeat extract()``: the whole pipeline on in-memory images (preprocessing from 256x256 uint8
  arrays, threads, capture, pooling), per batch, as a user runs it.

Target: ``deepfeat 12 blocks`` at >= 0.9x the bare forward rate (images per second).
Writes benchmarks/results/bench_vit.json. Usage: python benchmarks/bench_vit.py [--batch 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from _timing import LoadGuard, interleaved, pinned_threads

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import ArrayDataset
from deepfeat.features.activations import LayerActivations
from deepfeat.features.capture import LayerCapture
from deepfeat.features.pipeline import extract
from deepfeat.features.pooling import pool_maps

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BLOCKS = [f"stage{i}" for i in range(1, 13)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_vit.json")
    args = parser.parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bb = load_backbone("timm:vit_tiny_patch16_224")
    weights = "random (no cached weights)" if bb.weights_id.startswith("random") else bb.weights_id
    module = bb.module
    layers = bb.catalog.resolve([*BLOCKS, *(f"{b}_cls" for b in BLOCKS), "logits"])
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((args.batch, 3, 224, 224), dtype=np.float32))
    x = x.contiguous(memory_format=torch.channels_last)
    images = rng.integers(0, 256, (args.batch, 256, 256, 3), dtype=np.uint8)
    data = ArrayDataset(
        "bench", [f"i{i}" for i in range(args.batch)], ["a"], np.zeros(args.batch, np.int64), images=images
    )
    method = LayerActivations([*BLOCKS, *(f"{b}_cls" for b in BLOCKS), "logits"], ["avg"])

    def bare():
        with torch.inference_mode():
            return module(x)

    def deepfeat_blocks():
        with LayerCapture(bb, layers) as cap, torch.inference_mode():
            out = cap.run(x)
            return [pool_maps(out[layer.name], "avg") for layer in layers]

    def timm_intermediates():
        with torch.inference_mode():
            maps = module.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)
            return [m.mean(dim=(2, 3)) for m, _ in maps] + [p[:, 0] for _, p in maps]

    def pipeline():
        return extract(data, bb, [method], batch_size=args.batch, progress=False, workers=2)

    with pinned_threads() as threads, LoadGuard() as load:
        timings, _ = interleaved(
            {
                "bare forward": bare,
                "deepfeat 12 blocks": deepfeat_blocks,
                "timm forward_intermediates": timm_intermediates,
                "deepfeat extract()": pipeline,
            },
            repeats=args.repeats,
            warmup=args.warmup,
        )
    with torch.inference_mode():  # the captured maps are timm's own intermediates
        reference = module.forward_intermediates(x[:2], return_prefix_tokens=True, intermediates_only=True)
        with LayerCapture(bb, layers) as cap:
            mine = cap.run(x[:2])
    same = all(torch.equal(mine[f"stage{i + 1}"], m) for i, (m, _) in enumerate(reference))
    rate = {k: args.batch / v["median"] for k, v in timings.items()}
    result = {
        "benchmark": "vit",
        "model": "timm:vit_tiny_patch16_224",
        "weights": weights,
        "problem": {"batch": args.batch, "input": [3, 224, 224], "blocks": 12, "maps": [192, 14, 14]},
        "threads": threads,
        "timings_s": {k: {m: round(v, 4) for m, v in d.items() if m != "times"} for k, d in timings.items()},
        "images_per_second": {k: round(v, 2) for k, v in rate.items()},
        "blocks_vs_bare_rate": round(rate["deepfeat 12 blocks"] / rate["bare forward"], 3),
        "extract_vs_bare_rate": round(rate["deepfeat extract()"] / rate["bare forward"], 3),
        "blocks_vs_timm_intermediates_rate": round(
            rate["deepfeat 12 blocks"] / rate["timm forward_intermediates"], 3
        ),
        "target": "deepfeat 12 blocks >= 0.9x the bare forward rate",
        "meets_target": rate["deepfeat 12 blocks"] >= 0.9 * rate["bare forward"],
        "maps_equal_forward_intermediates": same,
        "warnings": [str(w.message)[:200] for w in caught],
        "load": load.to_dict(),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("images_per_second", "blocks_vs_bare_rate", "meets_target")}, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
