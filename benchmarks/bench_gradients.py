"""Deep Fishing gradient features: extraction cost and the factored kernel vs materialised gradients.

(a) Extraction cost of the gradient factors vs plain forward features on the same images (in memory,
    224x224 inputs), at batch sizes 8 and 32: EfficientNet-Lite0 (bundled weights) with the factored
    gradients of ``head`` (a 1x1 convolution, 7x7 positions) and ``logits`` vs the forward features
    ``pool`` and ``logits``; AlexNet (random weights, the paper's architecture) with fc6, fc7, fc8
    gradients vs fc6, fc7, fc8 activations; plus the gradients with their forward baselines and the
    forward features together. The three are interleaved; the forward features and the gradient
    factors must come out the same alone and together. Target: gradients at most 1.5x forward-only.
(b) The trace kernel of N images for the weight layers users take gradients of: EfficientNet-Lite0's
    classifier (1280 x 1000) and head (320 x 1280 at 7x7 positions), AlexNet / VGG16 fc8 (4096 x 1000)
    and fc7 (4096 x 4096). deepfeat's factored kernel vs materialising every dE/dW (N x d_in x d_out
    float32) and taking one Gram product. The materialised gradients outgrow memory long before the
    N users meet, so both are timed interleaved at three N whose gradients fit in ``--explicit-mib``
    (the measured ratios); at N = 500, 2000, 5000 the factored kernel is timed directly (fully
    connected layers; the head's factored cost grows with the squared number of positions, so it is
    extrapolated by t(N) = a N + b N^2 fitted to the measured N), and the materialised one is given a
    lower bound: its fastest materialising rate at the largest measured N plus the Gram product's
    2 N^2 d_in d_out flops at the fastest square-matmul rate of the same run. The two kernels must
    agree at every measured N (and with a float64 reference at the smallest). Peak memory: each
    variant once in its own process at the largest measured N. The README's figure (1280 x 1000,
    N = 2000) is measured directly, a check of the lower bound: ``--repeats`` rounds, each variant once
    per round in a fresh process (the materialised one takes about a minute and 10 GB), medians of
    time and peak memory; targets there: at least 50x faster and 100x less peak memory.

Threads (torch and BLAS) are pinned to the same number for every method and process, the allocator is
tuned as the ``deepfeat`` command does, the load average before and after is recorded (``--strict``
refuses to start on a busy machine). Writes benchmarks/results/bench_gradients.json (``--quick``:
bench_gradients.quick.json, not kept in git).

Usage: python benchmarks/bench_gradients.py [--quick] [--threads N] [--explicit-mib MIB]
       [--parts extraction,kernel,headline]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from _timing import LoadGuard, interleaved, pinned_threads, ratio, rotated

from deepfeat.fileio import write_json
from deepfeat.kernels import FactoredLayout, factored_kernel

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
EXTRACTION = [  # backbone, weights, forward layers, gradient layers
    ("efficientnet_lite0", None, ["pool", "logits"], ["head", "logits"]),
    ("alexnet", "random", ["fc6", "fc7", "fc8"], ["fc6", "fc7", "fc8"]),
]
WIDTHS = {  # name -> d_in, d_out, positions, what
    "logits": (1280, 1000, 1, "EfficientNet-Lite0 classifier"),
    "head": (320, 1280, 49, "EfficientNet-Lite0 head: 1x1 convolution at 7x7 positions"),
    "fc8": (4096, 1000, 1, "AlexNet / VGG16 fc8"),
    "fc7": (4096, 4096, 1, "AlexNet / VGG16 fc7"),
}
TARGET_N = (500, 2000, 5000)
HEADLINE = ("logits", 2000)  # the README's figure
PARTS = ("extraction", "kernel", "headline")
# factored vs explicit kernel, relative to the largest entry: the explicit Gram sums d_in * d_out float32
# products per entry (fc7: 16.8M), so its rounding error reaches a few 1e-4; both are also compared with a
# float64 reference at the smallest measured N
KERNEL_TOLERANCE = 2e-3
MAX_FACTORED_P2_N = 256  # a spatial layer's factored kernel costs P^2 (d_in + d_out) per pair


def smooth_images(n: int, size: int = 256, seed: int = 0) -> np.ndarray:
    """n smooth random RGB images (uint8), so that the benchmark needs no data on disk."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        f = rng.uniform(2, 12, size=(3, 2))
        ph = rng.uniform(0, 6, size=(3, 2))
        for c in range(3):
            out[i, :, :, c] = 127 + 120 * np.sin(f[c, 0] * xx * 6 + ph[c, 0]) * np.cos(
                f[c, 1] * yy * 6 + ph[c, 1]
            )
    return out


