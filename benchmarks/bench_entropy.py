"""Filter entropy speed: deepfeat's vectorised entropy curves vs a plain loop over filters and thresholds.

Case ``vectors`` (the target size): 1280 filters x 5000 images x 10 classes x 100 thresholds. Features
are EfficientNet-Lite0 ``pool`` features of CIFAR-10 test images from a feature store (``--store``; 5000
rows drawn by a seeded permutation), else synthetic (10 Gaussian classes in 1280 dims through a ReLU).
Case ``maps`` (unless ``--skip-maps``): pool-5-like synthetic maps, 2000 images x 256 filters x 6 x 6.

For each entropy method and threshold spacing, deepfeat's ``filter_entropy`` runs on all filters (median
of ``--repeats`` runs after a warm-up). The reference (``deepfeat.analysis.entropy._loop_entropy_curves``:
for every filter, for every threshold, for every class, a boolean mask over the responses) is far too
slow for every filter, so it runs on the first ``--loop-filters`` filters and its time is extrapolated
linearly to all of them (its cost per filter does not depend on which filter); its curves on those
filters are compared with deepfeat's. Writes benchmarks/results/bench_entropy.json. Usage:
python benchmarks/bench_entropy.py [--store PATH] [--threads N] [--loop-filters N] [--skip-maps]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from threadpoolctl import threadpool_limits

from deepfeat.analysis import filter_entropy
from deepfeat.analysis._inputs import as_maps
from deepfeat.analysis.entropy import _loop_entropy_curves

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_STORE = REPO / "benchmarks" / ".cache" / "store"
N_IMAGES, N_THRESHOLDS, SEED = 5000, 100, 0
CASES = [("label", "linear"), ("weighted", "linear"), ("label", "quantile")]


# -- features ----------------------------------------------------------------------------------------


def store_features(store: Path) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Complete ``pool`` features of the store with their labels (rows that failed left out), if any."""
    from deepfeat.features.store import FeatureStore, StoreEntry

    if not (store / "entries").is_dir():
        return None
    fs = FeatureStore(store)
    for meta in fs.entries():
        prov = meta["provenance"]
        if prov.get("layer") != "pool" or not meta.get("complete"):
            continue
        entry = StoreEntry(Path(meta["path"]), prov, meta["n_rows"])
        X = np.asarray(entry.read(), dtype=np.float32)
        index = fs.load_dataset_index(prov["dataset"])
        y = np.asarray(index["targets"])
        valid = entry.status().valid
        info = {
            "source": "store",
            "store": str(store),
            "entry": Path(meta["path"]).name,
            "dataset": index.get("name"),
            "backbone": prov.get("backbone"),
            "layer": prov.get("layer"),
        }
        return X[valid], y[valid], info
    return None


def synthetic_vectors(n: int, d: int = 1280, k: int = 10, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.5, size=(k, d))
    y = np.arange(n) % k
    return np.maximum(centres[y] + rng.normal(size=(n, d)), 0).astype(np.float32), y


def vectors(store: Path | None) -> tuple[np.ndarray, np.ndarray, dict]:
    found = store_features(store) if store is not None else None
    if found is None:
        X, y = synthetic_vectors(N_IMAGES)
        return X, y, {"source": "synthetic", "description": "10 Gaussian classes, 1280 dims, ReLU, seed 0"}
    X, y, info = found
    rows = np.sort(np.random.default_rng(SEED).permutation(len(y))[:N_IMAGES])
    info["rows"] = f"np.random.default_rng({SEED}).permutation, first {N_IMAGES}, sorted"
    return X[rows], y[rows], info


