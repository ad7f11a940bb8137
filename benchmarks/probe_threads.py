"""Where two-class logistic fits should leave torch for NumPy, and on how many BLAS threads: whole
``LinearProbe(loss="logistic")`` fits (C search + final fit) through deepfeat's NumPy solver
(``deepfeat.probes.binary_logistic``) on one and on two BLAS threads, and through its torch solvers,
on the features and splits of bench_probe.py.

Two measurements per shape, each interleaved (benchmarks/_timing.py), medians of ``--repeats``:

- ``alone``: one logistic fit, after the usual pause (idle thread pools have settled);
- ``pairs``: three rounds of a logistic fit straight followed by a squared-hinge fit (torch), as
  ``deepfeat evaluate --probe logreg,svm`` runs them split after split: a NumPy fit on two BLAS
  threads leaves workers spinning beside the torch fit that follows (timed per round).

This is the evidence behind ``MAX_ENTRIES`` and ``one_blas_thread`` (PROBES.md run (bl)); it times
the rule's alternatives, not the rule (``--shapes`` beyond ``MAX_ENTRIES`` still run NumPy here).

Usage: python benchmarks/probe_threads.py [--shapes 2x300x192 2x1200x192 2x3060x192 2x8000x192]
       [--repeats 7] [--out benchmarks/results/probe_threads.json]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

from _machine import machine
from _timing import LoadGuard, interleaved, pinned_threads
from bench_probe import RESULTS, deepfeat_probe, features, split_shape, targets
from sklearn.base import clone
from threadpoolctl import ThreadpoolController

import deepfeat.probes.binary_logistic as binary_logistic
import deepfeat.probes.linear as linear
from deepfeat.fileio import write_json

SHAPES = ("2x300x192", "2x1200x192", "2x2000x192", "2x3060x192", "2x8000x192")
MODES = ("numpy, 1 BLAS thread", "numpy, 2 BLAS threads", "torch solvers")
ROUNDS = 3


def per_round(timing: dict) -> dict:
    """A timing summary (benchmarks/_timing.py) of ROUNDS rounds, per round (the spread is a ratio)."""
    out = dict(timing)
    for key in ("median", "min", "max"):
        out[key] = timing[key] / ROUNDS
    out["times"] = [t / ROUNDS for t in timing["times"]]
    return out


@contextmanager
def mode(name: str, blas: ThreadpoolController):
    """Fits inside take the path and BLAS threads of mode ``name``."""
    applies, one_thread = linear.applies, linear.one_blas_thread
    if name == "torch solvers":
        linear.applies = lambda *args: False
    else:  # the NumPy solver at any size; its BLAS threads as the mode says
        linear.applies = lambda loss, k, ml, dropout, device, shape: binary_logistic.applies(
            loss, k, ml, dropout, device, (2, shape[1])
        )
        linear.one_blas_thread = nullcontext
    threads = 1 if name.startswith("numpy, 1") else 2
    try:
        with blas.limit(limits=threads, user_api="blas"):
            yield
    finally:
        linear.applies, linear.one_blas_thread = applies, one_thread


def run_shape(key: str, repeats: int, blas: ThreadpoolController) -> dict:
    k, n, d = (int(v) for v in key.split("x"))
    X, y, feature_info = features(d)
    (Xtr, ytr, _, _), _, _ = split_shape(X, targets(X, y, k, d), n)

    def alone(name):
        def fit():
            with mode(name, blas):
                return clone(deepfeat_probe("logistic")).fit(Xtr, ytr)

        return fit

    def pairs(name):
        def fit():
            with mode(name, blas):
                for _ in range(ROUNDS):
                    model = clone(deepfeat_probe("logistic")).fit(Xtr, ytr)
                    clone(deepfeat_probe("squared_hinge")).fit(Xtr, ytr)
            return model

        return fit

    out = {"shape": {"classes": k, "n_train": n, "dim": d}, "features": feature_info}
    with warnings.catch_warnings(), LoadGuard() as load:
        warnings.simplefilter("ignore")
        for label, make in (("alone", alone), ("pairs", pairs)):
            timings, models = interleaved({name: make(name) for name in MODES}, repeats, 1)
            if label == "pairs":  # per round
                timings = {name: per_round(t) for name, t in timings.items()}
            Cs = {name: float(model.C_) for name, model in models.items()}
            out[label] = {name: {"seconds": timings[name], "C": Cs[name]} for name in MODES}
            base = timings["torch solvers"]["median"]
            line = "  ".join(f"{name} {timings[name]['median'] * 1000:7.1f} ms" for name in MODES)
            print(f"{key} {label:5s} {line}  (torch / numpy-1: {base / timings[MODES[0]]['median']:.2f}x)")
    out["load"] = load.to_dict()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "probe_threads.json")
    args = parser.parse_args(argv)
    blas = ThreadpoolController()
    with pinned_threads(2) as threads:
        results = {key: run_shape(key, args.repeats, blas) for key in args.shapes}
    write_json(
        args.out,
        {
            "benchmark": "probe_threads",
            "protocol": {
                "modes": list(MODES),
                "timing": f"interleaved, median of {args.repeats} after 1 warm-up; torch threads {threads}",
                "max_entries": binary_logistic.MAX_ENTRIES,
            },
            "machine": machine(),
            "results": results,
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
