"""Filter entropy speed: deepfeat's vectorised entropy curves vs a plain loop over filters and thresholds.

Cases (the layer shapes the entropy analysis meets; 10 classes, 100 threshold levels):

- ``pool``: 5000 EfficientNet-Lite0 ``pool`` vectors (1280 filters) of CIFAR-10 test images from a
  feature store (``--store``; 5000 rows drawn by a seeded permutation), else synthetic (10 Gaussian
  classes through a ReLU); label / weighted entropy with linear levels, label entropy with quantiles;
- ``fc7``: 5000 synthetic vectors of 4096 filters (AlexNet / VGG16 fc6-fc7 width);
- ``pool5``: synthetic maps 2000 x 256 x 6 x 6 (AlexNet pool5); label, weighted, spatial-max;
- ``stage4``: synthetic maps 1000 x 80 x 14 x 14 (EfficientNet-Lite0 stage4 at 224); label, spatial-max;
- ``head``: synthetic maps 1000 x 1280 x 7 x 7 (EfficientNet-Lite0 head at 224); label.

For each case and entropy method, three timings are interleaved (``benchmarks/_timing.py``: A, B, C, A,
B, C, ..., median of ``--repeats`` >= 5 runs after a warm-up, with the spread): ``filter_entropy`` on
every filter, ``filter_entropy`` on a subset of ``--loop-filters`` evenly spaced filters, and the
reference loop (``deepfeat.analysis.entropy._loop_entropy_curves``: for every filter, threshold and
class, a boolean mask over the responses) on the same subset. The loop is far too slow for every
filter: the JSON gives the measured subset ratio (loop / vectorised on the same filters) and the loop
extrapolated linearly to all filters (its cost per filter does not depend on the filter's values) over
the vectorised time on all filters, flagged ``extrapolated``. The curves must agree on the subset
(loop vs vectorised, subset run vs full run); the script exits with status 1 when they do not.

Threads (torch and BLAS) are pinned to the same number for every method, the allocator is tuned once
as the ``deepfeat`` command does, and the load average before and after is recorded (``--strict``
refuses to start on a busy machine). Writes benchmarks/results/bench_entropy.json (``--quick``:
bench_entropy.quick.json, not kept in git).

Usage: python benchmarks/bench_entropy.py [--quick] [--store PATH] [--threads N] [--cases pool,head]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _machine import machine
from _timing import LoadGuard, interleaved, pinned_threads, ratio

from deepfeat.analysis import filter_entropy
from deepfeat.analysis._inputs import as_maps
from deepfeat.analysis.entropy import _loop_entropy_curves
from deepfeat.fileio import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_STORE = REPO / "benchmarks" / ".cache" / "store"
N_THRESHOLDS, N_CLASSES, SEED = 100, 10, 0
TOLERANCE = 1e-9  # entropies in nats and AuE, float64 on both sides

# name -> (kind, shape (n, C) or (n, C, H, W), [(method, spacing)]); smaller shapes for --quick below
CASES = {
    "pool": ("vectors", (5000, 1280), [("label", "linear"), ("weighted", "linear"), ("label", "quantile")]),
    "fc7": ("vectors", (5000, 4096), [("label", "linear")]),
    "pool5": ("maps", (2000, 256, 6, 6), [("label", "linear"), ("weighted", "linear"), ("spmax", "linear")]),
    "stage4": ("maps", (1000, 80, 14, 14), [("label", "linear"), ("spmax", "linear")]),
    "head": ("maps", (1000, 1280, 7, 7), [("label", "linear")]),
}
QUICK_SHAPES = {
    "pool": (1000, 1280),
    "fc7": (1000, 4096),
    "pool5": (400, 256, 6, 6),
    "stage4": (200, 80, 14, 14),
    "head": (200, 1280, 7, 7),
}


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


def synthetic_vectors(n: int, d: int, k: int = N_CLASSES, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """ReLU of k Gaussian classes in d dims."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.5, size=(k, d))
    y = np.arange(n) % k
    X = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, 1000):  # in chunks: no float64 temporary of the whole array
        rows = y[i : i + 1000]
        X[i : i + len(rows)] = np.maximum(centres[rows] + rng.normal(size=(len(rows), d)), 0)
    return X, y


