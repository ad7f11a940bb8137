"""Checks for a machine with a CUDA GPU, in one short run (under 5 minutes): each check is a named
function returning a dict; main() runs them in turn and writes benchmarks/results/gpu_check.json.

Without CUDA it prints so and writes a JSON saying the checks were skipped.

Checks
------
probe_fit
    LinearProbe (logistic and squared hinge, C by 3-fold cross-validation over the full default grid)
    on synthetic ReLU features of the Caltech-101 shape (3,060 x 1,280, 102 classes, 30 per class),
    fitted on the CPU and on CUDA: fit seconds on each, the speed-up, whether both choose the same C,
    and the largest difference of their decision values (relative to the largest value) on held-out
    rows. Also the kernel probe's linear kernel on both devices.

Usage: python benchmarks/gpu_check.py [--only NAME ...] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _machine import machine

from deepfeat.fileio import write_json

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "gpu_check.json"


def caltech_shape(seed: int = 0, n_test: int = 1020):
    """Synthetic pooled-activation-like features: 102 classes, 30 training rows each, 1,280 dims."""
    rng = np.random.default_rng(seed)
    k, d = 102, 1280
    centres = rng.normal(scale=0.35, size=(k, d))
    y = np.arange(30 * k + n_test) % k
    X = np.maximum(centres[y] + rng.normal(size=(len(y), d)), 0).astype(np.float32)
    return X[: 30 * k], y[: 30 * k], X[30 * k :], y[30 * k :]


def _timed(fn: Callable):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def check_probe_fit() -> dict:
    """Probe fit speed on CUDA vs CPU, and equal results."""
    from deepfeat.probes import KernelProbe, LinearProbe

    Xtr, ytr, Xte, yte = caltech_shape()
    LinearProbe(C=1.0, device="cuda").fit(Xtr[:300, :64], ytr[:300])  # CUDA context and kernels
    rows = {}
    for loss in ("logistic", "squared_hinge"):
        fits = {}
        for device in ("cpu", "cuda"):
            probe = LinearProbe(loss=loss, path_patience=None, device=device)
            fits[device], seconds = _timed(lambda probe=probe: probe.fit(Xtr, ytr))
            fits[device].seconds = seconds
        cpu, gpu = fits["cpu"], fits["cuda"]
        S = cpu.decision_function(Xte)
        rows[loss] = {
            "cpu_seconds": cpu.seconds,
            "cuda_seconds": gpu.seconds,
            "speedup": cpu.seconds / gpu.seconds,
            "C_cpu": cpu.C_,
            "C_cuda": gpu.C_,
            "same_C": bool(cpu.C_ == gpu.C_),
            "cv_mean_max_abs_diff": float(
                np.max(np.abs(np.array(cpu.cv_results_["mean"]) - gpu.cv_results_["mean"]))
            ),
            "decision_max_rel_diff": float(np.abs(gpu.decision_function(Xte) - S).max() / np.abs(S).max()),
            "test_accuracy_cpu": float(np.mean(cpu.predict(Xte) == yte)),
            "test_accuracy_cuda": float(np.mean(gpu.predict(Xte) == yte)),
        }
    kernels = {}
    for device in ("cpu", "cuda"):
        kernels[device], seconds = _timed(
            lambda device=device: KernelProbe(C=1.0, device=device).compute_kernel(Xtr, Xte)
        )
        rows.setdefault("linear_kernel_seconds", {})[device] = seconds
    rows["linear_kernel_max_abs_diff"] = float(np.abs(kernels["cpu"] - kernels["cuda"]).max())
    ok = all(
        rows[loss]["same_C"] and rows[loss]["decision_max_rel_diff"] < 1e-2
        for loss in ("logistic", "squared_hinge")
    )
    return {
        "shape": {"n_train": len(ytr), "n_test": len(yte), "dim": Xtr.shape[1], "classes": 102},
        **rows,
        "ok": ok,
    }


#: the checks, in the order they run; the lead adds extraction sections here
CHECKS: list[tuple[str, Callable[[], dict]]] = [("probe_fit", check_probe_fit)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="*", help=f"checks to run (default all: {', '.join(n for n, _ in CHECKS)})"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    report = {"benchmark": "gpu_check", "machine": machine(), "checks": {}}
    if not torch.cuda.is_available():
        print("CUDA is not available here: every GPU check skipped")
        report["skipped"] = "CUDA not available"
        write_json(args.out, report)
        print(f"wrote {args.out}")
        return 0
    report["gpu"] = torch.cuda.get_device_name(0)
    for name, check in CHECKS:
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        try:
            result = check()
        except Exception as exc:  # a failed check is reported, the others still run
            result = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        result["seconds"] = time.perf_counter() - start
        report["checks"][name] = result
        print(f"{name}: {'ok' if result.get('ok') else 'FAILED'} in {result['seconds']:.1f} s", flush=True)
        write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0 if all(r.get("ok") for r in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