def synthetic_maps(n: int = 2000, c: int = 256, side: int = 6, k: int = 10, seed: int = SEED):
    """ReLU maps whose filters respond more strongly, at random places, to some classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    gain = rng.gamma(2.0, 0.5, size=(k, c)).astype(np.float32)
    x = rng.normal(size=(n, c, side, side)).astype(np.float32) * gain[y][:, :, None, None]
    return np.maximum(x, 0), y


# -- timing ------------------------------------------------------------------------------------------


def time_case(
    X: np.ndarray, y: np.ndarray, method: str, spacing: str, repeats: int, loop_filters: int
) -> dict:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        res = filter_entropy(X, y, method=method, spacing=spacing, thresholds=N_THRESHOLDS)
        runs.append(time.perf_counter() - start)
    vec = statistics.median(runs)
    maps = as_maps(X)
    codes = np.unique(y, return_inverse=True)[1]
    subset = list(range(min(loop_filters, maps.shape[1])))
    start = time.perf_counter()
    thr, ent, aue = _loop_entropy_curves(
        maps, codes, int(codes.max()) + 1, method, res.levels, spacing, filters=subset
    )
    loop = time.perf_counter() - start
    loop_all = loop * maps.shape[1] / len(subset)
    row = {
        "method": method,
        "spacing": spacing,
        "vectorised_seconds": round(vec, 3),
        "vectorised_runs": [round(r, 3) for r in runs],
        "loop_filters_timed": len(subset),
        "loop_seconds_measured": round(loop, 3),
        "loop_seconds_extrapolated": round(loop_all, 1),
        "extrapolated": len(subset) < maps.shape[1],
        "speedup": round(loop_all / vec, 1),
        "max_abs_diff_thresholds": float(np.abs(thr - res.thresholds[subset]).max()),
        "max_abs_diff_entropy": float(np.abs(ent - res.entropy[subset]).max()),
        "max_abs_diff_aue": float(np.abs(aue - res.aue[subset]).max()),
    }
    print(
        f"{method:9s} {spacing:9s} vectorised {vec:7.3f} s   loop {loop:6.2f} s on {len(subset)} filters "
        f"-> {loop_all:8.1f} s for {maps.shape[1]}   x{row['speedup']:.0f}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="feature store with pool features")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: as set)")
    parser.add_argument("--loop-filters", type=int, default=32, help="filters the loop reference runs on")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the vectorised version (median)")
    parser.add_argument("--skip-maps", action="store_true", help="leave out the pool-5-like maps case")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_entropy.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        _limits = threadpool_limits(args.threads)  # kept for the whole run

    info = machine()
    X, y, source = vectors(args.store)
    print(f"vectors: {source['source']} {X.shape}, {len(np.unique(y))} classes", flush=True)
    filter_entropy(X[::25, :16], y[::25], thresholds=5)  # warm-up
    cases = [
        {
            "case": "vectors",
            "features": {**source, "n": len(y), "filters": int(X.shape[1]), "classes": len(np.unique(y))},
            "results": [time_case(X, y, m, s, args.repeats, args.loop_filters) for m, s in CASES],
        }
    ]
    if not args.skip_maps:
        M, ym = synthetic_maps()
        print(f"maps: synthetic {M.shape}", flush=True)
        cases.append(
            {
                "case": "maps",
                "features": {
                    "source": "synthetic",
                    "description": "ReLU of Gaussian maps, per-class gain per filter, seed 0",
                    "shape": list(M.shape),
                    "classes": 10,
                },
                "results": [
                    time_case(M, ym, m, "linear", args.repeats, max(1, args.loop_filters // 4))
                    for m in ("label", "weighted", "spmax")
                ],
            }
        )
    report = {
        "benchmark": "bench_entropy",
        "protocol": {
            "thresholds": N_THRESHOLDS,
            "vectorised": "deepfeat.analysis.filter_entropy on every filter; median of repeats after warm-up",
            "loop": "deepfeat.analysis.entropy._loop_entropy_curves (filters x thresholds x classes, one "
            "boolean mask each) timed on the first loop_filters_timed filters, one run, and extrapolated "
            "linearly to all filters (loop_seconds_extrapolated); speedup = extrapolated loop / vectorised",
            "check": "max_abs_diff_*: loop vs vectorised curves on the filters the loop ran on",
        },
        "machine": info,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