def max_rel_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# -- (a) extraction ----------------------------------------------------------------------------------


def extraction_case(
    ds, bb, forward_layers: list[str], grad_layers: list[str], batch_size: int, repeats: int
) -> tuple[dict, dict]:
    """Forward-only, gradient factors, and both with the baselines, interleaved; do they agree?"""
    from deepfeat.features.activations import LayerActivations
    from deepfeat.features.gradients import GradientFeatures
    from deepfeat.features.pipeline import extract

    sets = {
        "forward": [LayerActivations(forward_layers)],
        "factored": [GradientFeatures(grad_layers, forms=["factored"])],
        "all": [
            GradientFeatures(grad_layers, forms=["factored", "input", "preact"]),
            LayerActivations(forward_layers),
        ],
    }

    def run(methods):
        return extract(ds, bb, methods, batch_size=batch_size, progress=False, workers=1)

    times, out = interleaved({k: (lambda ms=ms: run(ms)) for k, ms in sets.items()}, repeats=repeats)
    feats = {k: {key: np.asarray(fs.features) for key, fs in r.features.items()} for k, r in out.items()}
    checks = {}
    for alone, what in (("forward", "alone vs with the gradients"), ("factored", "alone vs with baselines")):
        for key in feats[alone]:
            checks[f"{key}: {what}"] = max_rel_diff(feats["all"][key], feats[alone][key])
    return times, checks


def part_a(n_images: int, batch_sizes: list[int], repeats: int) -> list[dict]:
    from deepfeat.backbones import load_backbone
    from deepfeat.data.datasets import ArrayDataset

    ds = ArrayDataset(
        name="bench",
        ids=[str(i) for i in range(n_images)],
        classes=["a"],
        targets=np.zeros(n_images, int),
        images=smooth_images(n_images),
    )
    rows = []
    for name, weights, forward_layers, grad_layers in EXTRACTION:
        bb = load_backbone(name, weights=weights)
        for batch_size in batch_sizes:
            times, checks = extraction_case(ds, bb, forward_layers, grad_layers, batch_size, repeats)
            row = {
                "backbone": name,
                "weights": weights or "bundled",
                "images": n_images,
                "batch_size": batch_size,
                "input": "224x224 (256 shorter side, centre crop)",
                "forward_layers": forward_layers,
                "gradient_layers": grad_layers,
                "timings": times,
                "images_per_s": {k: n_images / t["median"] for k, t in times.items()},
                "ratio_gradient_over_forward": ratio(times, "factored", "forward"),
                "ratio_all_over_forward": ratio(times, "all", "forward"),
                "target_at_most": 1.5,
                "max_relative_difference": checks,
                "agree": max(checks.values()) <= 1e-5,
            }
            row["meets_target"] = row["ratio_gradient_over_forward"] <= 1.5
            print(
                f"(a) {name:18s} batch {batch_size:3d}: forward {times['forward']['median']:6.2f} s, "
                f"gradient factors {times['factored']['median']:6.2f} s (spread "
                f"{times['factored']['spread']:.0%}): x{row['ratio_gradient_over_forward']:.2f}, with "
                f"baselines x{row['ratio_all_over_forward']:.2f}{'' if row['agree'] else '  DISAGREE'}",
                flush=True,
            )
            rows.append(row)
    return rows


# -- (b) kernel --------------------------------------------------------------------------------------


