"""Fisher vectors: deepfeat's encoding vs skimage.feature.fisher_vector over several shapes, against the
machine's own float32 matrix-product rate; the FV layer's forward + backward pass; peak memory.

(a) encode: for every shape (images, descriptors per image T, dimension D, components K), descriptors
    drawn from a random K-component diagonal GMM (seed 0) and a GMM fitted to them by deepfeat's
    ``FisherEncoder`` (no PCA, 20,000 descriptors, EM to tol 1e-4), handed to every method (skimage gets
    the equivalent scikit-learn ``GaussianMixture``). Methods, interleaved (A, B, C, A, B, C, ...) after
    a warm-up, median and spread of ``--repeats`` runs, all with the same thread count:
    ``skimage`` (``fisher_vector(improved=True)``, one call per image), ``deepfeat float32``
    (``fisher_vectors``, one call for the batch, skimage's convention so that the outputs can be
    compared), ``FisherEncoder.transform`` (float32, input checks and output copy included), at the
    Table 1 shape also ``deepfeat float64``; and ``sgemm``, a 2048 x 2048 x 2048 float32 product whose
    median gives the machine's matrix-product rate in the same run. The encoding's arithmetic is
    4 n T K (2D + 1) floating-point operations (one product for the posteriors, one for the
    statistics); its "matmul bound" is that count at the measured rate, and ``fraction_of_bound`` is
    the bound over the measured time (1 = as fast as the matrix products alone could be).
(b) layer: ``FisherVectorLayer`` + ``FVNormalization`` forward and backward (float32) w.r.t. the
    descriptors and the GMM parameters (nu, mu, zeta), the backward signal the paper's -y theta for 20
    classes; also with the ``FeatureTransform`` tanh(W z + b) in front. Table 1 shape, interleaved.
(c) memory: the Table 1 encodings and layer steps once each in a fresh subprocess; the rise of the peak
    resident set size over the resident size once the inputs exist, against the size of the
    (images x descriptors x D x K) tensor that an encoding not vectorised by statistics would hold.

Writes benchmarks/results/bench_fisher.json (``--quick``: bench_fisher.quick.json, not kept in git;
``--no-memory`` keeps the memory part of the file's earlier run, with when and under what load it was
measured). Usage:
python benchmarks/bench_fisher.py [--threads N] [--repeats R] [--quick] [--no-memory] [--out PATH]
(--quick: the Table 1 shape only, no memory part, for development.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import skimage
import torch
from _machine import machine
from _timing import LoadGuard, earlier_results, interleaved, pinned_threads, ratio, summary

from deepfeat.fileio import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
#: (name, images, descriptors per image, D, K); the first is the setting of the paper's Table 1
SHAPES = [
    ("table1", 24, 10_000, 64, 32),
    ("conv14x14", 256, 196, 64, 64),
    ("conv7x7", 1024, 49, 64, 32),
    ("wideD", 16, 4_096, 128, 64),
    ("manyK", 8, 5_000, 64, 256),
]
N_CLASSES = 20
SGEMM_N = 2048
TARGET = {
    "encode_speedup_vs_skimage_at_least": 3.0,
    "time_within_x_of_matmul_bound": 3.0,
    "layer_forward_backward_below_s": 0.5,
}
PAPER_TABLE1 = {
    "setting": "24 images x 1e4 SIFT-PCA descriptors (64 dims), K=32, one batch",
    "matlab_one_cpu_core_s": {"fv": 9.06, "d_params": 18.9 * 3600, "d_x": 1.9 * 3600, "sum": 19.1 * 3600},
    "titan_x_gpu_s": {"fv": 0.020, "d_params": 10.79, "d_x": 2.89, "sum": 13.71},
}


# -- data --------------------------------------------------------------------------------------------


def descriptors(n: int, T: int, D: int, K: int, seed: int = 0) -> np.ndarray:
    """(n, T, D) float32 descriptors from a random diagonal GMM of K components."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(K, D)).astype(np.float32)
    sds = np.sqrt(rng.uniform(0.2, 1.5, size=(K, D))).astype(np.float32)
    weights = rng.dirichlet(np.full(K, 2.0))
    x = np.empty((n, T, D), dtype=np.float32)
    for i in range(n):  # image by image: no transient copy of the whole array
        comp = rng.choice(K, size=T, p=weights)
        x[i] = rng.standard_normal((T, D), dtype=np.float32) * sds[comp] + means[comp]
    return x


