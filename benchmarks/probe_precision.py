"""How precisely each C search solves its folds, and what that precision costs: deepfeat's
``LinearProbe(loss="logistic")`` at several search tolerances (``cv_tol``) against scikit-learn's
``LogisticRegressionCV``, two-class shapes of bench_probe.py (same features, split, folds and grid).

For every fold and every C of the grid, each search's fold solution is compared with the fold's
exact optimum of the same objective (C x summed log loss + ||w||^2 / 2, intercept unpenalised),
computed independently by scikit-learn's ``LogisticRegression(solver="newton-cholesky", tol=1e-12)``:

- ``relative_gap``: (objective at the search's solution - optimum) / optimum, the largest over folds;
- ``flips``: validation images whose predicted class differs from the exact solution's, summed over
  folds;
- ``validation_mean``: the search's mean validation accuracy per C and the C it chooses.

Then the searches are timed as whole fits (C search + refit), interleaved, medians of ``--repeats``
(benchmarks/_timing.py), threads pinned alike, with test accuracy. Two-class shapes only: the
exact reference is scikit-learn's binary objective. ``--torch-too`` adds deepfeat's default search
through its torch solvers, which two-class logistic fits on the CPU no longer take (they go to the
NumPy solver of ``deepfeat.probes.binary_logistic``).

Usage: python benchmarks/probe_precision.py [--shapes 2x300x192 2x1200x192] [--cv-tols 1e-4 1e-3]
       [--repeats 7] [--threads N] [--torch-too] [--out benchmarks/results/probe_precision.json]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from _sklearn import chosen_C as sklearn_chosen_C
from _sklearn import logistic_cv, mean_scores
from _timing import LoadGuard, interleaved, pinned_threads
from bench_probe import GRID, RESULTS, SEED, features, split_shape, targets
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from deepfeat.fileio import write_json
from deepfeat.probes import LinearProbe
from deepfeat.probes.binary_logistic import BinaryLogistic

SHAPES = ("2x300x192", "2x1200x192")
CV_TOLS = (1e-4, 1e-3)  # deepfeat's default, and ten times looser
TORCH = "deepfeat logistic, torch solvers"


@contextmanager
def torch_solvers():
    """Two-class logistic fits on the CPU through the torch solvers (the path the NumPy solver of
    :mod:`deepfeat.probes.binary_logistic` replaced there; GPUs and larger problems still take it)."""
    import deepfeat.probes.linear as linear

    real = linear.applies
    linear.applies = lambda *args: False
    try:
        yield
    finally:
        linear.applies = real


class TorchSolversProbe(LinearProbe):
    """LinearProbe fitted through :func:`torch_solvers`."""

    def fit(self, *args, **kwargs):
        with torch_solvers():
            return super().fit(*args, **kwargs)


def objective(X: np.ndarray, t: np.ndarray, coef: np.ndarray, intercept: float, C: float) -> float:
    """C x summed log loss + ||coef||^2 / 2 of labels ``t`` in {0, 1}, in float64."""
    z = X @ coef + intercept
    return float(C * np.logaddexp(0.0, np.where(t > 0, -z, z)).sum() + 0.5 * coef @ coef)


def exact_path(X: np.ndarray, t: np.ndarray, folds, Cs) -> dict:
    """{(fold, C): (coef, intercept)} solved to tol 1e-12 by scikit-learn's Newton-Cholesky."""
    out = {}
    for f, (train, _) in enumerate(folds):
        for C in Cs:
            model = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000)
            model.fit(X[train], t[train])
            out[f, C] = (model.coef_.ravel().astype(np.float64), float(model.intercept_[0]))
    return out


def sklearn_path(model, folds, Cs, d: int) -> dict:
    """The fold solutions of a fitted ``LogisticRegressionCV`` (either attribute layout)."""
    paths = model.coefs_paths_
    paths = np.asarray(next(iter(paths.values())) if isinstance(paths, dict) else paths)
    paths = paths.reshape(-1, len(folds), len(Cs), d + 1)[0]
    return {
        (f, C): (paths[f, i, :d].astype(np.float64), float(paths[f, i, d]))
        for f in range(len(folds))
        for i, C in enumerate(Cs)
    }


def deepfeat_path(probe: LinearProbe, X: np.ndarray, codes: np.ndarray, folds, Cs) -> dict:
    """The fold solutions deepfeat's search computes (the probe's own C-path protocol)."""
    probe = clone(probe)
    probe.classes_, probe.multilabel_ = np.unique(codes), False
    out = {}
    with torch.inference_mode(), torch_solvers() if isinstance(probe, TorchSolversProbe) else nullcontext():
        prepared = probe.prepare_path(X, codes, None)
        per_C = probe.fit_folds_path(prepared, folds, codes, None, Cs)
        if per_C is None:
            per_C = zip(*[list(probe.fit_path(prepared, train, codes, None, Cs)) for train, _ in folds])
        for C, models in zip(Cs, per_C):
            for f, model in enumerate(models):
                if isinstance(prepared, BinaryLogistic):  # two-class logistic on the CPU: NumPy
                    coef, intercept = (np.asarray(v, np.float64) for v in prepared.coefficients(model))
                else:
                    coef, intercept = (v.double().cpu().numpy() for v in probe._coefficients(model))
                out[f, C] = (coef.ravel(), float(intercept[0]))
    return out