def factors(n: int, layout: FactoredLayout, seed: int = 0) -> np.ndarray:
    """Random factored rows (n, row_dim) laid out as stored; forward factors post-ReLU, small gradients."""
    rng = np.random.default_rng(seed)
    d, p = layout.d_in, layout.positions
    rows = np.empty((n, layout.d_in + layout.d_out, p), dtype=np.float32)
    for i in range(0, n, 256):  # in chunks: no temporary outgrows the rows
        m = min(256, n - i)
        rows[i : i + m, :d] = np.maximum(rng.standard_normal((m, d, p), dtype=np.float32), 0)
        rows[i : i + m, d:] = rng.standard_normal((m, layout.d_out, p), dtype=np.float32) * 1e-3
    return rows.reshape(n, layout.row_dim)


def factored(rows: np.ndarray, layout: FactoredLayout) -> np.ndarray:
    return factored_kernel(rows, layout=layout, normalize="none")


def explicit(rows: np.ndarray, layout: FactoredLayout, stages: dict | None = None) -> np.ndarray:
    """Every dE/dW = sum_p x_p g_p^T materialised (n, d_in * d_out), then one Gram product; the seconds
    of the two stages are appended to ``stages["materialise"]`` and ``stages["gram"]`` when given."""
    start = time.perf_counter()
    fw, bw = layout.split(rows)
    with torch.no_grad():
        G = torch.einsum("npi,npo->nio", fw, bw).reshape(len(rows), -1)
        mid = time.perf_counter()
        K = (G @ G.t()).numpy()
    del G
    if stages is not None:
        stages["materialise"].append(mid - start)
        stages["gram"].append(time.perf_counter() - mid)
    return K


def reference(rows: np.ndarray, layout: FactoredLayout) -> np.ndarray:
    """The trace kernel in float64 (the factored formula), to judge both float32 kernels against."""
    fw, bw = (t.double() for t in layout.split(rows))
    n, p = fw.shape[:2]
    s = (fw.reshape(n * p, -1) @ fw.reshape(n * p, -1).t()) * (
        bw.reshape(n * p, -1) @ bw.reshape(n * p, -1).t()
    )
    return s.view(n, p, n, p).sum(dim=(1, 3)).numpy()