def fitted_encoder(X: np.ndarray, K: int):
    from deepfeat.features.fisher import FisherEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EM stopped at max_iter: the speed does not depend on it
        return FisherEncoder(
            n_components=K,
            pca_dim=None,
            fit_sample=20_000,
            tol=1e-4,
            max_iter=100,
            convention="skimage",
            random_state=0,
        ).fit(X)


def encode_flops(n: int, T: int, D: int, K: int) -> int:
    """Floating-point operations of the two matrix products: posteriors and statistics."""
    return 4 * n * T * K * (2 * D + 1)


# -- (a) encoding ------------------------------------------------------------------------------------


def bench_shape(name: str, n: int, T: int, D: int, K: int, repeats: int) -> dict:
    from skimage.feature import fisher_vector

    from deepfeat.features.fisher import fisher_vectors

    X = descriptors(n, T, D, K)
    fit_times = []  # context for the encoding's time, not a compared method: fresh fits, one after another
    for _ in range(repeats):
        start = time.perf_counter()
        enc = fitted_encoder(X, K)
        fit_times.append(time.perf_counter() - start)
    gmm, sk_gmm = enc.gmm_, enc.gmm_.to_sklearn()
    Xt = torch.from_numpy(X)
    a, b = torch.randn(SGEMM_N, SGEMM_N), torch.randn(SGEMM_N, SGEMM_N)
    methods = {
        "skimage": lambda: np.stack([fisher_vector(x, sk_gmm, improved=True, alpha=0.5) for x in X]),
        "deepfeat float32": lambda: fisher_vectors(Xt, gmm, convention="skimage").numpy(),
        "FisherEncoder.transform": lambda: enc.transform(X),
    }
    if name == "table1":
        methods["deepfeat float64"] = lambda: fisher_vectors(
            Xt, gmm, convention="skimage", dtype=torch.float64
        ).numpy()
    methods["sgemm"] = lambda: a @ b
    with LoadGuard() as guard:
        timings, outputs = interleaved(methods, repeats=repeats)
    rate = 2 * SGEMM_N**3 / timings["sgemm"]["median"]
    flops = encode_flops(n, T, D, K)
    bound = flops / rate
    ref = outputs["skimage"]
    rows = {}
    for method, t in timings.items():
        row = {k: round(v, 5) if k != "times" else [round(s, 5) for s in v] for k, v in t.items()}
        if method not in ("skimage", "sgemm"):
            row["speedup_vs_skimage"] = round(ratio(timings, "skimage", method), 3)
            row["max_abs_diff_vs_skimage"] = float(np.abs(outputs[method] - ref).max())
            row["fraction_of_matmul_bound"] = round(bound / t["median"], 3)
        rows[method] = row
    main = rows["deepfeat float32"]
    print(
        f"(a) {name:10s} n={n:5d} T={T:6d} D={D:3d} K={K:3d}: skimage {rows['skimage']['median']:.4f} s, "
        f"deepfeat {main['median']:.4f} s ({main['speedup_vs_skimage']:.2f}x), encoder "
        f"{rows['FisherEncoder.transform']['median']:.4f} s; bound {bound:.4f} s at "
        f"{rate / 1e9:.0f} GFLOP/s ({main['fraction_of_matmul_bound']:.2f} of it); load {guard.before[0]}"
        f"->{guard.after[0]}",
        flush=True,
    )
    return {
        "shape": {"images": n, "descriptors_per_image": T, "dim": D, "n_components": K},
        "fisher_dim": (2 * D + 1) * K,
        "gmm_fit_seconds": summary(fit_times, 3),
        "em_iterations": enc.gmm_.n_iter_,
        "encode_gflop": round(flops / 1e9, 4),
        "sgemm_gflops_per_s": round(rate / 1e9, 1),
        "matmul_bound_s": round(bound, 5),
        "methods": rows,
        "load": guard.to_dict(),
        "meets_targets": {
            "speedup_vs_skimage": bool(
                main["speedup_vs_skimage"] >= TARGET["encode_speedup_vs_skimage_at_least"]
            ),
            "within_x_of_bound": bool(
                main["fraction_of_matmul_bound"] >= 1 / TARGET["time_within_x_of_matmul_bound"]
            ),
        },
    }


# -- (b) forward + backward --------------------------------------------------------------------------


def make_head(gmm, dim: int, with_transform: bool):
    from deepfeat.features.fisher import FeatureTransform, FisherHead, FisherVectorLayer, FVNormalization

    layer = FisherVectorLayer.from_gmm(gmm)
    transform = FeatureTransform(dim, "orthogonal").float() if with_transform else None
    return FisherHead(layer, FVNormalization(0.5, True), transform)