def synthetic_maps(shape: tuple[int, ...], k: int = N_CLASSES, seed: int = SEED):
    """ReLU maps whose filters respond more strongly, at random places, to some classes."""
    n, c, h, w = shape
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    gain = rng.gamma(2.0, 0.5, size=(k, c)).astype(np.float32)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    x *= gain[y][:, :, None, None]
    return np.maximum(x, 0, out=x), y


def case_data(name: str, shape: tuple[int, ...], store: Path | None) -> tuple[np.ndarray, np.ndarray, dict]:
    kind = CASES[name][0]
    if kind == "maps":
        X, y = synthetic_maps(shape)
        return X, y, {"source": "synthetic", "description": "ReLU of Gaussian maps, per-class gain, seed 0"}
    found = store_features(store) if name == "pool" and store is not None else None
    if found is None:
        X, y = synthetic_vectors(shape[0], shape[1])
        return X, y, {"source": "synthetic", "description": "10 Gaussian classes, ReLU, seed 0"}
    X, y, info = found
    rows = np.sort(np.random.default_rng(SEED).permutation(len(y))[: shape[0]])
    info["rows"] = f"np.random.default_rng({SEED}).permutation, first {shape[0]}, sorted"
    return X[rows], y[rows], info


# -- timing ------------------------------------------------------------------------------------------


def time_method(
    X: np.ndarray, y: np.ndarray, method: str, spacing: str, repeats: int, loop_filters: int
) -> dict:
    """Vectorised on all filters, vectorised and loop on the same subset, interleaved."""
    n_filters = X.shape[1]
    subset = np.unique(np.linspace(0, n_filters - 1, min(loop_filters, n_filters)).round().astype(int))
    Xs = np.ascontiguousarray(X[:, subset])  # sliced once, outside the timings
    maps_s = as_maps(Xs)
    classes, codes = np.unique(y, return_inverse=True)
    levels = np.linspace(0.0, 1.0, N_THRESHOLDS)
    kwargs = {"method": method, "spacing": spacing, "thresholds": N_THRESHOLDS}
    methods = {
        "vectorised_all": lambda: filter_entropy(X, y, **kwargs),
        "vectorised_subset": lambda: filter_entropy(Xs, y, **kwargs),
        "loop_subset": lambda: _loop_entropy_curves(maps_s, codes, len(classes), method, levels, spacing),
    }
    times, out = interleaved(methods, repeats=repeats, warmup=1)
    full, part = out["vectorised_all"], out["vectorised_subset"]
    thr, ent, aue = out["loop_subset"]
    diffs = {
        "loop_vs_vectorised_thresholds": float(np.abs(thr - full.thresholds[subset]).max()),
        "loop_vs_vectorised_entropy": float(np.abs(ent - full.entropy[subset]).max()),
        "loop_vs_vectorised_aue": float(np.abs(aue - full.aue[subset]).max()),
        "subset_vs_full_entropy": float(np.abs(part.entropy - full.entropy[subset]).max()),
    }
    scale = max(1.0, float(np.abs(full.thresholds).max()))
    agree = (
        diffs["loop_vs_vectorised_thresholds"] <= 1e-6 * scale
        and max(v for k, v in diffs.items() if "thresholds" not in k) <= TOLERANCE
    )
    loop_all = times["loop_subset"]["median"] * n_filters / len(subset)
    row = {
        "method": method,
        "spacing": spacing,
        "filters": n_filters,
        "subset_filters": len(subset),
        "timings": times,
        "vectorised_all_seconds": times["vectorised_all"]["median"],
        "subset_ratio_loop_over_vectorised": ratio(times, "loop_subset", "vectorised_subset"),
        "loop_all_seconds_extrapolated": loop_all,
        "speedup_extrapolated": loop_all / times["vectorised_all"]["median"],
        "extrapolated": len(subset) < n_filters,
        "max_abs_diff": diffs,
        "agree": agree,
    }
    print(
        f"  {method:8s} {spacing:8s} vectorised {times['vectorised_all']['median']:7.3f} s "
        f"(spread {times['vectorised_all']['spread']:.0%}) | subset of {len(subset)}: loop / vectorised "
        f"x{row['subset_ratio_loop_over_vectorised']:.1f} | loop extrapolated {loop_all:7.1f} s "
        f"-> x{row['speedup_extrapolated']:.0f}{'' if agree else '  DISAGREE'}",
        flush=True,
    )
    return row