def precision(solutions: dict, exact: dict, X: np.ndarray, t: np.ndarray, folds, Cs) -> dict:
    gaps, flips, scores = [], [], []
    for C in Cs:
        gap, flip, acc = 0.0, 0, []
        for f, (train, val) in enumerate(folds):
            coef, b = solutions[f, C]
            ecoef, eb = exact[f, C]
            best = objective(X[train], t[train], ecoef, eb, C)
            gap = max(gap, (objective(X[train], t[train], coef, b, C) - best) / abs(best))
            pred, epred = X[val] @ coef + b > 0, X[val] @ ecoef + eb > 0
            flip += int((pred != epred).sum())
            acc.append(float(np.mean(pred == (t[val] > 0))))
        gaps.append(gap)
        flips.append(flip)
        scores.append(float(np.mean(acc)))
    return {
        "relative_gap": gaps,
        "flips": flips,
        "validation_mean": scores,
        "chosen_C": Cs[int(np.argmax(scores))],
    }


def run_shape(key: str, cv_tols, repeats: int, torch_too: bool = False) -> dict:
    k, n, d = (int(v) for v in key.split("x"))
    if k != 2:
        raise SystemExit(f"shape {key}: two classes only (the exact reference is the binary objective)")
    X, y, feature_info = features(d)
    (Xtr, ytr, Xte, yte), codes, folds = split_shape(X, targets(X, y, k, d), n)
    X64, t = Xtr.astype(np.float64), codes.astype(np.float64)
    print(f"shape {key}: exact fold optima", flush=True)
    exact = exact_path(X64, t, folds, GRID)
    templates = {"sklearn LogisticRegressionCV": logistic_cv(GRID, folds)}
    for tol in cv_tols:
        templates[f"deepfeat logistic cv_tol={tol:g}"] = LinearProbe(
            loss="logistic", Cs=GRID, cv=3, path_patience=None, random_state=SEED, cv_tol=tol
        )
    if torch_too:  # the default tolerance through the torch solvers
        templates[TORCH] = TorchSolversProbe(
            loss="logistic", Cs=GRID, cv=3, path_patience=None, random_state=SEED
        )
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = clone(templates["sklearn LogisticRegressionCV"]).fit(Xtr, ytr)
        rows["sklearn LogisticRegressionCV"] = precision(
            sklearn_path(sk, folds, GRID, d), exact, X64, t, folds, GRID
        )
        assert np.allclose(rows["sklearn LogisticRegressionCV"]["validation_mean"], mean_scores(sk))
        for name in templates:
            if name.startswith("deepfeat"):
                path = deepfeat_path(templates[name], Xtr, codes, folds, GRID)
                rows[name] = precision(path, exact, X64, t, folds, GRID)
        rows["exact"] = precision(exact, exact, X64, t, folds, GRID)

        def runner(name):
            return lambda: clone(templates[name]).fit(Xtr, ytr)

        print(f"shape {key}: timing {len(templates)} searches x {repeats}", flush=True)
        with LoadGuard() as load:
            timings, models = interleaved({name: runner(name) for name in templates}, repeats, 1)
    base = timings["sklearn LogisticRegressionCV"]["median"]
    for name, model in models.items():
        C = sklearn_chosen_C(model) if name.startswith("sklearn") else model.C_
        rows[name].update(
            seconds=timings[name],
            speedup_over_sklearn=base / timings[name]["median"],
            C=float(C),
            test_accuracy=float(np.mean(model.predict(Xte) == yte)),
        )
        print(
            f"  {name:36s} {timings[name]['median'] * 1000:8.1f} ms  x{base / timings[name]['median']:5.2f}  "
            f"C {C:g}  acc {rows[name]['test_accuracy']:.4f}  "
            f"largest gap {max(rows[name]['relative_gap']):.1e}  flips {sum(rows[name]['flips'])}",
            flush=True,
        )
    return {
        "shape": {"classes": k, "n_train": n, "dim": d, "n_test": len(yte), "n_folds": len(folds)},
        "features": feature_info,
        "methods": rows,
        "load": load.to_dict(),
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--cv-tols", nargs="*", type=float, default=list(CV_TOLS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and BLAS threads (default: all cores)"
    )
    parser.add_argument(
        "--torch-too", action="store_true", help="also the torch solvers at the default cv_tol"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "probe_precision.json")
    args = parser.parse_args(argv)
    with pinned_threads(args.threads) as threads:
        results = {key: run_shape(key, args.cv_tols, args.repeats, args.torch_too) for key in args.shapes}
    write_json(
        args.out,
        {
            "benchmark": "probe_precision",
            "protocol": {
                "grid": GRID,
                "exact": "LogisticRegression(solver='newton-cholesky', tol=1e-12) per fold and C",
                "timing": f"fit (C search + refit), interleaved, median of {args.repeats} after 1 warm-up",
                "threads": threads,
            },
            "machine": machine(),
            "results": results,
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