def signal(n: int, fv_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(1)
    theta = torch.from_numpy(rng.normal(scale=0.05, size=(N_CLASSES, fv_dim)).astype(np.float32))
    ysign = torch.from_numpy(np.where(rng.random((n, N_CLASSES)) < 0.3, 1.0, -1.0).astype(np.float32))
    return theta, ysign


def layer_step(head, x: torch.Tensor, theta: torch.Tensor, ysign: torch.Tensor) -> None:
    """One forward and one backward pass with the paper's -y theta, averaged over the batch."""
    head.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    fv = head(x)
    fv.backward(-(ysign @ theta) / len(x))
    assert x.grad is not None and head.layer.means.grad is not None


def bench_layer(X: np.ndarray, gmm, repeats: int) -> dict:
    x = torch.from_numpy(X)
    n, _, D = X.shape
    K = gmm.n_components
    theta, ysign = signal(n, (2 * D + 1) * K)
    heads = {"FV layer + normalisation": make_head(gmm, D, False), "tanh(Wz+b) + FV layer + norm": None}
    heads["tanh(Wz+b) + FV layer + norm"] = make_head(gmm, D, True)
    with LoadGuard() as guard:
        timings, _ = interleaved(
            {name: (lambda h=h: layer_step(h, x, theta, ysign)) for name, h in heads.items()}, repeats=repeats
        )
    out = {"load": guard.to_dict()}
    for name, t in timings.items():
        out[name] = {
            "median_s": round(t["median"], 4),
            "spread": round(t["spread"], 3),
            "times": [round(s, 4) for s in t["times"]],
            "gradients_wrt": ["descriptors", "nu", "mu", "zeta"] + (["W", "b"] if "tanh" in name else []),
            "speedup_vs_paper_gpu": round(PAPER_TABLE1["titan_x_gpu_s"]["sum"] / t["median"], 1),
            "speedup_vs_paper_matlab_core": round(PAPER_TABLE1["matlab_one_cpu_core_s"]["sum"] / t["median"]),
        }
        print(f"(b) {name:32s} forward + backward {t['median']:.3f} s (spread {t['spread']:.2f})", flush=True)
    layer = out["FV layer + normalisation"]
    layer["meets_target"] = bool(layer["median_s"] < TARGET["layer_forward_backward_below_s"])
    return out


# -- (c) memory --------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident size of this process (VmHWM, which unlike ru_maxrss is not inherited over fork and
    exec), else ru_maxrss."""
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
    from deepfeat.features.fisher import GMMParams, fisher_vectors

    _, n, T, D, K = SHAPES[0]
    with np.load(gmm_path) as z:
        gmm = GMMParams(*(torch.from_numpy(z[k]) for k in ("weights", "means", "variances")))
    X = descriptors(n, T, D, K)
    theta, ysign = signal(n, (2 * D + 1) * K)
    head = make_head(gmm, D, task == "layer+transform") if task.startswith("layer") else None
    if task == "skimage":
        from skimage.feature import fisher_vector
        from sklearn.mixture import GaussianMixture

        sk = GaussianMixture(K, covariance_type="diag")
        sk.weights_, sk.means_, sk.covariances_ = (t.numpy() for t in (gmm.weights, gmm.means, gmm.variances))
        sk.precisions_cholesky_ = 1 / np.sqrt(sk.covariances_)
    reset = reset_peak_rss()
    base, before_peak = rss_bytes(), peak_rss_bytes()
    if task == "encode":
        fisher_vectors(torch.from_numpy(X), gmm, convention="skimage")
    elif task == "skimage":
        np.stack([fisher_vector(x, sk, improved=True) for x in X])
    else:
        layer_step(head, torch.from_numpy(X), theta, ysign)
    peak = peak_rss_bytes()
    print(json.dumps({"rss_before": base, "peak_before": before_peak, "peak_after": peak, "reset": reset}))


def bench_memory(gmm, threads: int) -> dict:
    from deepfeat.features.fisher import as_gmm_params

    _, n, T, D, K = SHAPES[0]
    p = as_gmm_params(gmm)
    full = n * T * D * K * 4
    out = {
        "input_bytes": n * T * D * 4,
        "images_x_descriptors_x_D_x_K_float32_bytes": full,
        "method": "peak resident size (VmHWM, reset once the inputs exist) minus the resident size then, "
        "one run in a fresh process",
        "tasks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gmm.npz")
        np.savez(path, weights=p.weights.numpy(), means=p.means.numpy(), variances=p.variances.numpy())
        for task in ("encode", "skimage", "layer", "layer+transform"):
            cmd = [sys.executable, __file__, "--memory-child", task, "--gmm", path, "--threads", str(threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rise_bound = row["peak_after"] - row["rss_before"]
            out["tasks"][task] = {
                "peak_reset": row["reset"],
                "peak_rise_bytes": max(0, row["peak_after"] - max(row["rss_before"], row["peak_before"])),
                "peak_minus_rss_with_inputs_bytes": rise_bound,
                "fraction_of_full_tensor": round(rise_bound / full, 4),
            }
            print(
                f"(c) {task:16s} peak rise <= {rise_bound / 2**20:8.1f} MiB "
                f"({rise_bound / full:.1%} of the {full / 2**30:.2f} GiB (n, T, D, K) tensor)",
                flush=True,
            )
    out["no_full_tensor_held"] = all(
        t["peak_minus_rss_with_inputs_bytes"] < full for t in out["tasks"].values()
    )
    return out


# -- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and BLAS threads (default: all cores)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (median reported)")
    parser.add_argument("--quick", action="store_true", help="Table 1 shape only, no memory part")
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the memory part (c) and keep the earlier run's"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: results/bench_fisher.json (--quick: bench_fisher.quick.json, not kept in git)",
    )
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gmm", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    with pinned_threads(args.threads) as threads:
        if args.memory_child:
            memory_child(args.memory_child, args.gmm)
            return 0
        out = args.out or RESULTS / ("bench_fisher.quick.json" if args.quick else "bench_fisher.json")
        info = machine(skimage=skimage.__version__)
        with LoadGuard() as run_load:
            shapes = SHAPES[:1] if args.quick else SHAPES
            encode = {name: bench_shape(name, *dims, repeats=args.repeats) for name, *dims in shapes}
            _, n, T, D, K = SHAPES[0]
            X = descriptors(n, T, D, K)
            gmm = fitted_encoder(X, K).gmm_
            layer = bench_layer(X, gmm, args.repeats)
            memory = None if (args.quick or args.no_memory) else bench_memory(gmm, threads)
    kept = {}
    if memory is None and not args.quick:  # --no-memory: the memory part of the run before, if any
        earlier = earlier_results(out, "load_of_earlier_parts")
        if earlier.get("memory"):
            memory = earlier["memory"]
            when = earlier.get("memory_measured_utc") or earlier.get("machine", {}).get("recorded_utc")
            kept = {"memory_measured_utc": when, "load_of_earlier_parts": earlier["load_of_earlier_parts"]}
    table1 = encode["table1"]["methods"]["deepfeat float32"]
    report = {
        "benchmark": "bench_fisher",
        "command": "python benchmarks/bench_fisher.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "setting": {
            "threads": threads,
            "repeats": args.repeats,
            "timing": "interleaved A, B, C, ... after one warm-up round; median, min, max, spread = "
            "(max - min) / median of the timed runs, wall seconds",
            "data": "draws from a random K-component diagonal GMM per shape, seed 0; GMM fitted by "
            "FisherEncoder(pca_dim=None, fit_sample=20000, tol=1e-4, max_iter=100, random_state=0), "
            "fitted --repeats times afresh before the timings (gmm_fit_seconds: their median and spread)",
            "flops": "4 n T K (2D + 1): the posterior and statistics matrix products",
            "matmul_rate": f"median of a {SGEMM_N}^3 float32 product interleaved with the methods",
            "classes_for_backward_signal": N_CLASSES,
        },
        "target": {
            **TARGET,
            "statement": "encoding >= 3x faster than skimage.feature.fisher_vector in the same interleaved "
            "run and within 3x of the matmul bound (Table 1 shape); layer forward + backward < 0.5 s; no "
            "(images x descriptors x D x K) tensor held",
        },
        "summary": {
            "table1_speedup_vs_skimage": table1["speedup_vs_skimage"],
            "table1_fraction_of_matmul_bound": table1["fraction_of_matmul_bound"],
            "speedup_vs_skimage_by_shape": {
                k: v["methods"]["deepfeat float32"]["speedup_vs_skimage"] for k, v in encode.items()
            },
            "fraction_of_bound_by_shape": {
                k: v["methods"]["deepfeat float32"]["fraction_of_matmul_bound"] for k, v in encode.items()
            },
        },
        "paper_table1": PAPER_TABLE1,
        "machine": info,
        "load": run_load.to_dict(),
        "encode": encode,
        "layer_forward_backward": layer,
        "memory": memory,
        **kept,
    }
    write_json(out, report)
    print(f"wrote {out} (load {run_load.before[0]} -> {run_load.after[0]}, quiet: {run_load.quiet})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
