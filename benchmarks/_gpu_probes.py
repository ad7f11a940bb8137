"""The probe check of benchmarks/gpu_check.py (from the probes work): a function returning a dict with ``ok``.

``probe_fit``: LinearProbe (logistic and squared hinge, C by 3-fold cross-validation over the full default
grid) on synthetic ReLU features of the Caltech-101 shape (3,060 x 1,280, 102 classes, 30 per class),
fitted on the CPU and on the device: fit seconds on each, the speed-up, whether both choose the same C,
and the largest difference of their decision values (relative to the largest value) on held-out rows.
Also the kernel probe's linear kernel on both devices.

``device`` and the shape are parameters so that the check can be tried on the CPU
(``gpu_check.py --cpu``: the CPU against itself at a small shape).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def caltech_shape(
    seed: int = 0, classes: int = 102, per_class: int = 30, dim: int = 1280, n_test: int = 1020
):
    """Synthetic pooled-activation-like features: ``classes`` classes, ``per_class`` training rows each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.35, size=(classes, dim))
    y = np.arange(per_class * classes + n_test) % classes
    X = np.maximum(centres[y] + rng.normal(size=(len(y), dim)), 0).astype(np.float32)
    n = per_class * classes
    return X[:n], y[:n], X[n:], y[n:]


def _timed(fn: Callable, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def check_probe_fit(
    device: str = "cuda", classes: int = 102, per_class: int = 30, dim: int = 1280, n_test: int = 1020
) -> dict:
    """Probe fit speed on the device vs the CPU, and equal results."""
    from deepfeat.probes import KernelProbe, LinearProbe

    Xtr, ytr, Xte, yte = caltech_shape(classes=classes, per_class=per_class, dim=dim, n_test=n_test)
    LinearProbe(C=1.0, device=device).fit(Xtr[:300, :64], ytr[:300])  # CUDA context and kernels
    rows = {}
    for loss in ("logistic", "squared_hinge"):
        fits = {}
        for name, dev in (("cpu", "cpu"), ("device", device)):
            probe = LinearProbe(loss=loss, path_patience=None, device=dev)
            fits[name] = _timed(lambda probe=probe: probe.fit(Xtr, ytr), dev)
        (cpu, cpu_s), (gpu, gpu_s) = fits["cpu"], fits["device"]
        S = cpu.decision_function(Xte)
        rows[loss] = {
            "cpu_seconds": cpu_s,
            "device_seconds": gpu_s,
            "speedup": cpu_s / gpu_s,
            "C_cpu": cpu.C_,
            "C_device": gpu.C_,
            "same_C": bool(cpu.C_ == gpu.C_),
            "cv_mean_max_abs_diff": float(
                np.max(np.abs(np.array(cpu.cv_results_["mean"]) - gpu.cv_results_["mean"]))
            ),
            "decision_max_rel_diff": float(np.abs(gpu.decision_function(Xte) - S).max() / np.abs(S).max()),
            "test_accuracy_cpu": float(np.mean(cpu.predict(Xte) == yte)),
            "test_accuracy_device": float(np.mean(gpu.predict(Xte) == yte)),
        }
    kernels = {}
    for name, dev in (("cpu", "cpu"), ("device", device)):
        kernels[name], seconds = _timed(
            lambda dev=dev: KernelProbe(C=1.0, device=dev).compute_kernel(Xtr, Xte), dev
        )
        rows.setdefault("linear_kernel_seconds", {})[name] = seconds
    rows["linear_kernel_max_abs_diff"] = float(np.abs(kernels["cpu"] - kernels["device"]).max())
    ok = all(
        rows[loss]["same_C"] and rows[loss]["decision_max_rel_diff"] < 1e-2
        for loss in ("logistic", "squared_hinge")
    )
    return {
        "device": device,
        "shape": {"n_train": len(ytr), "n_test": len(yte), "dim": Xtr.shape[1], "classes": classes},
        **rows,
        "ok": ok,
    }


#: (name, check) in the order gpu_check.py runs them
CHECKS: list[tuple[str, Callable[..., dict]]] = [("probe_fit", check_probe_fit)]

#: the small shape of the CPU trial (gpu_check.py --cpu)
CPU_TRIAL = {"device": "cpu", "classes": 10, "per_class": 20, "dim": 64, "n_test": 100}
