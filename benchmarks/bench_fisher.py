"""Fisher vectors: deepfeat vs skimage.feature.fisher_vector, the FV layer's forward + backward pass, and
peak memory, in the setting of Table 1 of Wieschollek et al. (a batch of 24 images, 10^4 descriptors of
64 dimensions each, a GMM of 32 components: Fisher vectors of 4128 dimensions).

Descriptors are drawn from a random 32-component diagonal GMM (seed 0). The GMM encoded with is fitted
by deepfeat's ``FisherEncoder`` (no PCA, 50,000 descriptors, k-means++ start, EM) and handed to both
sides (skimage gets it as the equivalent scikit-learn ``GaussianMixture``).

(a) encode: the 24 improved Fisher vectors (signed square root, L2) by ``skimage.feature.fisher_vector``
    (one call per image) and by ``deepfeat.features.fisher.fisher_vectors`` (float32 and float64, one
    call for the batch, skimage's convention so the outputs can be compared) and ``FisherEncoder
    .transform``; median wall seconds of ``--repeats`` runs, the ratio, the largest difference.
(b) layer: ``FisherVectorLayer`` + ``FVNormalization`` forward and backward (float32) w.r.t. the
    descriptors and the GMM parameters (nu, mu, zeta), the backward signal the paper's -y theta for 20
    classes; also with the ``FeatureTransform`` tanh(W z + b) in front (gradients for W and b as well).
(c) memory: each of the above once in a fresh subprocess; the rise of the peak resident set size
    (``ru_maxrss``) over the resident size once the inputs exist, against the size of the
    (images x descriptors x D x K) tensor that an unvectorised-by-statistics implementation would hold.

Writes benchmarks/results/bench_fisher.json. Usage:
python benchmarks/bench_fisher.py [--threads N] [--repeats R] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage
import torch
from _machine import machine
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
N_IMAGES, N_DESC, DIM, K, N_CLASSES = 24, 10_000, 64, 32, 20
TARGET = {"encode_speedup_at_least": 3.0, "layer_forward_backward_below_s": 0.5}
PAPER_TABLE1 = {
    "setting": "24 images x 1e4 SIFT-PCA descriptors (64 dims), K=32, one batch",
    "matlab_one_cpu_core_s": {"fv": 9.06, "d_params": 18.9 * 3600, "d_x": 1.9 * 3600, "sum": 19.1 * 3600},
    "titan_x_gpu_s": {"fv": 0.020, "d_params": 10.79, "d_x": 2.89, "sum": 13.71},
}


# -- data --------------------------------------------------------------------------------------------


def descriptors(seed: int = 0) -> np.ndarray:
    """(24, 1e4, 64) float32 descriptors from a random diagonal GMM of 32 components."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(K, DIM)).astype(np.float32)
    sds = np.sqrt(rng.uniform(0.2, 1.5, size=(K, DIM))).astype(np.float32)
    weights = rng.dirichlet(np.full(K, 2.0))
    x = np.empty((N_IMAGES, N_DESC, DIM), dtype=np.float32)
    for i in range(N_IMAGES):  # image by image: no transient copy of the whole array
        comp = rng.choice(K, size=N_DESC, p=weights)
        x[i] = rng.standard_normal((N_DESC, DIM), dtype=np.float32) * sds[comp] + means[comp]
    return x


