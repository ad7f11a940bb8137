"""The default evaluation at DeCAF's Caltech-101 scale, features already stored: 3 feature sets x 2
probes (``svm``, ``logreg``, C by 3-fold cross-validation over 1e-4..1e2) x 5 splits of 30 training
images per class, through :func:`deepfeat.evaluation.evaluate` (the call ``deepfeat evaluate`` makes
once the store holds the features).

Features are REAL, from the store bench_probe.py fills (benchmarks/.cache/store): EfficientNet-Lite0
``stage6`` average-pooled (192 dims) and ``pool`` (1,280 dims) of the 10,000 CIFAR-10 test images and
their concatenation (1,472 dims) as the third set, labelled with bench_probe's 102 pseudo-classes
(k-means inside each CIFAR-10 class on the stage6 features; the smallest has 34 images): 102 classes,
3,060 training and 6,940 test images per split (Caltech-101: 9,144 images, 3,060 training). The target
is the whole evaluation under 5 minutes on 2 cores.

Comparison in the same run (``--compare logistic``, the default): scikit-learn
``LogisticRegressionCV`` on the same folds grid, one split, every feature set, against deepfeat's
``logreg`` fits of that split (``--compare all`` adds ``GridSearchCV(LinearSVC)`` against ``svm``:
minutes per fit at 1,280 dims; ``--compare none`` skips it).

Usage: python benchmarks/bench_evaluate.py [--splits 5] [--jobs 1] [--compare logistic|all|none]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine
from _timing import LoadGuard, pinned_threads
from bench_probe import GRID, features, targets
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import GridSearchCV
from sklearn.svm import LinearSVC

from deepfeat.evaluation import KShot
from deepfeat.evaluation.evaluate import evaluate
from deepfeat.features.featureset import FeatureSet
from deepfeat.fileio import write_json
from deepfeat.metrics import mean_per_class_accuracy
from deepfeat.probes import LinearProbe, probe_for
from deepfeat.probes.base import make_folds

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "bench_evaluate.json"
TARGET_S = 300.0


def feature_sets() -> tuple[dict[str, FeatureSet], dict]:
    X6, y, info6 = features(192)
    Xp, y2, infop = features(1280)
    if not np.array_equal(y, y2):
        raise SystemExit("the stage6 and pool entries hold different images")
    labels = targets(X6, y, 102, 192)  # the stage6 pseudo-classes: every one has >= 31 images
    classes = [f"c{i:03d}" for i in range(102)]
    ids = [f"img{i:05d}" for i in range(len(labels))]
    rows = np.arange(len(labels))

    def fs(name, X):
        return FeatureSet(name, np.ascontiguousarray(X, dtype=np.float32), ids, labels, classes, rows, {})

    sets = {
        "stage6/avg": fs("stage6/avg", X6),
        "pool": fs("pool", Xp),
        "stage6+pool": fs("stage6+pool", np.concatenate([X6, Xp], 1)),
    }
    return sets, {"stage6": info6, "pool": infop}


def sklearn_comparison(sets: dict[str, FeatureSet], split, which: str) -> list[dict]:
    """scikit-learn's cross-validated fits on one split vs deepfeat's, same folds and grid."""
    out = []
    train, test = split.train["data"], split.test["data"]
    for name, fs in sets.items():
        Xtr, ytr, Xte, yte = fs.features[train], fs.targets[train], fs.features[test], fs.targets[test]
        folds = make_folds(np.unique(ytr, return_inverse=True)[1], 3, 0)
        pairs = [("logreg", LogisticRegressionCV(Cs=GRID, cv=folds))]
        if which == "all":
            pairs.append(("svm", GridSearchCV(LinearSVC(), {"C": GRID}, cv=folds)))
        for probe_name, theirs in pairs:
            ours = probe_for(probe_name)
            assert isinstance(ours, LinearProbe)
            row = {"features": name, "probe": probe_name, "sklearn": type(theirs).__name__}
            for label, model in (("deepfeat", ours), ("sklearn", theirs)):
                time.sleep(0.25)
                start = time.perf_counter()
                model.fit(Xtr, ytr)
                row[f"{label}_seconds"] = time.perf_counter() - start
                row[f"{label}_mean_class_accuracy"] = mean_per_class_accuracy(yte, model.predict(Xte), 102)
            row["speedup"] = row["sklearn_seconds"] / row["deepfeat_seconds"]
            print(
                f"  {name:12s} {probe_name:7s} deepfeat {row['deepfeat_seconds']:6.2f} s, "
                f"{type(theirs).__name__} {row['sklearn_seconds']:7.2f} s ({row['speedup']:.1f}x)",
                flush=True,
            )
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the fits")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads")
    parser.add_argument("--compare", choices=["logistic", "all", "none"], default="logistic")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    sets, info = feature_sets()
    protocol = KShot(k=30, n_splits=args.splits)
    probes = {"svm": probe_for("svm"), "logreg": probe_for("logreg")}
    with pinned_threads(args.threads) as threads, tempfile.TemporaryDirectory() as tmp:
        with LoadGuard() as load:
            start = time.perf_counter()
            result = evaluate(
                sets, protocol, probes, checkpoint=Path(tmp) / "checkpoint.jsonl", n_jobs=args.jobs
            )
            seconds = time.perf_counter() - start
        print(
            f"evaluation: {seconds:.1f} s for {len(result.records)} fits (target < {TARGET_S:.0f} s)",
            flush=True,
        )
        comparison = []
        if args.compare != "none":
            split = protocol.splits(sets["pool"].targets, sets["pool"].classes)[0]
            with LoadGuard() as compare_load:
                comparison = sklearn_comparison(sets, split, args.compare)
    summary = [
        {
            "features": row["features"],
            "probe": row["probe"],
            "mean_class_accuracy": row["mean_class_accuracy"],
            "C": row["C"],
        }
        for row in result.summary()
    ]
    fit_seconds = [round(r["fit_seconds"], 2) for r in result.records]
    payload = {
        "benchmark": "bench_evaluate",
        "setting": {
            "data": "CIFAR-10 test features as 102 k-means pseudo-classes (bench_probe.py); kshot:30, "
            f"{args.splits} splits; 3,060 training and 6,940 test images per split",
            "feature_sets": {name: fs.dim for name, fs in sets.items()},
            "features": info,
            "probes": {name: repr(p) for name, p in probes.items()},
            "jobs": args.jobs,
            "threads": threads,
        },
        "target": {"evaluation_seconds_below": TARGET_S},
        "evaluation_seconds": round(seconds, 2),
        "fits": len(result.records),
        "fit_seconds_by_record": fit_seconds,
        "meets_target": seconds < TARGET_S,
        "load": load.to_dict(),
        "scores": summary,
        "sklearn_comparison_one_split": comparison,
        "sklearn_comparison_load": compare_load.to_dict() if comparison else None,
        "machine": machine(),
    }
    write_json(Path(args.out), payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