def run_case(name: str, shape: tuple[int, ...], store: Path | None, repeats: int, loop_filters: int) -> dict:
    kind, _, methods = CASES[name]
    X, y, source = case_data(name, shape, store)
    print(f"{name}: {source['source']} {kind} {X.shape}, {len(np.unique(y))} classes", flush=True)
    filters = loop_filters if kind == "vectors" else max(4, loop_filters // 4)
    return {
        "case": name,
        "kind": kind,
        "features": {**source, "shape": list(X.shape), "classes": len(np.unique(y))},
        "results": [time_method(X, y, m, s, repeats, filters) for m, s in methods],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images per case, 3 repeats")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="feature store with pool features")
    parser.add_argument("--threads", type=int, default=None, help="torch / BLAS threads (default: all cores)")
    parser.add_argument("--loop-filters", type=int, default=32, help="filters the loop runs on (maps: a 4th)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method (5; quick: 3)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--strict", action="store_true", help="refuse to start on a busy machine")
    parser.add_argument("--out", type=Path, default=None, help="default: results/bench_entropy[.quick].json")
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
        filter_entropy(np.ones((20, 4), np.float32), np.arange(20) % 2, thresholds=5)  # torch's start-up
        shapes = QUICK_SHAPES if args.quick else {c: spec[1] for c, spec in CASES.items()}
        results = [run_case(c, shapes[c], args.store, repeats, args.loop_filters) for c in cases]
    report = {
        "benchmark": "bench_entropy",
        "quick": args.quick,
        "protocol": {
            "thresholds": N_THRESHOLDS,
            "repeats": repeats,
            "timing": "interleaved (vectorised_all, vectorised_subset, loop_subset) after one warm-up "
            "round; medians with min, max and spread = (max - min) / median",
            "vectorised": "deepfeat.analysis.filter_entropy",
            "loop": "deepfeat.analysis.entropy._loop_entropy_curves (filters x thresholds x classes, one "
            "boolean mask each) on subset_filters evenly spaced filters",
            "extrapolation": "loop_all_seconds_extrapolated = loop_subset median * filters / "
            "subset_filters; speedup_extrapolated = that / vectorised_all median; "
            "subset_ratio_loop_over_vectorised is measured on the same filters",
            "check": "max_abs_diff: loop vs vectorised curves on the subset and the subset run vs the "
            f"full run; agree: entropies and AuE within {TOLERANCE:g}, thresholds within 1e-6 relative",
        },
        "machine": info,
        "load": guard.to_dict(),
        "cases": results,
    }
    out = args.out or RESULTS / ("bench_entropy.quick.json" if args.quick else "bench_entropy.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    print(f"wrote {out}")
    if not guard.quiet:
        print(f"measured under load (load average {guard.before} -> {guard.after}): flagged quiet: false")
    disagree = [(c["case"], r["method"]) for c in results for r in c["results"] if not r["agree"]]
    if disagree:
        print(f"the loop and the vectorised curves disagree for {disagree}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