def median_time(fn, repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


# -- (a) encoding ------------------------------------------------------------------------------------


def sk_repeats(repeats: int) -> int:
    return max(1, min(repeats, 3))


def bench_encode(X: np.ndarray, enc, repeats: int) -> dict:
    from skimage.feature import fisher_vector

    from deepfeat.features.fisher import fisher_vectors

    gmm, sk_gmm = enc.gmm_, enc.gmm_.to_sklearn()
    Xt = torch.from_numpy(X)
    Xt64 = Xt.double()

    def ours(x):
        return fisher_vectors(x, gmm, power=0.5, l2=True, convention="skimage")

    ours(Xt[:2])  # warm-up
    t_sk, ref = median_time(
        lambda: np.stack([fisher_vector(x, sk_gmm, improved=True, alpha=0.5) for x in X]),
        sk_repeats(repeats),
    )
    t32, f32 = median_time(lambda: ours(Xt), repeats)
    t64, f64 = median_time(lambda: ours(Xt64), repeats)
    t_enc, f_enc = median_time(lambda: enc.transform(X), repeats)
    rows = {
        "skimage fisher_vector (per image, float64 inside)": {"seconds": t_sk},
        "deepfeat fisher_vectors float32": {
            "seconds": t32,
            "speedup_vs_skimage": t_sk / t32,
            "max_abs_diff_vs_skimage": float(np.abs(f32.numpy() - ref).max()),
        },
        "deepfeat fisher_vectors float64": {
            "seconds": t64,
            "speedup_vs_skimage": t_sk / t64,
            "max_abs_diff_vs_skimage": float(np.abs(f64.numpy() - ref).max()),
        },
        "deepfeat FisherEncoder.transform (float32, incl. input checks)": {
            "seconds": t_enc,
            "speedup_vs_skimage": t_sk / t_enc,
            "max_abs_diff_vs_skimage": float(np.abs(f_enc - ref).max()),
        },
    }
    for name, row in rows.items():
        row["seconds"] = round(row["seconds"], 4)
        extra = f"  {row['speedup_vs_skimage']:.2f}x" if "speedup_vs_skimage" in row else ""
        print(f"(a) {name:62s} {row['seconds']:8.4f} s{extra}", flush=True)
    return {
        "fv_dim": int(ref.shape[1]),
        "normalisation": "signed square root + L2 (skimage improved=True)",
        "results": rows,
        "speedup_float32": round(t_sk / t32, 2),
        "meets_target": bool(t_sk / t32 >= TARGET["encode_speedup_at_least"]),
    }


# -- (b) forward + backward --------------------------------------------------------------------------


def make_head(gmm, with_transform: bool):
    from deepfeat.training.fisher_e2e import FeatureTransform, FisherHead, FisherVectorLayer, FVNormalization

    layer = FisherVectorLayer.from_gmm(gmm)
    transform = FeatureTransform(DIM, "orthogonal").float() if with_transform else None
    return FisherHead(layer, FVNormalization(0.5, True), transform)


def layer_step(
    head, x: torch.Tensor, upstream_theta: torch.Tensor, ysign: torch.Tensor
) -> tuple[float, float]:
    """One forward and one backward pass; (forward seconds, backward seconds)."""
    head.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    start = time.perf_counter()
    fv = head(x)
    mid = time.perf_counter()
    fv.backward(-(ysign @ upstream_theta) / len(x))  # the paper's -y theta, batch mean
    end = time.perf_counter()
    assert x.grad is not None and head.layer.means.grad is not None
    return mid - start, end - mid


def bench_layer(X: np.ndarray, gmm, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(X)
    theta = torch.from_numpy(rng.normal(scale=0.05, size=(N_CLASSES, (2 * DIM + 1) * K)).astype(np.float32))
    ysign = torch.from_numpy(np.where(rng.random((N_IMAGES, N_CLASSES)) < 0.3, 1.0, -1.0).astype(np.float32))
    out = {}
    for name, with_transform in (("FV layer + normalisation", False), ("tanh(Wz+b) + FV layer + norm", True)):
        head = make_head(gmm, with_transform)
        layer_step(head, x[:2], theta, ysign[:2])  # warm-up
        runs = [layer_step(head, x, theta, ysign) for _ in range(repeats)]
        fwd = statistics.median(r[0] for r in runs)
        bwd = statistics.median(r[1] for r in runs)
        total = statistics.median(r[0] + r[1] for r in runs)
        wrt = ["descriptors", "nu", "mu", "zeta"] + (["W", "b"] if with_transform else [])
        out[name] = {
            "forward_s": round(fwd, 4),
            "backward_s": round(bwd, 4),
            "total_s": round(total, 4),
            "gradients_wrt": wrt,
            "speedup_vs_paper_gpu": round(PAPER_TABLE1["titan_x_gpu_s"]["sum"] / total, 1),
            "speedup_vs_paper_matlab_core": round(PAPER_TABLE1["matlab_one_cpu_core_s"]["sum"] / total),
        }
        print(f"(b) {name:32s} forward {fwd:.3f} s  backward {bwd:.3f} s  total {total:.3f} s", flush=True)
    layer = out["FV layer + normalisation"]  # the target is the layer's (Table 1: FV and its derivatives)
    layer["meets_target"] = bool(layer["total_s"] < TARGET["layer_forward_backward_below_s"])
    return out


# -- (c) memory --------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident size of this process's memory map (VmHWM; unlike ru_maxrss it does not carry the
    parent's peak over fork and exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident size (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(task: str, gmm_path: str) -> None:
    """Run one task once in this (fresh) process and print the peak RSS rise as JSON."""
    from deepfeat.features.fisher import GMMParams

    with np.load(gmm_path) as z:
        gmm = GMMParams(*(torch.from_numpy(z[k]) for k in ("weights", "means", "variances")))
    X = descriptors()
    rng = np.random.default_rng(1)
    theta = torch.from_numpy(rng.normal(scale=0.05, size=(N_CLASSES, (2 * DIM + 1) * K)).astype(np.float32))
    ysign = torch.from_numpy(np.where(rng.random((N_IMAGES, N_CLASSES)) < 0.3, 1.0, -1.0).astype(np.float32))
    if task.startswith("layer"):
        head = make_head(gmm, task == "layer+transform")
    if task == "skimage":
        from skimage.feature import fisher_vector
        from sklearn.mixture import GaussianMixture

        sk = GaussianMixture(K, covariance_type="diag")
        sk.weights_, sk.means_, sk.covariances_ = (t.numpy() for t in (gmm.weights, gmm.means, gmm.variances))
        sk.precisions_cholesky_ = 1 / np.sqrt(sk.covariances_)
    reset = reset_peak_rss()
    base = rss_bytes()
    before_peak = peak_rss_bytes()
    if task == "encode":
        from deepfeat.features.fisher import fisher_vectors

        fisher_vectors(torch.from_numpy(X), gmm, convention="skimage")
    elif task == "skimage":
        np.stack([fisher_vector(x, sk, improved=True) for x in X])
    else:
        layer_step(head, torch.from_numpy(X), theta, ysign)
    peak = peak_rss_bytes()
    print(
        json.dumps(
            {"task": task, "rss_before": base, "peak_before": before_peak, "peak_after": peak, "reset": reset}
        )
    )


def bench_memory(gmm, threads: int | None) -> dict:
    from deepfeat.features.fisher import as_gmm_params

    p = as_gmm_params(gmm)
    full = N_IMAGES * N_DESC * DIM * K * 4
    out = {
        "input_bytes": N_IMAGES * N_DESC * DIM * 4,
        "images_x_descriptors_x_D_x_K_float32_bytes": full,
        "method": "peak resident size (VmHWM, reset once the inputs exist) minus the resident size then, "
        "one run in a fresh process",
        "tasks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gmm.npz")
        np.savez(path, weights=p.weights.numpy(), means=p.means.numpy(), variances=p.variances.numpy())
        for task in ("encode", "skimage", "layer", "layer+transform"):
            cmd = [sys.executable, __file__, "--memory-child", task, "--gmm", path]
            if threads:
                cmd += ["--threads", str(threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rise = max(0, row["peak_after"] - max(row["rss_before"], row["peak_before"]))
            # a peak reached while the inputs were being made hides part of the rise: report the bound
            rise_bound = row["peak_after"] - row["rss_before"]
            out["tasks"][task] = {
                "peak_reset": row["reset"],
                "peak_rise_bytes": rise,
                "peak_minus_rss_with_inputs_bytes": rise_bound,
                "fraction_of_full_tensor": round(rise_bound / full, 4),
            }
            print(
                f"(c) {task:16s} peak rise <= {rise_bound / 2**20:8.1f} MiB "
                f"({rise_bound / full:.1%} of the {full / 2**30:.2f} GiB (n, T, D, K) tensor)",
                flush=True,
            )
    # holding one (n, T, D, K) tensor would raise the peak by at least its size
    out["no_full_tensor_held"] = all(
        t["peak_minus_rss_with_inputs_bytes"] < full for t in out["tasks"].values()
    )
    return out


# -- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: as set)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (median reported)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_fisher.json")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gmm", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        _limits = threadpool_limits(args.threads)  # kept for the whole run
    if args.memory_child:
        memory_child(args.memory_child, args.gmm)
        return 0

    from deepfeat.features.fisher import FisherEncoder

    info = machine(skimage=skimage.__version__)
    X = descriptors()
    print(f"descriptors {X.shape}, K={K}: Fisher vectors of {(2 * DIM + 1) * K} dims", flush=True)
    start = time.perf_counter()
    enc = FisherEncoder(
        n_components=K, pca_dim=None, fit_sample=50_000, convention="skimage", random_state=0
    ).fit(X)
    fit_s = time.perf_counter() - start
    print(f"GMM fit (FisherEncoder.fit, 50,000 descriptors): {fit_s:.1f} s, {enc.gmm_.n_iter_} EM iterations")
    encode = bench_encode(X, enc, args.repeats)
    layer = bench_layer(X, enc.gmm_, args.repeats)
    memory = bench_memory(enc.gmm_, args.threads)
    report = {
        "benchmark": "bench_fisher",
        "setting": {
            "images": N_IMAGES,
            "descriptors_per_image": N_DESC,
            "descriptor_dim": DIM,
            "n_components": K,
            "fisher_dim": (2 * DIM + 1) * K,
            "classes_for_backward_signal": N_CLASSES,
            "data": "draws from a random 32-component diagonal GMM, seed 0",
            "gmm": {
                "fit": "FisherEncoder(pca_dim=None, fit_sample=50000, random_state=0)",
                "fit_seconds": round(fit_s, 2),
                "em_iterations": enc.gmm_.n_iter_,
                "mean_log_likelihood": enc.gmm_.lower_bound_,
            },
            "timing": f"median wall seconds of {args.repeats} runs (skimage: of {sk_repeats(args.repeats)})",
        },
        "target": {
            **TARGET,
            "statement": "encoding >= 3x faster than skimage.feature.fisher_vector; layer forward + backward "
            "< 0.5 s on 2 CPU cores; no (images x descriptors x D x K) tensor held",
        },
        "paper_table1": PAPER_TABLE1,
        "machine": info,
        "encode": encode,
        "layer_forward_backward": layer,
        "memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
