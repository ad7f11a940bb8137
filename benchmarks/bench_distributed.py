"""Distributed extraction: 2 local Dask workers of 1 thread each vs one process with 2 threads.

(a) Throughput: images/s of ``extract(..., cluster=client)`` on a started cluster (workers warm: one
    untimed extraction first) vs ``extract(...)`` in this process with 2 torch threads and 2 decoding
    threads (the strongest single-process setting on 2 cores), interleaved, each timed run into a fresh
    store. Target: the cluster reaches >= 0.9x the single process.
(b) The store: the cluster's files are compared byte for byte with a single-process store written
    with 1 torch thread (the workers' count; expected identical, each entry's environment.json aside:
    it records the completing run's time and threads), and the features with the 2-thread store (a
    reduction split over 2 threads rounds differently: the largest difference is reported).
(c) Start-up, on 5 fresh clusters in turn (medians with their spread): seconds until 2 workers are
    ready, and the first extraction on the fresh workers (they import torch and deepfeat and receive
    the model).
(d) Peak resident memory of each worker for two dataset sizes (a fresh 2-worker cluster each time):
    flat in the number of images when the rows go to the driver batch by batch.

Data: JPEG photos (hymenoptera's when ../shared/datasets is present, else scikit-image photos), 224 x 224
EfficientNet-Lite0 (bundled weights), layers stage6, head, pool average-pooled, batch 16.

Writes benchmarks/results/bench_distributed.json. Usage:
    python benchmarks/bench_distributed.py [--images 96] [--repeats 5] [--startups 5]
        [--memory-sizes 32,128] [--phases throughput,store,memory]
Quiet rerun (the JSON flags a loaded machine): run it alone, e.g. with --images 256 --repeats 5.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from _timing import LoadGuard, earlier_results, interleaved, summary
from bench_extract import make_jpegs

from deepfeat._runtime import tune_allocator
from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import dataset_from_paths
from deepfeat.features.activations import LayerActivations
from deepfeat.features.distributed import connect
from deepfeat.features.pipeline import extract

RESULTS = Path(__file__).resolve().parent / "results"
LAYERS = ["stage6", "head", "pool"]
BATCH = 16


def store_bytes(root: Path) -> dict[str, bytes]:
    """Every file of a store but its locks and each entry's environment.json (the environment that
    completed the entry: its time, the driver's threads and command line differ by design), as
    tests/features/test_distributed.py compares stores."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("lock", "environment.json")
    }


def process_cpu() -> float:
    """User plus system CPU seconds of the calling process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def features_of(root: Path) -> dict[str, np.ndarray]:
    return {p.parent.name: np.load(p) for p in sorted(root.glob("entries/*/features.npy"))}


def worker_peak_mb(client) -> list[float]:
    """Peak resident memory of each worker process since it started (ru_maxrss, KiB on Linux)."""
    peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return [round(v / 1024, 1) for v in peaks.values()]


def save(out: dict) -> None:
    """Write what is measured so far (a run cut short still leaves its first phases)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_distributed.json").write_text(json.dumps(out, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--startups", type=int, default=5, help="fresh clusters timed in phase (c)")
    parser.add_argument("--memory-sizes", default="32,128")
    parser.add_argument(
        "--phases",
        default="throughput,store,memory",
        help="what to measure (default all; throughput and store run together); a subset updates the "
        "existing JSON, keeping its other phases",
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.startups < 1:
        parser.error(f"--repeats and --startups must be at least 1 (got {args.repeats}, {args.startups})")
    phases = set(args.phases.split(","))
    sizes = [int(s) for s in args.memory_sizes.split(",")]
    tune_allocator()  # as the command line does; the workers follow the driver's setting
    tmp = Path(tempfile.mkdtemp(prefix="deepfeat-bench-dist-"))
    paths = make_jpegs(tmp / "photos", max([args.images, *sizes]))
    data = dataset_from_paths(paths[: args.images])
    warm = dataset_from_paths(paths[:BATCH])
    backbone = load_backbone("efficientnet_lite0")
    methods = [LayerActivations(LAYERS, "avg")]
    out = {
        "benchmark": "bench_distributed",
        "machine": machine(),
        "data": {
            "images": args.images,
            "source": "hymenoptera" if "shared" in str(paths[0].resolve()) else "skimage",
            "input": "224x224 (backbone preprocessing)",
            "layers": LAYERS,
            "batch_size": BATCH,
        },
    }
    if phases != {"throughput", "store", "memory"}:
        out = {**earlier_results(RESULTS / "bench_distributed.json", "load_of_earlier_phases"), **out}
    out["note"] = "partial: the run was cut short"
    with LoadGuard() as guard:
        if phases & {"throughput", "store"}:
            run_throughput_and_store(out, args, tmp, data, warm, backbone, methods)
        if "memory" in phases:
            # fresh workers for each size (a restart of warm ones can time out on a loaded machine)
            memory = {}
            for n in sizes:
                conn = connect("local:2")
                extract_on(conn.client, dataset_from_paths(paths[:n]), backbone, methods, tmp / f"mem-{n}")
                memory[str(n)] = worker_peak_mb(conn.client)
                conn.close()
                out["worker_peak_rss_mb"] = memory
                save(out)
    out["load"] = guard.to_dict()
    out["note"] = (
        "a quiet machine (see load)"
        if out["load"].get("quiet")
        else "taken on a loaded machine (see load): throughput ratios are indicative only; rerun alone"
    )
    save(out)
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {k: out.get(k) for k in ("startup", "throughput", "store", "worker_peak_rss_mb", "load")},
            indent=1,
            default=str,
        )
    )


