"""What glibc's allocator thresholds and channels-last memory layout do to CPU inference.

EfficientNet-Lite0 (the bundled weights), a bare forward pass in inference mode on random batches of
32 at 224x224, images/s, in four settings: the allocator as the process starts or tuned
(``deepfeat.tune_allocator()``, which the command line applies), each with the input and the
network in contiguous or channels-last layout. The allocator setting is per process and cannot be
undone inside one, so every measurement is a child process: one warm-up batch, then the median of
``--batches`` timed batches. The four settings are interleaved, each round starting with the next
one, and the medians over ``--rounds`` rounds are reported with their spread; torch's threads are the
same in every child; the load average before and after and the share of the cores other processes
used are recorded (``quiet``).

Writes benchmarks/results/bench_allocator.json.
Usage: python benchmarks/bench_allocator.py [--rounds 5] [--batches 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import machine
from _timing import LoadGuard, cores, rotated, summary

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {
    "untuned": {"tuned": False, "channels_last": False},
    "untuned, channels-last": {"tuned": False, "channels_last": True},
    "tuned": {"tuned": True, "channels_last": False},
    "tuned, channels-last": {"tuned": True, "channels_last": True},
}
CHILD = """
import json, statistics, sys, time
import torch
tuned, channels_last, threads, batches = json.loads(sys.argv[1])
torch.set_num_threads(threads)
from deepfeat import tune_allocator
if tuned:
    tune_allocator()
from deepfeat.backbones import load_backbone
model = load_backbone("efficientnet_lite0").module
x = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))
if channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
times = []
with torch.inference_mode():
    for i in range(batches + 1):
        start = time.perf_counter()
        model(x)
        if i:
            times.append(time.perf_counter() - start)
print(json.dumps({"seconds_per_batch": statistics.median(times)}))
"""


def measure(setting: dict, threads: int, batches: int) -> float:
    """Images/s of one child process in ``setting``."""
    args = json.dumps([setting["tuned"], setting["channels_last"], threads, batches])
    done = subprocess.run(
        [sys.executable, "-c", CHILD, args], capture_output=True, text=True, check=True, env=None
    )
    return 32 / json.loads(done.stdout.strip().splitlines()[-1])["seconds_per_batch"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (children per setting)")
    parser.add_argument("--batches", type=int, default=5, help="timed batches per child")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_allocator.json")
    args = parser.parse_args()
    threads = args.threads or cores()
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with LoadGuard(strict=True) as load:
        for r in range(args.rounds):
            for name in rotated(list(SETTINGS), r):
                time.sleep(0.25)
                rates[name].append(measure(SETTINGS[name], threads, args.batches))
                print(f"round {r + 1} {name:24s} {rates[name][-1]:6.1f} img/s", flush=True)
    images_per_second = {name: summary(v, digits=2) for name, v in rates.items()}
    med = {name: statistics.median(v) for name, v in rates.items()}
    result = {
        "benchmark": "bench_allocator",
        "setup": {
            "network": "efficientnet_lite0 (bundled weights), bare forward, inference mode",
            "batch": "32 random images at 224x224",
            "threads": threads,
            "rounds": args.rounds,
            "timed_batches_per_child": args.batches,
        },
        "images_per_second": images_per_second,
        "ratios": {
            f"{a} / {b}": round(med[a] / med[b], 3)
            for a, b in (
                ("tuned", "untuned"),
                ("tuned, channels-last", "untuned, channels-last"),
                ("untuned, channels-last", "untuned"),
                ("tuned, channels-last", "tuned"),
                ("tuned, channels-last", "untuned"),
            )
        },
        "load": {
            "load_before": load.before,
            "load_after": load.after,
            "others_cpu_fraction": load.others_fraction,
            "steal_fraction": load.steal_fraction,
            "quiet": load.quiet,
        },
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for name, value in result["ratios"].items():
        print(f"{name:45s} {value:.2f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
