"""The default evaluation at DeCAF's Caltech-101 scale, features already stored: 3 feature sets x 2
probes (``svm``, ``logreg``, C by 3-fold cross-validation over 1e-4..1e2) x 5 splits of 30 training
images per class, through :func:`deepfeat.evaluation.evaluate` (the call ``deepfeat evaluate`` makes
once the store holds the features).

Features are REAL, from the store bench_probe.py fills (benchmarks/.cache/store): EfficientNet-Lite0
``stage6`` average-pooled (192 dims) and ``pool`` (1,280 dims) of the 10,000 CIFAR-10 test images and
their concatenation (1,472 dims) as the third set, labelled with bench_probe's 102 pseudo-classes
(k-means inside each CIFAR-10 class on the stage6 features; the smallest has 34 images): 102 classes,
3,060 training and 6,940 test images per split (Caltech-101: 9,144 images, 3,060 training). The target
is the whole evaluation under 5 minutes on 2 cores (the median of ``--repeats`` evaluations, each
from a fresh checkpoint).

Comparison in the same run (``--compare logistic``, the default): scikit-learn
``LogisticRegressionCV`` on the same folds grid, one split, every feature set, against deepfeat's
``logreg`` fits of that split (``--compare all`` adds ``GridSearchCV(LinearSVC)`` against ``svm``:
minutes per fit at 1,280 dims; ``--compare none`` skips it).

Usage: python benchmarks/bench_evaluate.py [--splits 5] [--jobs 1] [--compare logistic|all|none]
    [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from _machine import machine
from _sklearn import logistic_cv
from _timing import LoadGuard, interleaved, pinned_threads
from bench_probe import GRID, features, targets
from sklearn.model_selection import GridSearchCV
from sklearn.svm import LinearSVC

from deepfeat.evaluation import KShot
from deepfeat.evaluation.evaluate import evaluate
from deepfeat.features.featureset import FeatureSet
from deepfeat.fileio import write_json
from deepfeat.metrics import mean_per_class_accuracy
from deepfeat.probes import LinearProbe, probe_for
from deepfeat.probes.selection import make_folds

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


def sklearn_comparison(sets: dict[str, FeatureSet], split, which: str, repeats: int) -> list[dict]:
    """scikit-learn's cross-validated fits on one split vs deepfeat's, same folds and grid, interleaved
    (``repeats`` rounds each, medians)."""
    out = []
    train, test = split.train["data"], split.test["data"]
    for name, fs in sets.items():
        Xtr, ytr, Xte, yte = fs.features[train], fs.targets[train], fs.features[test], fs.targets[test]
        folds = make_folds(np.unique(ytr, return_inverse=True)[1], 3, 0)
        pairs = [("logreg", logistic_cv(GRID, folds))]
        if which == "all":
            pairs.append(("svm", GridSearchCV(LinearSVC(), {"C": GRID}, cv=folds)))
        for probe_name, theirs in pairs:
            ours = probe_for(probe_name)
            assert isinstance(ours, LinearProbe)
            row = {"features": name, "probe": probe_name, "sklearn": type(theirs).__name__}
            models = {"deepfeat": ours, "sklearn": theirs}
            timings, fitted = interleaved(
                {label: partial(model.fit, Xtr, ytr) for label, model in models.items()}, repeats, warmup=0
            )
            for label, model in fitted.items():
                row[f"{label}_seconds"] = timings[label]["median"]
                row[f"{label}_timings"] = timings[label]
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
    parser.add_argument(
        "--repeats", type=int, default=5, help="whole evaluations timed, and rounds of each comparison"
    )
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    sets, info = feature_sets()
    protocol = KShot(k=30, n_splits=args.splits)
    probes = {"svm": probe_for("svm"), "logreg": probe_for("logreg")}
    with pinned_threads(args.threads) as threads, tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(args.repeats))
        every: list = []

        def evaluation():  # a fresh checkpoint each time: every fit is made, none resumed
            checkpoint = Path(tmp) / f"checkpoint-{next(runs)}.jsonl"
            every.append(evaluate(sets, protocol, probes, checkpoint=checkpoint, n_jobs=args.jobs))
            return every[-1]

        with LoadGuard() as load:
            timings, results = interleaved({"evaluation": evaluation}, args.repeats, warmup=0)
        result, seconds = results["evaluation"], timings["evaluation"]["median"]
        print(
            f"evaluation: median {seconds:.1f} s of {args.repeats} for {len(result.records)} fits each "
            f"(target < {TARGET_S:.0f} s)",
            flush=True,
        )
        comparison = []
        if args.compare != "none":
            split = protocol.splits(sets["pool"].targets, sets["pool"].classes)[0]
            with LoadGuard() as compare_load:
                comparison = sklearn_comparison(sets, split, args.compare, args.repeats)
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
        "evaluation_timings": timings["evaluation"],
        "fits": len(result.records),
        "fit_seconds_by_record": fit_seconds,
        "meets_target": seconds < TARGET_S,
        # the same folds and fits every time: the scores and Cs must not move between repeats
        "scores_identical_across_repeats": all(
            [(r["mean_class_accuracy"], r["C"]) for r in run.summary()]
            == [(r["mean_class_accuracy"], r["C"]) for r in result.summary()]
            for run in every
        ),
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