def extract_on(client, ds, backbone, methods, store: Path):
    """``extract`` of ``ds`` into ``store`` on the cluster ``client`` drives, as every phase runs it."""
    return extract(ds, backbone, methods, store=store, progress=False, batch_size=BATCH, cluster=client)


def start_up(out, args, tmp, warm, backbone, methods):
    """Phase (c), on ``args.startups`` fresh clusters one after the other: seconds until 2 workers are
    ready, then the first extraction on them. Returns the last cluster, warm, for the phases after."""
    ready, first = [], []
    for i in range(args.startups):
        start = time.perf_counter()
        conn = connect("local:2")
        ready.append(time.perf_counter() - start)
        t = time.perf_counter()
        extract_on(conn.client, warm, backbone, methods, tmp / f"warm-cluster-{i}")
        first.append(time.perf_counter() - t)
        out["startup"] = {
            "clusters_started": len(ready),
            "cluster_ready_s": summary(ready, 2),
            "first_extraction_s": summary(first, 2),
            "first_extraction_images": len(warm),
        }
        save(out)
        if i < args.startups - 1:
            conn.close()
    return conn


def run_throughput_and_store(out, args, tmp, data, warm, backbone, methods) -> None:
    """Phases (a)-(c): start-up, throughput against one process, the store compared."""
    conn = start_up(out, args, tmp, warm, backbone, methods)
    client = conn.client
    torch.set_num_threads(2)
    extract(warm, backbone, methods, store=tmp / "warm-local", progress=False, batch_size=BATCH)
    runs = {"n": 0}
    cpu: dict[str, list[float]] = {"one_process_2_threads": [], "cluster_2_workers_1_thread": []}

    def run(cluster, threads):
        name = "one_process_2_threads" if cluster is None else "cluster_2_workers_1_thread"

        def fn():
            runs["n"] += 1
            torch.set_num_threads(threads)
            store = tmp / f"store-{runs['n']}"
            before = process_cpu() + (0.0 if cluster is None else sum(cluster.run(process_cpu).values()))
            res = extract(
                data,
                backbone,
                methods,
                store=store,
                progress=False,
                batch_size=BATCH,
                workers=2,
                cluster=cluster,
            )
            after = process_cpu() + (0.0 if cluster is None else sum(cluster.run(process_cpu).values()))
            cpu[name].append(after - before)
            shutil.rmtree(store)
            return res.n_forward

        return fn

    timings, _ = interleaved(
        {"one_process_2_threads": run(None, 2), "cluster_2_workers_1_thread": run(client, 1)},
        repeats=args.repeats,
        warmup=0,
    )
    speed = {k: args.images / v["median"] for k, v in timings.items()}
    out["throughput"] = {
        "images_per_second": speed,
        "seconds": timings,
        "cluster_over_single": speed["cluster_2_workers_1_thread"] / speed["one_process_2_threads"],
        # CPU seconds per run (the driver's plus every worker's), medians
        "cpu_seconds": {k: statistics.median(v) for k, v in cpu.items()},
        "target": 0.9,
    }
    save(out)
    torch.set_num_threads(1)
    extract(data, backbone, methods, store=tmp / "one-thread", progress=False, batch_size=BATCH)
    torch.set_num_threads(2)
    extract(data, backbone, methods, store=tmp / "two-threads", progress=False, batch_size=BATCH)
    extract_on(client, data, backbone, methods, tmp / "cluster")
    cluster_files, one_thread = store_bytes(tmp / "cluster"), store_bytes(tmp / "one-thread")
    two = features_of(tmp / "two-threads")
    clu = features_of(tmp / "cluster")
    out["store"] = {
        "identical_to_one_process_1_thread": cluster_files == one_thread,
        "files_compared": len(one_thread),
        "max_abs_diff_vs_one_process_2_threads": {k: float(np.abs(clu[k] - two[k]).max()) for k in two},
        "max_abs_value": {k: float(np.abs(two[k]).max()) for k in two},
    }
    save(out)
    conn.close()


if __name__ == "__main__":
    sys.exit(main())
