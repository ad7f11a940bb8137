"""Preprocessing parity: how much JPEG draft decoding (DCT-domain downscaling, deepfeat's default) changes
features and a probe's accuracy, against exact decoding and a plain timm + torchvision pipeline
(``Resize(256, bicubic)``, ``CenterCrop(224)``, the same EfficientNet-Lite0 weights).

Data: hymenoptera (its fixed train/val split; JPEG photos of various sizes). Features: ``pool`` (1,280).
Reports how many images' features differ at all (draft decoding applies only to JPEGs at least twice
the resize target), the relative L2 difference of the features (mean, median and max over images),
the largest absolute difference, and the accuracy of a logistic-regression probe at the C chosen on
the draft features.
Writes experiments/results/decode_parity/summary.json. Needs ../shared/datasets.

Usage: python experiments/decode_parity.py [--data PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import deepfeat as df
from deepfeat.fileio import write_json
from deepfeat.metrics import mean_per_class_accuracy

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "hymenoptera"
OUT = REPO / "experiments" / "results" / "decode_parity"


def timm_pool_features(backbone, paths: list[str]) -> np.ndarray:
    """``pool`` features through timm's own eval transform of the model (PIL decode in full)."""
    import timm
    from PIL import Image

    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=backbone.module))
    model = backbone.module
    rows = []
    with torch.inference_mode():
        for i in range(0, len(paths), 32):
            batch = []
            for path in paths[i : i + 32]:
                with Image.open(path) as img:
                    batch.append(transform(img.convert("RGB")))
            rows.append(model.forward_head(model.forward_features(torch.stack(batch)), pre_logits=True))
    return torch.cat(rows).numpy()


def relative_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-12)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args(argv)
    if not Path(args.data).exists():
        print(f"{args.data} is absent; nothing to do")
        return 0
    df.tune_allocator()
    backbone = df.load_backbone()
    data = df.folder_dataset(args.data)
    method = [df.LayerActivations(["pool"])]
    draft_prep = backbone.preprocess
    exact_prep = dataclasses.replace(draft_prep, jpeg_draft=False)
    timings = {}
    t = time.perf_counter()
    draft = df.extract(data, backbone, method, preprocess=draft_prep, progress=True)["pool"]
    timings["draft"] = time.perf_counter() - t
    t = time.perf_counter()
    exact = df.extract(data, backbone, method, preprocess=exact_prep, progress=True)["pool"]
    timings["exact"] = time.perf_counter() - t
    paths = [data.source(r) for r in draft.rows]
    t = time.perf_counter()
    reference = timm_pool_features(backbone, paths)
    timings["timm"] = time.perf_counter() - t
    assert exact.ids == draft.ids
    X = {"draft": np.asarray(draft.features), "exact": np.asarray(exact.features), "timm": reference}
    split = np.char.lower(draft.splits.astype(str))
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    y = draft.targets
    probe = df.LinearProbe(loss="logistic", C="cv").fit(X["draft"][train], y[train])
    accuracy = {}
    for name, feats in X.items():
        fixed = df.LinearProbe(loss="logistic", C=probe.C_).fit(feats[train], y[train])
        accuracy[name] = 100 * mean_per_class_accuracy(y[test], fixed.predict(feats[test]), n_classes=2)
    diffs = {}
    for a, b in (("draft", "timm"), ("exact", "timm"), ("draft", "exact")):
        rel = relative_l2(X[a], X[b])
        diffs[f"{a} vs {b}"] = {
            "images_that_differ": int((rel > 1e-4).sum()),
            "relative_l2_mean": float(rel.mean()),
            "relative_l2_mean_of_those_that_differ": float(rel[rel > 1e-4].mean())
            if (rel > 1e-4).any()
            else 0.0,
            "relative_l2_median": float(np.median(rel)),
            "relative_l2_max": float(rel.max()),
            "max_abs": float(np.abs(X[a] - X[b]).max()),
        }
    summary = {
        "data": f"{data.name}: {len(draft)} images (train {len(train)}, val {len(test)})",
        "features": "efficientnet_lite0 pool (1280), bundled weights",
        "probe": f"logistic regression at C = {probe.C_:g} (chosen by 3-fold CV on the draft features)",
        "differences": diffs,
        "mean_class_accuracy_percent": accuracy,
        "extraction_seconds": timings,
        "note": "taken on a shared 2-core machine; seconds are indicative only",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "summary.json", summary)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
