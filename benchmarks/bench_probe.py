"""Probe training speed: deepfeat's LinearProbe vs scikit-learn, C chosen over the same grid and folds.

Features: EfficientNet-Lite0 ``pool`` features (1280 dims) of the 10,000 CIFAR-10 test images, read from
a feature store (``--store``; extracted into it first when it has none and ../shared/datasets/
cifar10_test exists), else synthetic (10 Gaussian classes in 1280 dims through a ReLU). A seeded
permutation splits them into 8,000 training and 2,000 test images. Every method picks C from
``np.logspace(-4, 2, 7)`` by 3-fold stratified cross-validation on the training images (the same
folds everywhere), refits on all of them and is scored on the test images:

- deepfeat ``LinearProbe(loss="logistic")`` and ``LinearProbe(loss="squared_hinge")``, each with the
  default ``path_patience=2`` (early stop along the C path) and with ``path_patience=None``;
- scikit-learn ``LogisticRegressionCV`` (lbfgs, warm-started along the C path) with its default
  ``max_iter=100`` and with ``max_iter=1000``;
- scikit-learn ``GridSearchCV(LinearSVC(), {"C": grid})``.

Times are wall-clock seconds of ``fit`` (search and refit), one run each, after a warm-up of torch.
Writes benchmarks/results/bench_probe.json. Usage:
python benchmarks/bench_probe.py [--store PATH] [--threads N] [--skip-long]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from deepfeat.probes import LinearProbe
from deepfeat.probes.selection import make_folds

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_STORE = REPO / "benchmarks" / ".cache" / "store"
CIFAR = REPO.parent / "shared" / "datasets" / "cifar10_test"
GRID = np.logspace(-4, 2, 7)
N_TRAIN, FOLD_SEED, SPLIT_SEED = 8000, 0, 0
TARGET = {"speedup_at_least": 3.0, "accuracy_within_points": 0.5}


# -- features ----------------------------------------------------------------------------------------


def pool_entry(store: Path) -> dict | None:
    """meta.json of a complete ``pool`` entry of the store, if it has one."""
    from deepfeat.features.store import FeatureStore

    if not (store / "entries").is_dir():
        return None
    entries = [
        m
        for m in FeatureStore(store).entries()
        if m["provenance"].get("layer") == "pool" and m.get("complete") and m.get("dim")
    ]
    return entries[0] if entries else None


def load_store(store: Path, meta: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """Features and labels of a stored ``pool`` entry (rows that failed to decode left out)."""
    from deepfeat.features.store import FeatureStore, StoreEntry

    prov = meta["provenance"]
    X = np.load(Path(meta["path"]) / "features.npy")
    index = FeatureStore(store).load_dataset_index(prov["dataset"])
    y = np.asarray(index["targets"])
    if meta.get("n_failed"):
        valid = StoreEntry(Path(meta["path"]), prov, meta["n_rows"]).status().valid
        X, y = X[valid], y[valid]
    info = {
        "store": str(store),
        "entry": Path(meta["path"]).name,
        "dataset": index.get("name"),
        "backbone": prov.get("backbone"),
        "layer": prov.get("layer"),
    }
    return np.ascontiguousarray(X, dtype=np.float32), y, info


def extract_cifar(store: Path) -> None:
    """Fill ``store`` with EfficientNet-Lite0 pool features of ../shared/datasets/cifar10_test."""
    from deepfeat.backbones import load_backbone
    from deepfeat.data import folder_dataset
    from deepfeat.features import LayerActivations, extract

    print(f"extracting pool features of {CIFAR} into {store} (several minutes)", flush=True)
    result = extract(
        folder_dataset(CIFAR), load_backbone("efficientnet_lite0"), [LayerActivations("pool")], store=store
    )
    print(f"extracted in {result.seconds:.0f} s, {len(result.failures)} images failed", flush=True)


def synthetic(n: int = 10000, d: int = 1280, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """10 Gaussian classes in 1280 dims through a ReLU (non-negative, like pooled activations)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.09, size=(k, d))  # ~80% test accuracy, like the real ones
    y = np.repeat(np.arange(k), n // k)
    X = np.maximum(centres[y] + rng.normal(size=(len(y), d)), 0.0)
    return X.astype(np.float32), y


def features(store: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    meta = pool_entry(store)
    if meta is None and CIFAR.is_dir():
        extract_cifar(store)
        meta = pool_entry(store)
        if meta is not None:
            X, y, info = load_store(store, meta)
            return X, y, {"source": "extracted", **info}
    if meta is not None:
        X, y, info = load_store(store, meta)
        return X, y, {"source": "store", **info}
    X, y = synthetic()
    return X, y, {"source": "synthetic", "description": "10 Gaussian classes, 1280 dims, ReLU, seed 0"}


# -- methods -----------------------------------------------------------------------------------------


def chosen_C(model) -> float:
    if isinstance(model, LinearProbe):
        return float(model.C_)
    if isinstance(model, GridSearchCV):
        return float(model.best_params_["C"])
    return float(np.ravel(model.C_)[0])


def methods(folds: StratifiedKFold, skip_long: bool) -> list[tuple[str, str, object]]:
    """(name, family, unfitted model) for every method compared."""
    grid = [float(c) for c in GRID]
    out = [
        (
            "deepfeat logistic",
            "logistic",
            LinearProbe(loss="logistic", Cs=grid, cv=3, random_state=FOLD_SEED),
        ),
        (
            "deepfeat logistic, full grid",
            "logistic",
            LinearProbe(loss="logistic", Cs=grid, cv=3, random_state=FOLD_SEED, path_patience=None),
        ),
        (
            "deepfeat squared_hinge",
            "svm",
            LinearProbe(loss="squared_hinge", Cs=grid, cv=3, random_state=FOLD_SEED),
        ),
        (
            "deepfeat squared_hinge, full grid",
            "svm",
            LinearProbe(loss="squared_hinge", Cs=grid, cv=3, random_state=FOLD_SEED, path_patience=None),
        ),
        ("sklearn LogisticRegressionCV", "logistic", LogisticRegressionCV(Cs=grid, cv=folds)),
    ]
    if not skip_long:
        out.append(
            (
                "sklearn LogisticRegressionCV, max_iter=1000",
                "logistic",
                LogisticRegressionCV(Cs=grid, cv=folds, max_iter=1000),
            )
        )
    out.append(("sklearn GridSearchCV(LinearSVC)", "svm", GridSearchCV(LinearSVC(), {"C": grid}, cv=folds)))
    return out


def run(name: str, model, Xtr, ytr, Xte, yte) -> dict:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(Xtr, ytr)
        seconds = time.perf_counter() - start
    acc = float(np.mean(model.predict(Xte) == yte))
    row = {
        "method": name,
        "seconds": round(seconds, 2),
        "test_accuracy": round(acc, 4),
        "C": chosen_C(model),
        "convergence_warnings": sum(issubclass(w.category, ConvergenceWarning) for w in caught),
    }
    if isinstance(model, LinearProbe):
        row["Cs_evaluated"] = len(model.cv_results_["evaluated"])
    print(f"{name:46s} {seconds:7.1f} s  acc {acc:.4f}  C {row['C']:g}", flush=True)
    return row


def compare(rows: list[dict], families: dict[str, str]) -> list[dict]:
    """Every scikit-learn method against every deepfeat method of the same family."""
    out = []
    for sk in (r for r in rows if r["method"].startswith("sklearn")):
        for df in (r for r in rows if r["method"].startswith("deepfeat")):
            if families[sk["method"]] != families[df["method"]]:
                continue
            speedup = sk["seconds"] / df["seconds"]
            diff = 100 * (df["test_accuracy"] - sk["test_accuracy"])
            out.append(
                {
                    "sklearn": sk["method"],
                    "deepfeat": df["method"],
                    "speedup": round(speedup, 2),
                    "accuracy_diff_points": round(diff, 2),
                    "meets_target": bool(
                        speedup >= TARGET["speedup_at_least"] and diff >= -TARGET["accuracy_within_points"]
                    ),
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="feature store to read (or fill)")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: as set)")
    parser.add_argument(
        "--skip-long", action="store_true", help="leave out LogisticRegressionCV max_iter=1000"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_probe.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        _limits = threadpool_limits(args.threads)  # kept for the whole run

    X, y, source = features(args.store)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    train, test = perm[:N_TRAIN], perm[N_TRAIN:]
    Xtr, ytr, Xte, yte = X[train], y[train], X[test], y[test]
    folds = StratifiedKFold(3, shuffle=True, random_state=FOLD_SEED)
    # the folds deepfeat draws are exactly these
    codes = np.unique(ytr, return_inverse=True)[1]
    for (a, b), (c, d) in zip(make_folds(codes, 3, FOLD_SEED), folds.split(Xtr, ytr), strict=True):
        assert np.array_equal(a, c) and np.array_equal(b, d), "deepfeat and sklearn folds differ"
    print(f"features: {source['source']} {X.shape}, train {len(train)}, test {len(test)}", flush=True)

    LinearProbe(C=1.0).fit(Xtr[:200, :64], ytr[:200])  # warm-up: torch's one-time start-up cost
    info = machine()
    rows, families = [], {}
    for name, family, model in methods(folds, args.skip_long):
        families[name] = family
        rows.append(run(name, model, Xtr, ytr, Xte, yte))
    comparisons = compare(rows, families)
    report = {
        "benchmark": "bench_probe",
        "features": {**source, "n": len(y), "dim": int(X.shape[1]), "classes": len(np.unique(y))},
        "protocol": {
            "grid": [float(c) for c in GRID],
            "cv": "StratifiedKFold(3, shuffle=True, random_state=0), identical folds for every method",
            "split": f"np.random.default_rng({SPLIT_SEED}).permutation: {N_TRAIN} train, {len(test)} test",
            "timing": "wall seconds of fit (C search + refit), one run, torch warmed up",
        },
        "target": {
            **TARGET,
            "statement": "deepfeat >= 3x faster than scikit-learn at test accuracy within 0.5 points",
        },
        "machine": info,
        "results": rows,
        "comparisons": comparisons,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print()
    for c in comparisons:
        print(
            f"{c['sklearn']:44s} / {c['deepfeat']:34s} {c['speedup']:6.2f}x  "
            f"{c['accuracy_diff_points']:+.2f} pts  {'meets' if c['meets_target'] else 'misses'} target"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