def fit_quadratic(ns: list[int], seconds: list[float]) -> tuple[float, float, float]:
    """t(n) = a n + b n^2 with a, b >= 0 (least squares); returns a, b and the largest relative residual."""
    from scipy.optimize import nnls

    n = np.asarray(ns, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    A = np.stack([n, n**2], axis=1) / t[:, None]  # relative residuals: each point weighs alike
    (a, b), _ = nnls(A, np.ones_like(t))
    residual = float(np.abs((a * n + b * n**2) / t - 1).max())
    return float(a), float(b), residual


class PeakRSS:
    """Peak resident memory above the level at entry, sampled from /proc every half millisecond."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def __enter__(self):
        import threading

        self.base = self._rss()
        self._stop = threading.Event()

        def poll():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._rss() - self.base)
                time.sleep(0.0005)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self.base)


def kernel_child(variant: str, width: str, n: int, out: Path | None) -> dict:
    """One kernel computation in this (fresh) process: seconds, and peak RSS above the inputs."""
    d_in, d_out, positions, _ = WIDTHS[width]
    layout = FactoredLayout(d_in, d_out, positions)
    rows = factors(n, layout)
    fn = factored if variant == "factored" else explicit
    factored(rows[:8], layout)  # warm-up of torch's lazy start-up, small enough to leave no heap behind
    start = time.perf_counter()
    with PeakRSS() as mem:
        K = fn(rows, layout)
        seconds = time.perf_counter() - start
    if out is not None:
        np.save(out, K)
    return {
        "seconds": seconds,
        "peak_rss_above_inputs_mib": mem.peak / 2**20,
        "inputs_mib": rows.nbytes / 2**20,
    }


def gemm_rate(repeats: int, side: int = 2048) -> dict:
    """The machine's float32 matmul rate on square matrices (flop/s of the fastest run: for bounds)."""
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(side, side, generator=g), torch.randn(side, side, generator=g)
    times, _ = interleaved({"gemm": lambda: A @ B}, repeats=repeats)
    return {"side": side, "timings": times, "flops": 2.0 * side**3 / times["gemm"]["min"]}


def in_child(variant: str, width: str, n: int, threads: int, out: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, width, str(n), "--threads", str(threads)]
    if out is not None:
        cmd += ["--child-out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_mib() -> float:
    with open("/proc/meminfo") as fh:
        info = {line.split(":")[0]: line.split()[1] for line in fh}
    return int(info["MemAvailable"]) / 1024


def memory_ratio(explicit_mib: float, factored_mib: float, n: int) -> float:
    """Explicit over factored peak, the factored one counted at least as large as its N x N result."""
    return explicit_mib / max(factored_mib, n * n * 4 / 2**20)


def kernel_width(
    width: str, explicit_mib: float, targets: tuple[int, ...], repeats: int, threads: int, gemm_flops: float
) -> dict:
    """Both kernels interleaved at three N whose explicit gradients fit in ``explicit_mib``; the
    factored one also at the ``targets`` (fully connected layers); models for the larger N."""
    d_in, d_out, positions, what = WIDTHS[width]
    layout = FactoredLayout(d_in, d_out, positions)
    per_image = d_in * d_out * 4
    n_max = max(8, int(explicit_mib * 2**20 // per_image) // 4 * 4)
    if positions > 1:
        n_max = min(n_max, MAX_FACTORED_P2_N)
    measured = [n_max // 4, n_max // 2, n_max]
    direct = [n for n in targets if n > n_max] if positions == 1 else []
    rows = factors(max([n_max, *direct]), layout)
    stages: dict[int, dict[str, list[float]]] = {n: {"materialise": [], "gram": []} for n in measured}
    methods = {}
    for n in measured:
        methods[f"factored_n{n}"] = lambda n=n: factored(rows[:n], layout)
        methods[f"explicit_n{n}"] = lambda n=n: explicit(rows[:n], layout, stages[n])
    for n in direct:
        methods[f"factored_n{n}"] = lambda n=n: factored(rows[:n], layout)
    times, out = interleaved(methods, repeats=repeats)
    diffs = {str(n): max_rel_diff(out[f"factored_n{n}"], out[f"explicit_n{n}"]) for n in measured}
    ref = reference(rows[: measured[0]], layout)
    errors = {v: max_rel_diff(out[f"{v}_n{measured[0]}"], ref) for v in ("factored", "explicit")}
    del out

    # explicit: materialising is linear in N (its fastest rate at the largest measured N); the Gram
    # product takes 2 N^2 d_in d_out flops, counted at the machine's fastest square-matmul rate: a bound
    per_row = float(np.min(stages[n_max]["materialise"][1:])) / n_max  # [0] was the warm-up
    gram_flops_per_pair = 2.0 * d_in * d_out

    def explicit_model(n: int) -> float:
        return per_row * n + gram_flops_per_pair * n * n / gemm_flops

    fa, fb, f_residual = fit_quadratic(measured, [times[f"factored_n{n}"]["median"] for n in measured])
    at_n = {}
    for n in targets:
        e = explicit_model(n)
        if f"factored_n{n}" in times:
            f, f_from = times[f"factored_n{n}"]["median"], "measured"
        else:
            f, f_from = fa * n + fb * n * n, "extrapolated"
        at_n[str(n)] = {
            "explicit_seconds": e,
            "explicit_from": "lower bound",
            "factored_seconds": f,
            "factored_from": f_from,
            "speedup_at_least": e / f,
            "explicit_gradients_mib": n * per_image / 2**20,
            "kernel_output_mib": n * n * 4 / 2**20,
        }
    memory = {v: in_child(v, width, n_max, threads) for v in ("factored", "explicit")}
    row = {
        "width": width,
        "layer": what,
        "d_in": d_in,
        "d_out": d_out,
        "positions": positions,
        "measured_n": measured,
        "timings": times,
        "explicit_stages_median_seconds": {
            str(n): {k: float(np.median(v[1:])) for k, v in st.items()} for n, st in stages.items()
        },
        "measured_speedup": {str(n): ratio(times, f"explicit_n{n}", f"factored_n{n}") for n in measured},
        "max_relative_difference": diffs,
        "max_relative_error_vs_float64": {"n": measured[0], **errors},
        "agree": max(diffs.values()) <= KERNEL_TOLERANCE and errors["factored"] <= 1e-5,
        "models": {
            "explicit": {
                "model": "t(N) = materialise_per_row N + 2 N^2 d_in d_out / gemm_flops: the fastest "
                "materialising rate at the largest measured N, the Gram product at the machine's fastest "
                "square-matmul rate (it cannot run much faster): a lower bound, so the speedups at_n are too",
                "materialise_per_row": per_row,
                "gemm_flops": gemm_flops,
                "max_relative_residual_at_measured_n": max(
                    abs(explicit_model(n) / times[f"explicit_n{n}"]["median"] - 1) for n in measured
                ),
            },
            "factored": {
                "model": "t(N) = a N + b N^2, non-negative least squares on the measured medians (used "
                "only where factored_from is 'extrapolated')",
                "a": fa,
                "b": fb,
                "max_relative_residual_at_measured_n": f_residual,
            },
        },
        "at_n": at_n,
        "memory_at_largest_measured_n": {
            "n": n_max,
            **memory,
            "memory_ratio": memory_ratio(
                memory["explicit"]["peak_rss_above_inputs_mib"],
                memory["factored"]["peak_rss_above_inputs_mib"],
                n_max,
            ),
        },
    }
    print(
        f"(b) {width:6s} {d_in}x{d_out}x{positions}: measured at N={measured}: explicit / factored "
        + ", ".join(f"x{row['measured_speedup'][str(n)]:.1f}" for n in measured)
        + " | lower bounds: "
        + ", ".join(f"N={n} x{at_n[str(n)]['speedup_at_least']:.3g}" for n in targets)
        + f" | memory x{row['memory_at_largest_measured_n']['memory_ratio']:.0f} at N={n_max}"
        + ("" if row["agree"] else "  DISAGREE"),
        flush=True,
    )
    return row


def headline(threads: int, n: int, bound: dict | None, repeats: int) -> dict:
    """The README's figure (N = 2000) measured directly: ``repeats`` rounds, each variant once per
    round in a fresh process (the first variant alternating between rounds); medians of time and
    peak memory."""
    width = HEADLINE[0]
    d_in, d_out, _, _ = WIDTHS[width]
    need = n * d_in * d_out * 4 / 2**20
    if available_mib() < 1.3 * need:
        return {
            "skipped": f"needs about {need:.0f} MiB free for the explicit gradients, {available_mib():.0f}"
        }
    rounds: dict[str, list[dict]] = {"factored": [], "explicit": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for variant in rotated(("factored", "explicit"), r):
                rounds[variant].append(in_child(variant, width, n, threads, Path(tmp) / f"{variant}.npy"))
        rel = max_rel_diff(np.load(Path(tmp) / "factored.npy"), np.load(Path(tmp) / "explicit.npy"))
    results = {
        variant: {
            "seconds": float(np.median([x["seconds"] for x in runs])),
            "seconds_min": min(x["seconds"] for x in runs),
            "seconds_max": max(x["seconds"] for x in runs),
            "peak_rss_above_inputs_mib": float(np.median([x["peak_rss_above_inputs_mib"] for x in runs])),
            "rounds": runs,
        }
        for variant, runs in rounds.items()
    }
    f, e = results["factored"], results["explicit"]
    speedup = e["seconds"] / f["seconds"]
    memory = memory_ratio(e["peak_rss_above_inputs_mib"], f["peak_rss_above_inputs_mib"], n)
    out = {
        "width": width,
        "n": n,
        "d_in": d_in,
        "d_out": d_out,
        "runs": f"medians of {repeats} rounds; each variant once per round in a fresh process, "
        "the first variant alternating",
        "explicit_gradients_mib": need,
        "factored": f,
        "explicit": e,
        "max_relative_difference": rel,
        "agree": rel <= KERNEL_TOLERANCE,
        "speedup": speedup,
        "memory_ratio": memory,
        "targets": {"speedup_at_least": 50, "memory_ratio_at_least": 100},
        "meets_targets": speedup >= 50 and memory >= 100,
    }
    if bound is not None:
        out["explicit_seconds_lower_bound"] = bound["explicit_seconds"]
        out["lower_bound_over_measured"] = bound["explicit_seconds"] / e["seconds"]
    print(
        f"(b) headline {width} N={n}: factored {f['seconds']:.2f} s, explicit {e['seconds']:.1f} s: "
        f"x{speedup:.0f} faster, x{memory:.0f} less peak memory (medians of {repeats})",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, small kernels and N")
    parser.add_argument("--threads", type=int, default=None, help="torch / BLAS threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method (5; quick: 3)")
    parser.add_argument("--explicit-mib", type=float, default=None, help="largest materialised gradients")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--strict", action="store_true", help="refuse to start on a busy machine")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/bench_gradients[.quick].json"
    )
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "WIDTH", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if any(p not in PARTS for p in parts):
        parser.error(f"--parts takes names from {', '.join(PARTS)}, got {args.parts!r}")
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 5 and not args.quick:
        parser.error("--repeats must be at least 5 (medians of fewer runs are for --quick only)")
    from deepfeat import tune_allocator

    tuned = tune_allocator()  # as the command line does; the same for every method and process
    if args.child:
        variant, width, n = args.child
        with pinned_threads(args.threads):
            print(json.dumps(kernel_child(variant, width, int(n), args.child_out)))
        return 0
    explicit_mib = args.explicit_mib or (128.0 if args.quick else 2048.0)
    targets = (256,) if args.quick else TARGET_N
    with pinned_threads(args.threads) as threads, LoadGuard(strict=args.strict) as guard:
        info = machine(allocator_tuned=str(tuned), threads=str(threads))
        extraction, widths, gemm, top = [], [], None, {"skipped": "not in --parts"}
        if "extraction" in parts:
            extraction = part_a(8 if args.quick else 64, [8] if args.quick else [8, 32], repeats)
        if "kernel" in parts:
            gemm = gemm_rate(repeats)
            print(f"(b) float32 matmul at {gemm['flops'] / 1e9:.0f} GFLOP/s", flush=True)
            widths = [kernel_width(w, explicit_mib, targets, repeats, threads, gemm["flops"]) for w in WIDTHS]
        if "headline" in parts:  # --quick: at N = 256, the code path only
            n = 256 if args.quick else HEADLINE[1]
            logits = [w for w in widths if w["width"] == HEADLINE[0]]
            top = headline(threads, n, logits[0]["at_n"].get(str(n)) if logits else None, repeats)
    report = {
        "benchmark": "bench_gradients",
        "quick": args.quick,
        "protocol": {
            "repeats": repeats,
            "timing": "interleaved after one warm-up round; medians with min, max and spread = "
            "(max - min) / median",
            "extraction": "deepfeat.features.extract in memory (workers=1), forward-only vs gradient "
            "factors vs gradient factors with baselines and forward features",
            "kernel": "deepfeat.kernels.factored_kernel (normalize='none') vs einsum-materialised dE/dW "
            "and one Gram product; measured at measured_n (explicit gradients within explicit_mib), "
            "larger N (at_n) from the models in each width's 'models' (explicit: a lower bound); memory: "
            "one run per variant in a "
            "fresh process at the largest measured N",
            "explicit_mib": explicit_mib,
        },
        "machine": info,
        "load": guard.to_dict(),
        "extraction": extraction,
        "gemm": gemm,
        "kernel": widths,
        "headline": top,
    }
    out = args.out or RESULTS / ("bench_gradients.quick.json" if args.quick else "bench_gradients.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    print(f"wrote {out}")
    if not guard.quiet:
        print(f"measured under load (load average {guard.before} -> {guard.after}): flagged quiet: false")
    checked = [*extraction, *widths] + ([top] if "agree" in top else [])
    if not all(c["agree"] for c in checked):
        print("the compared methods disagree: see max_relative_difference in the JSON", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
